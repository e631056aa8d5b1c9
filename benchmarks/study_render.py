"""Render the study (``docs/study.md`` and ``docs/study/*.png``) from its results file alone.

Byte-for-byte reproducible: rows are grouped and sorted by their keys, every number has a fixed
format, the markdown carries no date, and the plots are drawn with matplotlib's Agg canvas and
saved without the ``Software`` entry or any timestamp. ``python -m benchmarks.study --render-only``
calls :func:`render`.

What is shown, per corpus (the default config at the full train size; variant ``finetune`` is
the default config plus the fine-tuned teacher):

- every model's mean test MRR over seeds (or seed x fold units) with a 95% interval: a
  t-interval over the seeds, or, with one seed, the run's bootstrap interval over test pairs;
- the paired differences cube minus each baseline (matched by seed and fold): their mean, its
  SE over seeds (with one seed: the run's paired-bootstrap SE) and how many seeds the cube wins;
- one sentence: does the lattice beat ``no_lattice`` and ``linear`` by more than 2 SE?

and the learning curve (test MRR against train size, with its verdict on capacity), the cube
variants (chosen on validation MRR), the learning-rate x weight-decay grid (best setting per
model on validation MRR), and issue 16's variants, anytime inference, confidence and parameter
budget (:mod:`benchmarks.study_variants`).

The same numbers head ``README.md``: :func:`render` also rewrites the block between the markers
``<!-- study:headline:begin -->`` and ``<!-- study:headline:end -->`` (nothing outside them) with
the runs of plan ``small`` (:mod:`benchmarks.study_readme`); the helpers both share are in
:mod:`benchmarks.study_tables`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from benchmarks.study_budget import budget_section, capacity_paragraph
from benchmarks.study_plans import PLANS, TUNE_LRS, TUNE_WDS, TUNED_MODELS, cube_variants
from benchmarks.study_protocol import headline_selection, notes_lines
from benchmarks.study_readme import (
    HEADLINE_BEGIN,
    HEADLINE_END,
    README,
    headline_block,
    splice,
)
from benchmarks.study_results import RESULTS, ROOT, read_results
from benchmarks.study_stats import (
    Paired,
    Unit,
    by_unit,
    grouped,
    matched,
    mean_of,
    metric,
    num,
    one_se_choice,
    sentence,
    summarise,
    variant_means,
)
from benchmarks.study_tables import (
    HEADLINE_VARIANTS,
    MODEL_ORDER,
    RENDER_COMMAND,
    corpus_models,
    corpus_pairs,
    curve_png,
    curve_rows,
    link,
    ordered,
    shown,
    summary_cells,
    table,
)
from benchmarks.study_variants import large_section, variants_section
from cellcube.errors import CellcubeError
from cellcube.io import atomic_open, write_text

# the README block and the shared helpers moved out; their names stay importable from here
__all__ = [
    "COLOURS",
    "CURVE_MODELS",
    "HEADLINE_BEGIN",
    "HEADLINE_END",
    "HEADLINE_VARIANTS",
    "MODEL_ORDER",
    "README",
    "RENDER_COMMAND",
    "corpus_models",
    "corpus_pairs",
    "corpus_section",
    "cube_section",
    "curve_png",
    "curve_rows",
    "curve_section",
    "header",
    "headline_block",
    "link",
    "ordered",
    "plot_curve",
    "render",
    "render_markdown",
    "shown",
    "splice",
    "summary_cells",
    "table",
    "tune_section",
]

CURVE_MODELS = ("cube", "no_lattice", "linear", "mlp", "identity", "finetuned_teacher")
COLOURS = {
    "cube": "#d62728",
    "no_lattice": "#1f77b4",
    "linear": "#2ca02c",
    "mlp": "#9467bd",
    "identity": "#7f7f7f",
    "finetuned_teacher": "#ff7f0e",
}


# -- sections ----------------------------------------------------------------------------------


def corpus_section(corpus: str, units: dict[Unit, list[dict[str, Any]]]) -> list[str]:
    """A corpus's model table, its paired table and its sentence."""
    first = next(iter(units.values()))[0]["report"]
    models = corpus_models(units)
    lines = [
        f"### {corpus}",
        "",
        f"Seed {min(u[0] for u in units)} split: {first.get('n_train', '?')} train, "
        f"{first.get('n_val', '?')} validation, {first.get('n_test', '?')} test pairs, "
        f"{first.get('n_candidates', '?')} candidate answers.",
        "",
    ]
    rows = []
    for m in models:
        s = summarise(units, m)
        if s is None:
            continue
        how = "t over seeds" if s.n > 1 else "bootstrap"
        cells = summary_cells(s)
        rows.append([f"`{m}`", *cells[:2], how, *cells[2:]])
    head = ["model", "test MRR", "95% interval", "interval", "R@1", "params", "train s", "seeds"]
    lines += [*table(head, rows), ""]
    pairs: dict[str, Paired] = corpus_pairs(units, models)
    if pairs:
        rows = [
            [f"`{r}`", num(p.mean, "+.3f"), num(p.se), p.se_from, f"{p.wins}/{p.n}"]
            for r, p in pairs.items()
        ]
        head = ["cube minus", "mean difference (MRR)", "SE", "SE over", "cube wins"]
        lines += [*table(head, rows), ""]
    text = sentence(corpus, pairs)
    return [*lines, text, ""] if text else lines


def curve_section(corpus: str, rows: list[dict[str, Any]], plots: Path, md: Path) -> list[str]:
    """A learning curve: the table and the plot (written to ``plots``)."""
    sizes: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        sizes[r["train_size"]].append(r)
    points = []  # (mean n_train, size label, units)
    for size, rs in sizes.items():
        n_train = statistics.fmean(r["report"].get("n_train", 0) for r in rs)
        points.append((n_train, str(size), by_unit(rs)))
    points.sort(key=lambda p: (p[0], p[1]))
    models = [m for m in CURVE_MODELS if any(summarise(u, m) for _, _, u in points)]
    head = ["train size", "train pairs", *[f"`{m}`" for m in models]]
    body = []
    for n_train, label, units in points:
        cells = []
        for m in models:
            s = summarise(units, m)
            cells.append("-" if s is None else f"{num(s.mrr)} [{num(s.lo)}, {num(s.hi)}]")
        body.append([label, num(n_train, ".0f"), *cells])
    png = curve_png(plots, corpus)
    plot_curve(corpus, points, models, png)
    return [
        f"### {corpus}",
        "",
        f"![test MRR against train size on {corpus}]({link(png, md)})",
        "",
        "Test MRR [95% interval] per train size (`data.max_train`; one fixed test split).",
        "",
        *table(head, body),
        "",
        *capacity_paragraph(points, lambda units, m: getattr(summarise(units, m), "mrr", None)),
    ]


def plot_curve(corpus: str, points: list, models: Sequence[str], png: Path) -> None:
    """Test MRR against train pairs (log x), one line per model with its interval as a band."""
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m in models:
        xs, ys, los, his = [], [], [], []
        for n_train, _, units in points:
            s = summarise(units, m)
            if s is None:
                continue
            xs.append(n_train)
            ys.append(s.mrr)
            los.append(s.mrr if s.lo is None else s.lo)
            his.append(s.mrr if s.hi is None else s.hi)
        colour = COLOURS.get(m, "#000000")
        ax.plot(xs, ys, marker="o", label=m, color=colour)
        ax.fill_between(xs, los, his, color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    sizes = sorted({n_train for n_train, _, _ in points})
    ax.set_xticks(sizes, [f"{int(n):,}" for n in sizes])  # the sizes run, not powers of ten
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("train pairs")
    ax.set_ylabel("test MRR")
    ax.set_title(f"{corpus}: test MRR against train size (95% intervals)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})


def cube_section(rows: list[dict[str, Any]]) -> list[str]:
    """The `cube` plan: lattices x steps, chosen on validation MRR by the one-standard-error rule
    (:func:`~benchmarks.study_stats.one_se_choice`; test beside it)."""
    groups = matched(rows, [v.name for v in cube_variants()])
    names = sorted({v for g in groups.values() for v in g})
    if not names:
        return []
    corpora = list(groups)
    info = {}
    for v in names:
        val, per = variant_means(groups, v, "cube", "val_mrr")
        test, _ = variant_means(groups, v, "cube", "mrr")
        cfg = next(r for g in groups.values() for r in g.get(v, []))
        cube = (cfg.get("config") or {}).get("cube", {})
        params = mean_of(metric(r, "cube", "params") for g in groups.values() for r in g.get(v, []))
        n = sum(len(g.get(v, [])) for g in groups.values())
        info[v] = (val or 0.0, per, test, cube, params, n)
    chosen, gaps = one_se_choice(
        groups,
        {v: i[0] for v, i in info.items()},
        {v: (i[4] or 0.0, i[3].get("steps", 0)) for v, i in info.items()},
    )
    body = []
    for v in sorted(names, key=lambda v: (-info[v][0], v)):
        val, per, test, cube, params, n = info[v]
        gap = gaps[v]
        body.append(
            [
                f"**{v}**" if v == chosen else v,
                "x".join(str(x) for x in cube.get("lattice", [])) or "?",
                str(cube.get("steps", "?")),
                num(val),
                "best" if gap.n and not any((gap.mean, gap.se)) else gap_text(gap),
                *[num(per.get(c)) for c in corpora],
                num(test),
                num(params, ",.0f"),
                str(n),
            ]
        )
    head = [
        "variant",
        "lattice",
        "steps",
        "val MRR (mean)",
        "− best (val)",
        *[f"val {c}" for c in corpora],
        "test MRR (mean)",
        "params",
        "runs",
    ]
    return [
        "## Cube variants (plan `cube`)",
        "",
        "The cube's validation MRR, mean over corpora of the mean over the seeds every variant "
        "ran, and its difference from the best on validation, paired by corpus and seed (mean ± SE "
        "over the pairs). In bold: the choice of the one-standard-error rule, the cheapest "
        "variant (fewest parameters, then fewest steps) within one SE of the best; `default` is "
        "the built-in default. Test MRR only for the record.",
        "",
        *table(head, body),
        "",
    ]


def gap_text(gap: Paired) -> str:
    return f"{num(gap.mean, '+.3f')} ± {num(gap.se)}"


def tune_section(rows: list[dict[str, Any]]) -> list[str]:
    """The `tune` plan: per model, the grid's validation MRR and its best cell."""
    cells = [(f"lr{lr:g}_wd{wd:g}", lr, wd) for lr in TUNE_LRS for wd in TUNE_WDS]
    groups = matched(rows, [c[0] for c in cells])
    present = [c for c in cells if any(c[0] in g for g in groups.values())]
    if not present:
        return []
    best_rows, grid_rows = [], []
    for m in TUNED_MODELS:
        vals = {c[0]: variant_means(groups, c[0], m, "val_mrr")[0] for c in present}
        scored = [(vals[c[0]], c) for c in present if vals[c[0]] is not None]
        if not scored:
            continue
        val, (name, lr, wd) = max(scored, key=lambda s: s[0])  # first best in grid order
        test, _ = variant_means(groups, name, m, "mrr")
        best_rows.append([f"`{m}`", num(lr, "g"), num(wd, "g"), num(val), num(test)])
        grid_rows.append([f"`{m}`", *[num(vals[c[0]]) for c in present]])
    return [
        "## Tuning (plan `tune`)",
        "",
        "Each trained model's learning rate x weight decay, chosen on validation MRR (mean over "
        f"corpora {', '.join(groups)} of the mean over the seeds every cell ran); test MRR at the "
        "chosen setting only for the record.",
        "",
        *table(["model", "lr", "weight decay", "val MRR", "test MRR"], best_rows),
        "",
        "Validation MRR of every cell:",
        "",
        *table(
            ["model", *[f"lr {num(c[1], 'g')}, wd {num(c[2], 'g')}" for c in present]], grid_rows
        ),
        "",
    ]


def header(rows: list[dict[str, Any]], results: Path) -> list[str]:
    commits: dict[str, int] = defaultdict(int)
    for r in rows:
        commits[
            (r.get("commit") or "unknown")[:12]
            + (" (uncommitted changes)" if r.get("dirty") else "")
        ] += 1
    lines = [
        "# The study: does the lattice earn its keep?",
        "",
        f"Generated by `{RENDER_COMMAND}` from `{shown(results)}` ({len(rows)} runs) alone; do "
        "not edit by hand. Runs come from `python -m benchmarks.study --plan NAME` "
        f"(plans {', '.join(PLANS)}; see its `--help`); each row of the results file holds "
        "one run's whole `report.json`.",
        "",
        "Commits of the runs: "
        + (", ".join(f"`{c}` ({n})" for c, n in sorted(commits.items())) or "none yet")
        + ".",
        "",
    ]
    fixtures = sum(bool(r.get("fixture")) for r in rows)
    if fixtures:
        lines += [f"**{fixtures} rows are synthetic test fixtures, not measurements.**", ""]
    return lines


def render_markdown(rows: list[dict[str, Any]], results: Path, md: Path, plots: Path) -> str:
    """The whole page (plots written to ``plots`` on the way)."""
    lines = header(rows, results)
    lines += [
        "## Headline: test MRR per corpus",
        "",
        "The default config at the full train size: the runs whose recorded config is today's "
        "default on every key that changes training (`benchmarks/study_protocol.py`). "
        "Interval: a 95% t-interval over seeds (each "
        "seed its own split and initialisation), or with one seed the run's 95% bootstrap "
        "interval over test pairs. Paired differences are cube minus baseline within the same "
        "run; their SE is over seeds (with one seed: the run's paired bootstrap). A difference "
        "above 2 SE counts as a win, below -2 SE as a loss.",
        "",
    ]
    chosen, notes = headline_selection(rows)
    if notes:
        lines += [*notes_lines(notes), ""]
    for corpus, units in grouped(chosen, lambda r: True).items():
        lines += corpus_section(corpus, units)
    curve_lines = []
    for corpus, rs in curve_rows(rows).items():
        curve_lines += curve_section(corpus, rs, plots, md)
    if curve_lines:
        lines += ["## Learning curve", "", *curve_lines]
    lines += cube_section(rows) + tune_section(rows)
    lines += variants_section(rows, plots, md) + budget_section(rows, plots, md)
    lines += large_section(rows)
    return "\n".join(lines).rstrip("\n") + "\n"


def render(
    results: Path = RESULTS,
    md: Path | None = None,
    plots: Path | None = None,
    readme: Path | None = None,
) -> list[Path]:
    """Write the study page and its plots from ``results`` alone, and with ``readme`` its
    headline block between the markers (checked before anything is written); returns the
    written paths."""
    md = md or ROOT / "docs" / "study.md"
    plots = plots or md.parent / "study"
    rows = read_results(results)
    readme_bytes = None
    if readme is not None:
        try:
            old = readme.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CellcubeError(f"{shown(readme)}: cannot read ({exc})") from None
        block = headline_block(rows, results, readme, md, plots)
        readme_bytes = splice(old, block, readme).encode("utf-8")
    text = render_markdown(rows, results, md, plots)
    write_text(md, text)
    pngs = sorted(plots.glob("*.png")) if plots.is_dir() else []
    if readme is None or readme_bytes is None:  # (both or neither)
        return [md, *pngs]
    with atomic_open(readme, "wb") as fh:
        fh.write(readme_bytes)
    return [md, *pngs, readme]
