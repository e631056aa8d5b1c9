"""Checkpoints are read with ``weights_only=True``: a malicious pickle is refused, never run.

The payload below creates a marker file when it is unpickled (``open(marker, "w")``), which is
what any code a pickle smuggles in would get to do. Every way cellcube reads a checkpoint
(``load_checkpoint``, ``load_weights``, ``load_heads``, Lightning's ``--resume`` read, and
``cellcube evaluate`` / ``cellcube ask`` on a run directory someone sent you) must raise one
:class:`~cellcube.errors.CheckpointError` line and leave the marker absent. The RNG states that
checkpoints carry are stored as tensors and plain data, and restore the generators exactly.
"""

from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cellcube.cli.main import main
from cellcube.config import load_config
from cellcube.data import load_builtin
from cellcube.errors import CheckpointError
from cellcube.models.baselines import build_model
from cellcube.train.checkpoints import (
    load_checkpoint,
    load_heads,
    load_weights,
    restore_rng_state,
    rng_state,
)
from cellcube.train.fit import fit
from test_pipeline import TINY, _toy_splits


class Payload:
    """Unpickles as ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def write_malicious(path: Path, marker: Path) -> None:
    """A file shaped like a cellcube checkpoint whose pickle would run ``Payload``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    evil = {"state_dict": {}, "cellcube": {"model": "cube"}, "payload": Payload(marker)}
    torch.save(evil, path)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Unpickling the payload the unsafe way does create the marker (so the tests below could
    fail)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()
    marker.unlink()
    write_malicious(tmp_path / "x.ckpt", marker)
    torch.load(tmp_path / "x.ckpt", weights_only=False)["payload"].close()
    assert marker.exists()


@pytest.mark.parametrize("reader", [load_checkpoint, load_heads, lambda p: load_weights(None, p)])
def test_every_reader_refuses_a_malicious_checkpoint(tmp_path: Path, reader) -> None:
    marker, ckpt = tmp_path / "pwned", tmp_path / "best.ckpt"
    write_malicious(ckpt, marker)
    with pytest.raises(CheckpointError) as info:
        reader(ckpt)
    msg = str(info.value)
    assert msg.startswith(f"{ckpt}: refused: ") and "\n" not in msg
    assert not marker.exists()


def test_resume_refuses_a_malicious_last_checkpoint(tmp_path: Path) -> None:
    """Lightning's own checkpoint read (``--resume``) goes through the same safe loader."""
    cfg = load_config(None, TINY)
    train, val = _toy_splits()
    marker = tmp_path / "pwned"
    write_malicious(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        fit(build_model("mlp", 16, cfg), "mlp", cfg, train, val, tmp_path / "run", resume=True)
    assert not marker.exists()


def test_rng_states_are_plain_data_and_restore_the_generators_exactly() -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # numpy now holds a cached gaussian too
    random.gauss(0, 1)
    state = rng_state()
    want = (torch.rand(3), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restore_rng_state(torch.load(buf, weights_only=True))
    got = (torch.rand(3), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])
    assert got[2:] == want[2:]


@pytest.mark.slow
def test_evaluate_and_ask_refuse_a_run_directory_holding_a_malicious_pickle(
    tmp_path: Path, tiny_bert_dir: Path, capsys
) -> None:
    """A run directory someone sent you: its checkpoint is swapped for a malicious pickle."""
    data = tmp_path / "faq.jsonl"
    pairs = load_builtin("zaragoza")[:60]
    data.write_text(
        "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pairs)
    )
    sets = [
        *TINY,
        f"data.path={data}",
        f"cache.path={tmp_path / 'cache.sqlite'}",
        f"teacher.model={tiny_bert_dir}",
        "teacher.kind=transformers",
        "eval.baselines=false",
    ]
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *[a for s in sets for a in ("--set", s)]]) == 0
    ckpt = run / "models" / "cube" / "checkpoints" / "best.ckpt"
    assert load_checkpoint(ckpt)["cellcube"]["model"] == "cube"  # a genuine one loads
    marker = tmp_path / "pwned"
    write_malicious(ckpt, marker)
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["ask", str(run), "How long does a permit take?"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert f"{ckpt}: refused" in err, err
        assert not marker.exists()
