"""The study page's parameter-budget section (plan ``budget``, issue 16) and the learning
curve's verdict on capacity (whether issue 16's token lattice is built).

Every number comes from the results rows alone (grouped by :mod:`benchmarks.study_groups`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from benchmarks.study_groups import (
    COLOURS,
    Groups,
    diff_cell,
    mean_of_known,
    model_of,
    plan_groups,
    within,
)
from benchmarks.study_plans import BUDGET, budget_variants
from benchmarks.study_stats import num
from benchmarks.study_tables import link, table
from cellcube.io import atomic_open

__all__ = ["budget_png", "budget_section", "capacity_paragraph"]


BUDGET_MODELS = ("cube", "mlp", "linear")
PARAM_TICKS = (10_000, 30_000, 100_000, 300_000, 1_000_000)


def budget_png(plots: Path) -> Path:
    return plots / "budget.png"


def _budget_points(groups: Groups) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """corpus -> model -> [(mean params, mean test MRR)] over the budget variants, by params."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for corpus, variants in groups.items():
        per: dict[str, list[tuple[float, float]]] = {}
        for m in BUDGET_MODELS:
            pts = []
            for units in variants.values():
                found = [model_of(r, m) for r in units.values() if model_of(r, m)]
                if found:
                    pts.append(
                        (
                            statistics.fmean(f["params"] for f in found),
                            statistics.fmean(f["mrr"] for f in found),
                        )
                    )
            per[m] = sorted(pts)
        out[corpus] = per
    return out


def _plot_budget(points: dict[str, dict[str, list[tuple[float, float]]]], png: Path) -> None:
    fig = Figure(figsize=(3.6 * len(points), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (corpus, per) in enumerate(points.items(), 1):
        ax = fig.add_subplot(1, len(points), i)
        for j, (m, pts) in enumerate(per.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=m,
                    color=COLOURS[j + 1])  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(PARAM_TICKS, [f"{t // 1000:,}k" for t in PARAM_TICKS])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(corpus, fontsize=9)
        ax.set_xlabel("trainable parameters (that affect the output)", fontsize=8)
        ax.grid(True, alpha=0.3)
        if i == 1:
            ax.set_ylabel("test MRR")
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})


def _matched(variants: dict[str, dict]) -> dict[str, dict]:
    """Each variant's rows on the units (seeds) every variant ran: sizes compared on one split."""
    common = set.intersection(*(set(units) for units in variants.values()))
    return (
        {n: {u: r for u, r in us.items() if u in common} for n, us in variants.items()}
        if common
        else {}
    )


def budget_section(rows: list[dict[str, Any]], plots: Path, md: Path) -> list[str]:
    """Plan ``budget``: MRR against parameters for the cube, the mlp sized by it and the
    low-rank linear adapter (table per corpus and one plot)."""
    variants = budget_variants()
    groups = plan_groups(rows, "budget", variants)
    order = [v.name for v in variants]
    groups = {c: _matched(vs) for c, vs in groups.items() if len(vs) >= 2}
    groups = {c: vs for c, vs in groups.items() if vs}
    if not groups:
        return []
    png = budget_png(plots)
    _plot_budget(_budget_points(groups), png)
    lines = [
        "## Parameter budget (plan `budget`)",
        "",
        f"![test MRR against parameters]({link(png, md)})",
        "",
        "The cube from 1 to 32 channels per cell (4x4x4) and an 8x8x4 lattice; the `mlp` sized "
        "by the cube in the same run; the `linear` adapter at a rank of about the cube's size "
        f"(ranks {', '.join(str(b[3]) for b in BUDGET if b[3])}, full rank beyond). Parameters: "
        "those that affect the output; test MRR mean over the seeds every size ran; "
        "differences within the run, mean ± SE (runs positive / runs).",
        "",
    ]
    head = [
        "variant",
        *[f"{m} params" for m in BUDGET_MODELS],
        *[f"{m} MRR" for m in BUDGET_MODELS],
    ]
    head += ["cube − `mlp`", "cube − `linear`"]
    for corpus, variants_run in groups.items():
        body = []
        for n in order:
            units = variants_run.get(n)
            if not units:
                continue
            rows_ = list(units.values())
            found = {m: [model_of(r, m) for r in rows_ if model_of(r, m)] for m in BUDGET_MODELS}
            body.append(
                [
                    n,
                    *[
                        num(mean_of_known([f["params"] for f in found[m]]), ",.0f")
                        for m in BUDGET_MODELS
                    ],
                    *[num(mean_of_known([f["mrr"] for f in found[m]])) for m in BUDGET_MODELS],
                    diff_cell(within(units, "cube", "mlp")),
                    diff_cell(within(units, "cube", "linear")),
                ]
            )
        lines += [f"### {corpus}", "", *table(head, body), ""]
    return lines


# -- the learning curve's verdict on capacity --------------------------------------------------

ADAPTERS = ("cube", "no_lattice", "linear", "mlp")
CAPACITY_GAIN = 0.01  # MRR the best adapter must gain over the curve for capacity to count


def capacity_paragraph(points: list[tuple[float, str, dict]], mrr: Callable) -> list[str]:
    """One paragraph under a learning curve: how much the best adapter gains from the smallest
    to the largest train size, and how far apart the adapters are at the largest; hence whether
    the token lattice (issue 16, item 7) is built. ``points``: (train pairs, label, units) by
    size; ``mrr(units, model)``: a model's mean test MRR there (None when it did not run)."""
    if len(points) < 2:
        return []
    (n_lo, _, lo), (n_hi, _, hi) = points[0], points[-1]
    best = {n: max((v for m in ADAPTERS if (v := mrr(u, m)) is not None), default=None)
            for n, u in ((n_lo, lo), (n_hi, hi))}  # fmt: skip
    at_hi = {m: v for m in ADAPTERS if (v := mrr(hi, m)) is not None}
    ident = mrr(hi, "identity")
    if best[n_lo] is None or best[n_hi] is None or not at_hi:
        return []
    spread = max(at_hi.values()) - min(at_hi.values())
    listed = ", ".join(f"`{m}` {num(v)}" for m, v in at_hi.items())
    gain = best[n_hi] - best[n_lo]
    verdict = (
        "More data does not turn capacity into accuracy here, so the token lattice (a `tokens` "
        "reshaper seeding the input face with the teacher's token states; issue 16, item 7) is "
        "not built."
        if gain <= CAPACITY_GAIN
        else f"The gain exceeds {CAPACITY_GAIN}: capacity may pay here, and the token lattice "
        "(issue 16, item 7) is worth building."
    )
    return [
        f"From {n_lo:,.0f} to {n_hi:,.0f} train pairs the best adapter's test MRR moves by "
        f"{num(gain, '+.3f')}; at {n_hi:,.0f} pairs the adapters lie within {num(spread)} of "
        f"each other ({listed}; `identity` {num(ident)}). {verdict}",
        "",
    ]
