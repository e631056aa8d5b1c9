"""Robustness and denoising study (issue 16, items 4 and 5): runs, resumes and renders it.

Four variants per corpus and seed, each one ``cellcube train`` run of :mod:`benchmarks.study`
(its :class:`~benchmarks.study.Runner`: one JSON line per finished run, resumed by key) into
``benchmarks/study/robustness.jsonl``:

- ``clean``: the default config, every model evaluated on the test questions corrupted at six
  levels (:data:`LEVELS`, ``eval.robustness``).
- ``augment``: the same, trained with corrupted copies of the train questions
  (``train.augment``: :data:`AUGMENT`).
- ``denoise``: ``mode: denoise`` on the ``clean`` run's own ``pairs.jsonl`` (its splits pinned,
  so the denoiser trains on the dialogue run's train texts only): corrupted text -> clean text,
  every model against the same baselines.
- ``pretrained``: ``clean`` with the cube initialised from the ``denoise`` run's cube
  (``train.init_from``): does denoising pre-training help the dialogue task?

Run directories stay under ``runs/robustness`` (the later variants read the earlier ones)::

    python -m benchmarks.robustness                      # chatterbot, zaragoza, tech x seeds 0-2
    python -m benchmarks.robustness --variant clean --variant augment --dry-run
    python -m benchmarks.robustness --render-only        # docs/robustness.md block + plot

Rendering reads the results file alone: it rewrites the block of ``docs/robustness.md`` between
``<!-- robustness:begin -->`` and ``<!-- robustness:end -->`` and draws ``docs/robustness.png``
(test MRR against corruption, per model, trained clean and with augmentation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.study import Runner
from benchmarks.study_plans import SMALL_CORPORA, Run, Variant
from benchmarks.study_results import ROOT, pending, read_results, row_key
from benchmarks.study_stats import num, paired, verdict
from benchmarks.study_tables import table
from cellcube.errors import CellcubeError
from cellcube.io import atomic_open, write_text

LEVELS = ("typo:0.05", "typo:0.1", "typo:0.2", "drop:0.1", "drop:0.2", "drop:0.3")
AUGMENT = ("typo:0.1", "drop:0.2")
DENOISE = ("typo:0.2", "drop:0.3")
VARIANTS = ("clean", "augment", "denoise", "pretrained", "denoise_noskip")
SEEDS = (0, 1, 2)
RESULTS = ROOT / "benchmarks" / "study" / "robustness.jsonl"
RUNS = Path("runs") / "robustness"  # relative to the checkout: run keys do not name it
BASE = ("train.models.no_lattice.weight_decay=0.3", "train.models.cube_0_steps.weight_decay=0.3")
"""Set in every run: the tuned per-model settings of the shipped default, explicit so that the
runs do not depend on the default of the checkout that runs them."""
MODELS = ("cube", "no_lattice", "linear", "mlp", "cube_0_steps", "ridge", "identity")
RIVALS = ("no_lattice", "linear", "mlp", "identity")
PLOTTED = ("cube", "no_lattice", "linear", "mlp", "identity", "finetuned_teacher")
KINDS = ("typo", "drop")
MD = ROOT / "docs" / "robustness.md"
PNG = ROOT / "docs" / "robustness.png"
BEGIN, END = "<!-- robustness:begin -->", "<!-- robustness:end -->"
RENDER_COMMAND = "python -m benchmarks.robustness --render-only"


def _specs(specs: Sequence[str]) -> str:
    return "[" + ",".join(specs) + "]"


def variant_run(name: str, corpus: str, seed: int) -> Run:
    """The run of variant ``name`` on ``corpus`` and ``seed`` (its overrides name the run
    directories of the runs it builds on, relative to the checkout)."""
    robust = f"eval.robustness={_specs(LEVELS)}"
    overrides: tuple[str, ...]
    if name == "clean":
        overrides = (robust,)
    elif name == "augment":
        overrides = (robust, f"train.augment={_specs(AUGMENT)}")
    elif name == "denoise":
        pairs = RUNS / variant_run("clean", corpus, seed).name / "pairs.jsonl"
        overrides = ("mode=denoise", f"data.denoise={_specs(DENOISE)}", f"data.path={pairs}")
    elif name == "pretrained":
        init = RUNS / variant_run("denoise", corpus, seed).name
        overrides = (robust, f"train.init_from={init}")
    elif name == "denoise_noskip":  # the cube alone; its baselines are the denoise run's
        denoise = variant_run("denoise", corpus, seed).variant.overrides[len(BASE) :]
        overrides = (*denoise, "cube.skip=false", "eval.baselines=false")
    else:
        raise CellcubeError(f"--variant: unknown {name!r}; expected one of {', '.join(VARIANTS)}")
    return Run("robustness", corpus, seed, Variant(name, (*BASE, *overrides)))


def planned(variants: Sequence[str], corpora: Sequence[str], seeds: Sequence[int]) -> list[Run]:
    """Every run: the ``clean`` and ``augment`` runs first, then seed by seed the ``denoise``,
    ``pretrained`` and ``denoise_noskip`` runs (each after the runs it builds on)."""
    first = [v for v in variants if v in ("clean", "augment")]
    chained = [v for v in variants if v not in first]
    return [variant_run(v, c, s) for v in first for c in corpora for s in seeds] + [
        variant_run(v, c, s) for s in seeds for c in corpora for v in chained
    ]


# -- statistics ------------------------------------------------------------------------------


def by_variant(rows: Sequence[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict]]:
    """variant -> (corpus, seed) -> report."""
    out: dict[str, dict[tuple[str, int], dict]] = defaultdict(dict)
    for row in rows:
        out[row["variant"]][(row["corpus"], row["seed"])] = row["report"]
    return out


def mrr_at(report: dict[str, Any], model: str, level: str) -> float | None:
    """A model's test MRR on clean (``level == "clean"``) or corrupted test questions."""
    if level == "clean":
        return report["models"].get(model, {}).get("mrr")
    return report["robustness"]["corruptions"][level]["models"].get(model, {}).get("mrr")


def cell(diffs: Sequence[float]) -> str:
    """``mean ± SE (wins/n)`` of paired differences (SE over corpus x seed units)."""
    if not diffs:
        return "-"
    p = paired(diffs)
    se = "" if p.n < 2 else f" ± {num(p.se)}"
    return f"{num(p.mean, '+.3f')}{se} ({p.wins}/{p.n})"


def mrr_table(reports: dict[tuple[str, int], dict]) -> list[str]:
    """Mean test MRR per model (over corpus x seed) at each level."""
    rows = []
    for level in ("clean", *LEVELS):
        cells = []
        for m in MODELS:
            values = [v for r in reports.values() if (v := mrr_at(r, m, level)) is not None]
            cells.append(num(statistics.fmean(values)) if values else "-")
        rows.append([level, *cells])
    return table(["test questions", *MODELS], rows)


def drop_diffs(reports: dict[tuple[str, int], dict], rival: str, level: str) -> list[float]:
    """Per unit: the rival's MRR drop at ``level`` minus the cube's (positive: the cube loses
    less)."""
    return [
        (mrr_at(r, rival, "clean") - mrr_at(r, rival, level))
        - (mrr_at(r, "cube", "clean") - mrr_at(r, "cube", level))
        for r in reports.values()
    ]


def drop_table(reports: dict[tuple[str, int], dict]) -> list[str]:
    """Per level: each rival's MRR drop minus the cube's (positive: the cube loses less)."""
    rows = [[lv, *(cell(drop_diffs(reports, r, lv)) for r in RIVALS)] for lv in LEVELS]
    return table(["corruption", *(f"drop of {r} − drop of cube" for r in RIVALS)], rows)


def drop_verdict(reports: dict[tuple[str, int], dict]) -> str:
    """One sentence: at how many levels the cube loses measurably less (or more) MRR than each
    rival: a paired difference beyond 2 SE over the units
    (:func:`benchmarks.study_stats.verdict`)."""
    parts = []
    for rival in RIVALS:
        found = [verdict(paired(drop_diffs(reports, rival, lv))) for lv in LEVELS]
        parts.append(f"`{rival}`: less at {found.count('wins')}, more at {found.count('loses')}")
    return (
        f"Levels (of {len(LEVELS)}) where the cube loses measurably less / more MRR than each "
        f"rival (paired difference beyond 2 SE): {'; '.join(parts)}."
    )


def gain_table(
    after: dict[tuple[str, int], dict], before: dict[tuple[str, int], dict], models: Sequence[str]
) -> list[str]:
    """Per level: each model's MRR in ``after`` minus in ``before`` (the same splits)."""
    units = sorted(set(after) & set(before))
    rows = []
    for level in ("clean", *LEVELS):
        cells = []
        for m in models:
            diffs = [mrr_at(after[u], m, level) - mrr_at(before[u], m, level) for u in units]
            cells.append(cell(diffs))
        rows.append([level, *cells])
    return table(["test questions", *models], rows)


def denoise_table(
    reports: dict[tuple[str, int], dict], noskip: dict[tuple[str, int], dict]
) -> list[str]:
    """The denoising task per corpus: mean test MRR per model over seeds (and of the cube with
    ``cube.skip: false``, on the same splits), and pooled paired differences of each cube
    against every model."""
    corpora = sorted({c for c, _ in reports})
    rows = []
    for corpus in corpora:
        units = [u for u in sorted(reports) if u[0] == corpus]
        means = [statistics.fmean(reports[u]["models"][m]["mrr"] for u in units) for m in MODELS]
        own = [noskip[u]["models"]["cube"]["mrr"] for u in units if u in noskip]
        extra = f"{num(statistics.fmean(own))} ({len(own)})" if own else "-"
        rows.append([f"{corpus} ({len(units)} seeds)", *(num(x) for x in means), extra])
    rows.append(
        [
            "cube − model",
            "",
            *(
                cell([r["models"]["cube"]["mrr"] - r["models"][m]["mrr"] for r in reports.values()])
                for m in MODELS[1:]
            ),
            "",
        ]
    )
    both = [u for u in sorted(reports) if u in noskip]
    if both:
        rows.append(
            [
                "cube (skip=false) − model",
                *(
                    cell(
                        [
                            noskip[u]["models"]["cube"]["mrr"] - reports[u]["models"][m]["mrr"]
                            for u in both
                        ]
                    )
                    for m in MODELS
                ),
                "",
            ]
        )
    return table(["corpus", *MODELS, "cube, skip=false (seeds)"], rows)


# -- rendering -------------------------------------------------------------------------------


def _n(reports: dict[tuple[str, int], dict]) -> str:
    """``N runs: corpus s0 s1, ...``: the units a table averages."""
    corpora = sorted({c for c, _ in reports})
    seeds = {c: " ".join(f"s{s}" for cc, s in sorted(reports) if cc == c) for c in corpora}
    return f"{len(reports)} runs: " + ", ".join(f"{c} {seeds[c]}" for c in corpora)


def render_block(rows: list[dict[str, Any]], results: Path) -> str:
    """The markdown of the results block (every number from ``results``)."""
    v = by_variant(rows)
    commits = ", ".join(sorted({str(r.get("commit"))[:7] for r in rows}))
    out = [
        f"Rendered by `{RENDER_COMMAND}` from `{results.relative_to(ROOT)}` "
        f"({len(rows)} runs; commits {commits})."
        " Means over corpus × seed units; `± SE` over those units; `(w/n)`: units with a "
        "positive difference.",
        "",
    ]
    if "clean" in v:
        out += [f"#### Trained on clean questions: test MRR ({_n(v['clean'])})", ""]
        out += [*mrr_table(v["clean"]), ""]
        out += ["#### Trained on clean questions: MRR drop of each rival minus the cube's", ""]
        out += [*drop_table(v["clean"]), "", drop_verdict(v["clean"]), ""]
    if "augment" in v:
        out += [
            f"#### Trained with `train.augment: {_specs(AUGMENT)}`: test MRR ({_n(v['augment'])})"
        ]
        out += [""]
        out += [*mrr_table(v["augment"]), ""]
        out += ["#### With augmentation: MRR drop of each rival minus the cube's", ""]
        out += [*drop_table(v["augment"]), "", drop_verdict(v["augment"]), ""]
        if "clean" in v:
            out += ["#### What augmentation changes: MRR with it minus without, per model", ""]
            out += [*gain_table(v["augment"], v["clean"], MODELS[:5]), ""]
    if "denoise" in v:
        out += ["#### `mode: denoise` (corrupted text → clean text): test MRR", ""]
        out += [*denoise_table(v["denoise"], v.get("denoise_noskip", {})), ""]
    if "pretrained" in v and "clean" in v:
        out += ["#### Cube pre-trained as a denoiser, then trained on dialogue: MRR gain", ""]
        out += [*gain_table(v["pretrained"], v["clean"], ("cube",)), ""]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], png: Path) -> None:
    """Test MRR against corruption rate (0 = clean), one line per model of :data:`PLOTTED`,
    means over seeds: a column per corpus, a row per training variant (clean, augment) and
    corruption kind (typo, drop)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from benchmarks.study_render import COLOURS

    v = by_variant(rows)
    panels = [(name, kind) for name in ("clean", "augment") if name in v for kind in KINDS]
    corpora = sorted({c for name, _ in panels for c, _ in v[name]})
    if not corpora:
        return
    fig = Figure(figsize=(4.0 * len(corpora), 3.0 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    for i, (name, kind) in enumerate(panels):
        levels = ["clean", *(lv for lv in LEVELS if lv.startswith(kind))]
        rates = [0.0, *(float(lv.split(":")[1]) for lv in levels[1:])]
        for j, corpus in enumerate(corpora):
            ax = fig.add_subplot(len(panels), len(corpora), i * len(corpora) + j + 1)
            units = [r for (c, _), r in v[name].items() if c == corpus]
            for m in PLOTTED:
                if not units or any(mrr_at(r, m, "clean") is None for r in units):
                    continue
                ys = [statistics.fmean(mrr_at(r, m, lv) for r in units) for lv in levels]
                ax.plot(rates, ys, marker="o", label=m, color=COLOURS.get(m))
            ax.set_xticks(rates)
            ax.set_xlabel(f"{kind} rate")
            ax.set_ylabel("test MRR")
            ax.set_title(f"{corpus}: trained {name}, {len(units)} seeds", fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})


def render(results: Path = RESULTS, md: Path = MD, png: Path = PNG) -> list[Path]:
    """Rewrite the block of ``md`` and draw ``png`` from ``results``; the paths written."""
    rows = read_results(results)
    corpora, seeds = sorted({r["corpus"] for r in rows}), sorted({r["seed"] for r in rows})
    current = {run.key for run in planned(VARIANTS, corpora, seeds)}
    rows = [r for r in rows if row_key(r) in current]  # rows of an earlier plan are left out
    if not rows:
        raise CellcubeError(f"{results}: no results to render")
    text = md.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise CellcubeError(f"{md}: no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_text(md, f"{head}{BEGIN}\n{render_block(rows, results)}\n{END}{tail}")
    plot(rows, png)
    return [md, png]


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.robustness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--variant", choices=VARIANTS, action="append", help="default: all four")
    ap.add_argument("--corpus", action="append", help=f"default: {', '.join(SMALL_CORPORA)}")
    ap.add_argument("--seed", type=int, action="append", help="default: 0 1 2")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each run")
    ap.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    ap.add_argument("--render-only", action="store_true")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 2 and one ``error:`` line on a user mistake."""
    args = parse_args(argv)
    try:
        if not args.render_only:
            runs = planned(
                args.variant or VARIANTS, args.corpus or SMALL_CORPORA, args.seed or SEEDS
            )
            todo = pending(runs, read_results(args.results))
            print(f"{len(runs)} runs planned, {len(todo)} to do", flush=True)
            if args.dry_run:
                for run in todo:
                    print(f"  {run.name}  --set {' --set '.join(run.sets())}")
                return 0
            runner = Runner(args.results, ROOT / RUNS, threads=args.threads, keep_runs=True)
            runner.run_all(todo)
        for path in render(args.results):
            print(f"wrote {path}")
    except CellcubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
