"""The bodies of ``cellcube data import | expand | inspect`` (argument parsing is in :mod:`cli`).

Each command reads its input through :func:`load_source` (a file or directory via
:func:`cellcube.data.readers.import_path` with the config's ``data.*`` keys, or a built-in corpus),
embeds through the configured teacher and cache with a progress bar, and writes its output
atomically (:mod:`cellcube.io`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cellcube.config import Config
from cellcube.data.pairs import BUILTIN_CORPORA, QAPair, load_builtin
from cellcube.data.readers import ImportReport, fold_context, import_path
from cellcube.errors import CellcubeError
from cellcube.io import atomic_open

__all__ = ["load_source", "pair_record", "run_data_command"]


def load_source(source: str, cfg: Config) -> tuple[list[QAPair], ImportReport | None]:
    """Pairs of ``source``: a built-in corpus name (when no such path exists), else a file or
    directory read with the config's ``data.question_field/answer_field/skip_invalid/
    context_turns``. Returns the pairs (context not folded) and the import report."""
    if source in BUILTIN_CORPORA and not Path(source).exists():
        return load_builtin(source), None
    d = cfg.data
    return import_path(
        source,
        question_field=d.question_field,
        answer_field=d.answer_field,
        context_turns=d.context_turns,
        skip_invalid=d.skip_invalid,
    )


def pair_record(p: QAPair) -> dict[str, Any]:
    """A pair as a JSONL record: question, answer, origin, and its metadata when set."""
    rec: dict[str, Any] = {"question": p.question, "answer": p.answer, "origin": p.origin}
    for name in ("domain", "variant_of", "split"):
        if getattr(p, name) is not None:
            rec[name] = getattr(p, name)
    if p.context:
        rec["context"] = list(p.context)
    return rec


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise CellcubeError(f"{path}: --out must be a .jsonl file")
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _embedder(cfg: Config) -> tuple[Any, Any]:
    """``(embed(texts) -> array, close())`` through the configured teacher and cache."""
    from cellcube.embed.cache import embed_texts
    from cellcube.embed.encode import make_teacher, open_cache

    teacher, cache = make_teacher(cfg), open_cache(cfg)

    def embed(texts: list[str]) -> np.ndarray:
        return embed_texts(teacher, texts, cache, progress=True)

    def close() -> None:
        if cache is not None:
            cache.close()

    return embed, close


def run_data_command(args: argparse.Namespace, cfg: Config) -> None:
    """Run ``cellcube data <args.data_command>`` with the resolved config."""
    pairs, report = load_source(args.source, cfg)
    if report is not None:
        print(f"import: {report.summary()}")
        for skip in report.skipped[:10]:
            print(f"  skipped {skip.message}")
        if len(report.skipped) > 10:
            print(f"  ... and {len(report.skipped) - 10} more")
    if args.data_command == "import":
        _write_jsonl(args.out, [pair_record(p) for p in pairs])
        if report is not None:
            from cellcube.io import write_json

            write_json(args.out.with_suffix(".report.json"), report.to_dict())
        print(f"wrote {len(pairs)} pairs to {args.out}")
        return
    pairs = fold_context(pairs)
    embed, close = _embedder(cfg)
    try:
        if args.data_command == "expand":
            from cellcube.data.expand import ExpandOptions, expand_pairs

            options = ExpandOptions(
                variants=args.variants,
                min_similarity=args.min_similarity,
                max_similarity=args.max_similarity,
                duplicate_threshold=args.duplicate_threshold,
                min_quality=args.min_quality,
            )
            records, ereport = expand_pairs(pairs, embed, options)
            _write_jsonl(args.out, records)
            print(f"expand: {ereport.summary()}")
            print(f"wrote {len(records)} pairs to {args.out}")
        else:
            from cellcube.data.inspect import inspect_pairs, read_qualities, write_inspection

            qualities = None
            if report is not None and not cfg.data.skip_invalid:
                qualities = read_qualities(Path(args.source), len(pairs))
            summary = inspect_pairs(
                pairs, embed, qualities=qualities, near_threshold=args.near_threshold
            )
            written = write_inspection(summary, args.out, args.source)
            print((args.out / "summary.md").read_text(encoding="utf-8"), end="")
            print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    finally:
        close()
