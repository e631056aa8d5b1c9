"""What the study page and the README's headline block share: model order, row selections, table
cells, links and plot paths.

:mod:`benchmarks.study_render` (the page) and :mod:`benchmarks.study_readme` (the README block)
both build on these, so the two show the same numbers in the same form.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.study_results import ROOT
from benchmarks.study_stats import Summary, Unit, grouped, num, paired_for

MODEL_ORDER = (
    "cube",
    "no_lattice",
    "linear",
    "mlp",
    "cube_0_steps",
    "ridge",
    "identity",
    "mean_answer",
    "finetuned_teacher",
)
HEADLINE_VARIANTS = ("default", "finetune")
RENDER_COMMAND = "python -m benchmarks.study --render-only"


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def ordered(models: Iterable[str]) -> list[str]:
    """Model names in :data:`MODEL_ORDER`, unknown ones after it, sorted."""
    known = set(models)
    return [m for m in MODEL_ORDER if m in known] + sorted(known - set(MODEL_ORDER))


def summary_cells(s: Summary) -> list[str]:
    """Test MRR, its 95% interval, R@1, params, train seconds, seeds: as table cells."""
    return [
        num(s.mrr),
        f"[{num(s.lo)}, {num(s.hi)}]",
        num(s.r1),
        num(s.params, ",.0f"),
        num(s.seconds, ".1f"),
        str(s.n),
    ]


def link(target: Path, page: Path) -> str:
    """``target`` relative to the directory of the markdown file ``page``."""
    return os.path.relpath(target, page.parent).replace(os.sep, "/")


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it, else its file name."""
    where = path.resolve()
    return (where.relative_to(ROOT) if where.is_relative_to(ROOT) else Path(path.name)).as_posix()


def corpus_models(units: dict[Unit, list[dict[str, Any]]]) -> list[str]:
    """Every model any run of the corpus reported, in :data:`MODEL_ORDER`."""
    return ordered({m for rs in units.values() for r in rs for m in r["report"].get("models", {})})


def corpus_pairs(units: dict[Unit, list[dict[str, Any]]], models: Iterable[str]) -> dict:
    """Cube minus each other model of ``models`` (name -> :class:`Paired`), where both ran."""
    return {r: p for r in models if r != "cube" and (p := paired_for(units, r)) is not None}


def curve_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per corpus with at least two train sizes: its learning-curve rows (default variants)."""
    out = {}
    for corpus in grouped(rows, lambda r: r.get("variant") in HEADLINE_VARIANTS):
        rs = [r for r in rows if r["corpus"] == corpus and r.get("variant") in HEADLINE_VARIANTS]
        if len({r["train_size"] for r in rs}) >= 2:
            out[corpus] = rs
    return out


def curve_png(plots: Path, corpus: str) -> Path:
    return plots / f"learning_curve_{corpus}.png"
