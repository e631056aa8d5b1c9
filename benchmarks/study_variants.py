"""The study page's section for plan ``variants`` (issue 16): the cube's variants chosen on
validation, their paired differences with ``no_lattice``, ``linear``, ``mlp`` and the default
cube, anytime inference (MRR against the steps run) and self-estimated confidence.

Every number comes from the results rows alone (grouped by :mod:`benchmarks.study_groups`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.study_groups import (
    COLOURS,
    RIVALS,
    Groups,
    across,
    cube_value,
    diff_cell,
    mean_of_known,
    plan_groups,
    within,
)
from benchmarks.study_plans import large_variants, model_variants
from benchmarks.study_stats import Unit, num, paired
from benchmarks.study_tables import link, table
from cellcube.io import atomic_open

__all__ = ["large_section", "steps_png", "variants_section"]


def _choice_table(groups: Groups, names: list[str]) -> list[str]:
    """Validation MRR of each variant's cube, mean over the corpora where every variant ran (on
    the seeds all of them ran); the best in bold."""
    complete = {
        c: set.intersection(*(set(vs[n]) for n in names))
        for c, vs in groups.items()
        if all(n in vs for n in names)
    }
    complete = {c: us for c, us in complete.items() if us}
    if not complete:
        return []
    scored = []
    for n in names:
        per = {
            c: mean_of_known([cube_value("val_mrr")(groups[c][n][u]) for u in us])
            for c, us in complete.items()
        }
        val = mean_of_known(list(per.values()))
        test = mean_of_known(
            [
                mean_of_known([cube_value("mrr")(groups[c][n][u]) for u in us])
                for c, us in complete.items()
            ]
        )
        scored.append((-(val or 0.0), n, val, per, test))
    scored.sort(key=lambda s: (s[0], s[1]))
    body = [
        [f"**{n}**" if i == 0 else n, num(val), *[num(per[c]) for c in complete], num(test)]
        for i, (_, n, val, per, test) in enumerate(scored)
    ]
    seeds = ", ".join(f"{c}: {len(us)}" for c, us in complete.items())
    head = ["variant", "val MRR (mean)", *[f"val {c}" for c in complete], "test MRR (mean)"]
    return [
        "Chosen on validation: the cube's validation MRR, mean over corpora of the mean over the "
        f"seeds every variant ran (seeds: {seeds}); the best in bold; test MRR only for the "
        "record.",
        "",
        *table(head, body),
        "",
    ]


def _corpus_table(corpus: str, variants: dict[str, dict[Unit, dict[str, Any]]], names) -> list[str]:
    default = variants.get("default", {})
    body = []
    for n in names:
        units = variants.get(n)
        if not units:
            continue
        rows = list(units.values())
        body.append(
            [
                n,
                num(mean_of_known([cube_value("val_mrr")(r) for r in rows])),
                num(mean_of_known([cube_value("mrr")(r) for r in rows])),
                *[diff_cell(within(units, "cube", rival)) for rival in RIVALS],
                "-" if n == "default" else diff_cell(across(units, default, cube_value("mrr"))),
                num(mean_of_known([cube_value("params")(r) for r in rows]), ",.0f"),
            ]
        )
    head = ["variant", "cube val MRR", "cube test MRR", *[f"cube − `{r}`" for r in RIVALS]]
    return [f"#### {corpus}", "", *table([*head, "cube − default cube", "params"], body), ""]


def _steps_rows(groups: Groups) -> dict[str, dict[str, dict[int, tuple]]]:
    """corpus -> variant -> T -> (mean test MRR, mean val MRR) of ``confidence.steps``."""
    out: dict[str, dict[str, dict[int, tuple]]] = defaultdict(dict)
    for corpus, variants in groups.items():
        for n, units in variants.items():
            curves = [r["report"].get("confidence", {}).get("steps") for r in units.values()]
            curves = [c for c in curves if c]
            if not curves:
                continue
            ts = sorted({p["steps"] for c in curves for p in c})
            out[corpus][n] = {
                t: (
                    mean_of_known([p["mrr"] for c in curves for p in c if p["steps"] == t]),
                    mean_of_known([p["val_mrr"] for c in curves for p in c if p["steps"] == t]),
                )
                for t in ts
            }
    return dict(out)


def steps_png(plots: Path) -> Path:
    return plots / "variants_steps.png"


def _plot_steps(curves: dict[str, dict[str, dict[int, tuple]]], png: Path) -> None:
    """Test MRR against the steps the cube runs at inference, one panel per corpus."""
    fig = Figure(figsize=(3.2 * len(curves), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (corpus, variants) in enumerate(curves.items(), 1):
        ax = fig.add_subplot(1, len(curves), i)
        for j, (n, points) in enumerate(sorted(variants.items())):
            ts = sorted(points)
            ax.plot(ts, [points[t][0] for t in ts], marker="o", ms=3, label=n, color=COLOURS[j])
        ax.axvspan(3, 8, color="#cccccc", alpha=0.3, linewidth=0)
        ax.set_title(corpus, fontsize=9)
        ax.set_xlabel("steps T at inference", fontsize=8)
        ax.grid(True, alpha=0.3)
        if i == 1:
            ax.set_ylabel("test MRR")
            ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})


def _steps_section(groups: Groups, plots: Path, md: Path) -> list[str]:
    curves = _steps_rows(groups)
    if not curves:
        return []
    png = steps_png(plots)
    _plot_steps(curves, png)
    lines = [
        "### Anytime inference: MRR against the steps run",
        "",
        f"![test MRR against inference steps]({link(png, md)})",
        "",
        "The trained cube read after T steps (`eval.steps_curve`): test MRR (validation MRR), "
        "mean over seeds. The anytime variants trained at T in 3..8 (grey band); the others at "
        "T = 4. Under `base: linear`, T = 0 is the linear map the cube was trained on top of.",
        "",
    ]
    for corpus, variants in curves.items():
        ts = sorted({t for points in variants.values() for t in points})
        body = [
            [n, *[f"{num(p[t][0])} ({num(p[t][1])})" if t in p else "-" for t in ts]]
            for n, p in sorted(variants.items())
        ]
        lines += [f"#### {corpus}", "", *table(["variant", *[f"T={t}" for t in ts]], body), ""]
    return lines


def _selective(row: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = row["report"].get("confidence", {})
    for key in path:
        node = (node or {}).get(key)
    return node or {}


def _auroc(*path: str) -> Callable[[dict[str, Any]], float | None]:
    """A row's AUROC at ``confidence.<path>.auroc`` (None when missing)."""
    return lambda row: _selective(row, *path).get("auroc")


def _confidence_row(corpus: str, name: str, units: dict[Unit, dict[str, Any]]) -> list[str]:
    rows = list(units.values())

    def mean(value: Callable[[dict[str, Any]], float | None]) -> str:
        return num(mean_of_known([value(r) for r in rows]))

    def half(*path: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda row: _selective(row, *path).get("r1_confident_half")

    spread, linear = _auroc("passes", "spread"), _auroc("margin", "linear")
    diffs = [spread(r) - linear(r) for r in rows if spread(r) is not None and linear(r)]
    return [
        corpus,
        name,
        str(_selective(rows[0], "passes").get("k")),
        mean(cube_value("mrr")),
        mean(lambda r: _selective(r, "passes").get("mrr")),
        mean(spread),
        mean(_auroc("passes", "margin")),
        *[mean(_auroc("margin", m)) for m in RIVALS],
        diff_cell(paired(diffs) if diffs else None),
        mean(half("passes", "spread")),
        mean(half("margin", "linear")),
        mean(lambda r: _selective(r, "passes", "spread").get("r1_all")),
    ]


def _confidence_section(groups: Groups) -> list[str]:
    body = []
    for corpus, variants in groups.items():
        for n, units in sorted(variants.items()):
            with_passes = {u: r for u, r in units.items() if _selective(r, "passes")}
            if with_passes:
                body.append(_confidence_row(corpus, n, with_passes))
    if not body:
        return []
    head = [
        "corpus",
        "variant",
        "K",
        "cube MRR",
        "K-pass MRR",
        "AUROC spread",
        "AUROC cube margin",
        *[f"AUROC `{m}` margin" for m in RIVALS],
        "spread − `linear` margin",
        "R@1 confident half (spread)",
        "R@1 confident half (`linear` margin)",
        "R@1 all (K-pass)",
    ]
    return [
        "### Self-estimated confidence",
        "",
        "Does the spread of K stochastic passes (cells firing at rate 0.5) predict a top-1 miss? "
        'AUROC of each confidence signal for "top-1 is right" (0.5: chance), beside every '
        "plain adapter's own signal, its top-1 minus top-2 cosine margin; R@1 on the more "
        "confident half of the test questions against R@1 on all. `cube MRR`: the expected "
        "update (one deterministic pass); `K-pass MRR`: the mean of the K passes. Means over "
        "seeds; the paired difference (SE over seeds) is the spread's AUROC minus the linear "
        "adapter's margin AUROC in the same run.",
        "",
        *table(head, body),
        "",
    ]


def _ran(rows: list[dict[str, Any]], plan: str, variants: list) -> tuple[Groups, list[str]]:
    """``plan``'s rows grouped (:func:`plan_groups`), and the names of its variants that ran."""
    groups = plan_groups(rows, plan, variants)
    return groups, [v.name for v in variants if any(v.name in vs for vs in groups.values())]


def variants_section(rows: list[dict[str, Any]], plots: Path, md: Path) -> list[str]:
    """Plan ``variants``: choice on validation, per-corpus paired tables, the steps curve and
    the confidence table."""
    groups, names = _ran(rows, "variants", model_variants())
    if len(names) < 2:
        return []
    lines = [
        "## Cube variants of issue 16 (plan `variants`)",
        "",
        "`refine_input` / `refine_base`: the cube added to a residual linear map (`cube.base: "
        "linear`), reading the question or the map's output; `clamp`: the input face rewritten "
        "after every step; `anytime`: trained at T drawn from 3..8 with a loss at every step, "
        "cells firing at rate 0.5, 8 stochastic passes at inference (`anytime_clamp`: clamped "
        "too). Every run trains `no_lattice`, `linear` and `mlp` (sized by the cube) on the "
        "same split with the same budget and early stopping.",
        "",
        *_choice_table(groups, names),
        "Per corpus: cube minus each baseline within the same run, and cube minus the default "
        "cube (the same seed's `default` run): mean ± SE (runs the difference is positive / "
        "runs); SE over seeds, with one seed the run's paired bootstrap (none across runs).",
        "",
    ]
    for corpus, vs in groups.items():
        lines += _corpus_table(corpus, vs, names)
    return [
        *lines,
        *_steps_section(groups, plots, md),
        *_confidence_section(groups),
        "Robustness to corrupted questions and the denoising autoencoder (issue 16, items 4 and "
        "5) have their own results file and page: `python -m benchmarks.robustness "
        f"--render-only` writes [robustness.md]({link(md.parent / 'robustness.md', md)}).",
        "",
    ]


def large_section(rows: list[dict[str, Any]]) -> list[str]:
    """Plan ``large``: more steps and the largest lattice on the full chitchat corpus, each run
    with its baselines."""
    groups, names = _ran(rows, "large", large_variants())
    if not names:
        return []
    lines = [
        "## More steps and the largest lattice on full chitchat (plan `large`)",
        "",
        "The full chitchat corpus (16,738 train pairs), seed 0: `T12` is the default lattice at "
        "12 steps, `T8_8x8x8_c32` the largest lattice, 8x8x8 cells of 32 channels at 8 steps (the "
        "fewest that reach the output face; its `mlp` is sized by it). Cube minus each baseline "
        "of the same run, ± the run's paired-bootstrap SE (runs the difference is positive / "
        "runs); no SE across runs.",
        "",
    ]
    for corpus, vs in groups.items():
        lines += _corpus_table(corpus, vs, names)
    return lines
