"""One small real run shared by the tests of the report page and of ``cellcube ask``.

200 chatterbot pairs as a user file, the real MiniLM teacher through a fresh SQLite cache, the
default 4x4x4 cube and every baseline trained for 2 epochs by ``cellcube train``. The run is made
once per test session (in pytest's temporary base directory) by whichever test module asks
first; the tests only read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellcube.cli.main import main
from cellcube.data import load_builtin

N_PAIRS = 200
SETTINGS = [
    "train.epochs=2",
    "train.batch_size=32",
    "train.progress=false",
    "eval.bootstrap=100",
]


def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared run directory, trained on first use."""
    root = tmp_path_factory.getbasetemp() / "cellcube-small-run"
    run = root / "run"
    if not (run / "report.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        data = root / "chat.jsonl"
        pairs = load_builtin("chatterbot")[:N_PAIRS]
        data.write_text(
            "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pairs)
        )
        settings = [f"data.path={data}", f"cache.path={root / 'cache.sqlite'}", *SETTINGS]
        args = ["train", "--out", str(run), "--overwrite"]
        assert main([*args, *[a for s in settings for a in ("--set", s)]]) == 0
    return run
