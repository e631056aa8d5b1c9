"""The bodies of ``cellcube data import | expand | inspect`` (argument parsing is in
:mod:`cellcube.cli.main`).

Each command reads its source through :func:`load_source` (a file or directory through the reader
stack, :func:`cellcube.data.read_path`, with the config's ``data.*`` keys, or a built-in corpus),
embeds through the configured teacher and cache with a progress bar, and writes its output
atomically (:mod:`cellcube.io`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellcube.config import Config
from cellcube.data import (
    BUILTIN_CORPORA,
    ImportReport,
    QAPair,
    fold_context,
    load_builtin,
    pair_to_record,
    read_path,
)
from cellcube.data.expand import ExpandOptions
from cellcube.errors import CellcubeError
from cellcube.io import atomic_open, write_json

__all__ = [
    "DataCommand",
    "data_command",
    "expand_data",
    "import_data",
    "inspect_data",
    "load_source",
]

DataCommand = Literal["import", "expand", "inspect"]


def load_source(source: str, cfg: Config) -> tuple[list[QAPair], ImportReport | None]:
    """Pairs of ``source`` and the read's report (None for a built-in corpus).

    ``source`` is a built-in corpus name (when no such path exists), else a file or directory
    read with the config's ``data`` section (fields, ``skip_invalid``, ``context_turns``); the
    report's summary and first skips are printed. Conversation context is not folded.
    """
    if source in BUILTIN_CORPORA and not Path(source).exists():
        return load_builtin(source, chitchat_turns=cfg.data.chitchat_turns), None
    pairs, report = read_path(source, cfg.data)
    print(f"import: {report.summary()}")
    for skip in report.skipped[:10]:
        print(f"  skipped {skip.message}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more")
    return pairs, report


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise CellcubeError(f"{path}: --out must be a .jsonl file")
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


@contextmanager
def _embedder(cfg: Config) -> Iterator[Callable[[list[str]], np.ndarray]]:
    """``embed(texts) -> array`` through the configured teacher and cache, closed on exit."""
    from cellcube.embed.encode import embed
    from cellcube.embed.teachers import load_teacher

    teacher = load_teacher(cfg.teacher)  # loaded once, on the first cache miss
    yield lambda texts: embed(texts, teacher, cfg.cache, progress=True)


def import_data(source: str, out: Path, cfg: Config) -> None:
    """``cellcube data import``: ``source``'s pairs as one JSONL file ``out`` (every field, see
    :func:`cellcube.data.pair_to_record`), and the read's report beside it
    (``<out>.report.json``)."""
    pairs, report = load_source(source, cfg)
    _write_jsonl(out, [pair_to_record(p) for p in pairs])
    if report is not None:
        write_json(out.with_suffix(".report.json"), report.to_dict())
    print(f"wrote {len(pairs)} pairs to {out}")


def expand_data(source: str, out: Path, cfg: Config, options: ExpandOptions) -> None:
    """``cellcube data expand``: ``source``'s pairs with teacher-selected variants and quality
    scores (:func:`cellcube.data.expand.expand_pairs`) as the JSONL file ``out``."""
    from cellcube.data.expand import expand_pairs

    pairs = fold_context(load_source(source, cfg)[0])
    with _embedder(cfg) as embed:
        records, report = expand_pairs(pairs, embed, options)
    _write_jsonl(out, records)
    print(f"expand: {report.summary()}")
    print(f"wrote {len(records)} pairs to {out}")


def inspect_data(source: str, out: Path, cfg: Config, near_threshold: float = 0.95) -> None:
    """``cellcube data inspect``: counts, plots, duplicates and the identity baseline of
    ``source`` (:mod:`cellcube.data.inspect`) into the directory ``out``; prints the summary."""
    from cellcube.data.inspect import inspect_pairs, write_inspection

    pairs = fold_context(load_source(source, cfg)[0])
    with _embedder(cfg) as embed:
        summary = inspect_pairs(pairs, embed, near_threshold=near_threshold)
    written = write_inspection(summary, out, source)
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {', '.join(p.name for p in written)} to {out}")


def data_command(
    command: DataCommand,
    source: str,
    out: Path,
    cfg: Config,
    *,
    options: ExpandOptions | None = None,
    near_threshold: float = 0.95,
) -> None:
    """Run ``cellcube data <command>``; ``options`` apply to ``expand`` (defaults when None),
    ``near_threshold`` to ``inspect``."""
    if command == "import":
        import_data(source, out, cfg)
    elif command == "expand":
        expand_data(source, out, cfg, options or ExpandOptions())
    else:
        inspect_data(source, out, cfg, near_threshold)
