"""The study of issue 15, does the lattice earn its keep: one command runs, resumes and renders it.

Each run is one ``cellcube train`` (a subprocess, so memory and threads stay isolated) of a corpus,
a seed (and fold), a train size and a config variant; every model of the run (cube, no_lattice,
linear, mlp, cube_0_steps, ridge, identity, mean_answer, and finetuned_teacher where asked) is
trained and evaluated on the same split. A finished run appends ONE JSON line to
``benchmarks/study/results.jsonl``; a run whose key is already there is skipped, so an interrupted
study continues where it stopped::

    python -m benchmarks.study --plan small                # chatterbot, zaragoza, tech x seeds 0-4
    python -m benchmarks.study --plan curve --dry-run      # print the runs, run nothing
    python -m benchmarks.study --plan cube --jobs 2 --threads 1 --max-runs 10
    python -m benchmarks.study --render-only               # docs/study.md + docs/study/*.png
                                                           # + README.md's headline block

Plans (``--plan``; ``--corpus`` / ``--seed`` replace a plan's corpora / seeds, ``--folds K`` runs
folds 0..K-1 of every seed, ``--set KEY=VALUE`` adds an override to every run):

- ``small``: chatterbot, zaragoza, tech x seeds 0-4, the default config.
- ``curve``: chitchat, seed 0 (one fixed test split), ``data.max_train`` in 250 .. 8000 and all;
  at 1000 and all the run also fine-tunes the teacher (variant ``finetune``).
- ``cube``: the default cube's steps T in {3, 4, 6, 8} x lattices 4x4x4, 4x4x8, 8x8x4 (the
  combinations the faces reshaper allows: T >= Z-1) on chatterbot, zaragoza, tech x seeds 0-2.
- ``tune``: learning rate {3e-4, 1e-3, 3e-3} x weight decay {0.01, 0.3, 3.0}, the same value for
  every trained model, on chatterbot, zaragoza, tech x seeds 0-2; chosen on validation MRR.
- ``variants`` (issue 16): the default cube, the cube refining a linear map (reading the question
  or the map's output), the clamped input face, anytime training with K stochastic passes
  (unclamped and clamped) on chatterbot, zaragoza, tech x seeds 0-2, then chitchat at 4000 train
  pairs, seed 0.
- ``budget`` (issue 16): the cube from about 13k to 800k parameters, the mlp sized by it and the
  linear adapter at a matching rank, on chatterbot x seeds 0-2, then chitchat at 4000, seed 0.
- ``large`` (issue 16): full chitchat, seed 0: the default lattice at T = 12, the 8x8x8 lattice
  of 32 channels at T = 8, and the default cube.

A run's key is (corpus, seed, fold, train size, variant name, hash of its overrides); its row
holds the key, the overrides, the resolved config, the cellcube commit, the wall seconds and the
run's whole ``report.json``. Rendering (:mod:`benchmarks.study_render`) reads that file alone and
writes ``docs/study.md``, its plots, and the README block between ``<!-- study:headline:begin -->``
and ``<!-- study:headline:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.study_plans import (
    CUBE_LATTICES,
    CUBE_STEPS,
    CURVE_SIZES,
    DEFAULT_CUBE,
    FINETUNE_SIZES,
    PLAN_DEFAULTS,
    PLANS,
    SMALL_CORPORA,
    TUNE_LRS,
    TUNE_WDS,
    TUNED_MODELS,
    Run,
    Variant,
    cube_variants,
    plan_runs,
    tune_variants,
)
from benchmarks.study_results import (
    KEY_FIELDS,
    RESULTS,
    ROOT,
    append_result,
    pending,
    read_results,
)
from cellcube.errors import CellcubeError

RUNS = ROOT / "runs" / "study"

# the plans live in benchmarks.study_plans; their names stay importable from here
__all__ = [
    "CUBE_LATTICES",
    "CUBE_STEPS",
    "CURVE_SIZES",
    "DEFAULT_CUBE",
    "FINETUNE_SIZES",
    "PLANS",
    "PLAN_DEFAULTS",
    "RUNS",
    "SMALL_CORPORA",
    "TUNED_MODELS",
    "TUNE_LRS",
    "TUNE_WDS",
    "Run",
    "Runner",
    "Variant",
    "cube_variants",
    "git_commit",
    "main",
    "parse_args",
    "plan_runs",
    "planned",
    "run_plans",
    "tune_variants",
]

# -- running -----------------------------------------------------------------------------------


def git_commit() -> tuple[str | None, bool | None]:
    """``git rev-parse HEAD`` of the checkout and whether its tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, dirty


@dataclass
class Runner:
    """Runs planned runs as ``python -m cellcube train`` subprocesses and records them."""

    results: Path = RESULTS
    runs_dir: Path = RUNS
    config: str | None = None
    threads: int = 1
    keep_runs: bool = False

    def command(self, run: Run, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "cellcube", "train", "--out", str(out), "--overwrite"]
        if self.config is not None:
            cmd += ["--config", self.config]
        for s in run.sets():
            cmd += ["--set", s]
        return cmd

    def run(self, run: Run) -> dict[str, Any]:
        """Train ``run``, append its row to the results file, return the row."""
        from cellcube.run.rundir import RunDir  # imports torch: not for --dry-run / rendering

        out = self.runs_dir / run.name
        log = self.runs_dir / "logs" / (run.name.replace("/", "__") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        n = str(self.threads)
        env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "HF_HUB_OFFLINE": "1"}
        start = time.monotonic()
        with log.open("w") as fh:
            proc = subprocess.run(
                self.command(run, out), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        wall = time.monotonic() - start
        if proc.returncode != 0:
            lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise CellcubeError(
                f"{run.name}: cellcube train exited {proc.returncode}: {lines[-1]} (log: {log})"
            )
        commit, dirty = git_commit()
        row = {
            **dict(zip(KEY_FIELDS, run.key, strict=True)),
            "plan": run.plan,
            "overrides": run.overrides,
            "base_config": self.config,
            "commit": commit,
            "dirty": dirty,
            "wall_seconds": round(wall, 1),
            "config": yaml.safe_load(RunDir(out).config.read_text()),
            "report": json.loads(RunDir(out).report.read_text()),
        }
        append_result(self.results, row)
        if not self.keep_runs:
            shutil.rmtree(out, ignore_errors=True)
        return row

    def run_all(self, runs: Sequence[Run], jobs: int = 1) -> int:
        """Run ``runs``, ``jobs`` at a time; returns how many finished."""
        with ThreadPoolExecutor(max(jobs, 1)) as pool:
            futures = [pool.submit(self.run, r) for r in runs]
            for i, fut in enumerate(futures, 1):
                try:
                    row = fut.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # the runs not started yet
                    raise
                cube = row["report"].get("models", {}).get("cube", {})
                print(
                    f"[{i}/{len(runs)}] {runs[i - 1].name}: cube test MRR "
                    f"{cube.get('mrr', float('nan')):.3f} ({row['wall_seconds']:.0f} s)",
                    flush=True,
                )
        return len(runs)


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--plan", choices=PLANS, action="append", help="a plan (repeatable)")
    ap.add_argument("--corpus", action="append", help="replace the plan's corpora (repeatable)")
    ap.add_argument("--seed", type=int, action="append", help="replace the plan's seeds")
    ap.add_argument("--folds", type=int, default=0, help="run folds 0..K-1 of every seed")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override added to every run (part of its key)",
    )
    ap.add_argument("--config", default=None, help="base YAML config (default: built-in)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--runs-dir", type=Path, default=RUNS, help="where runs train")
    ap.add_argument("--keep-runs", action="store_true", help="keep run directories")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per run")
    ap.add_argument("--max-runs", type=int, default=None, help="run at most this many")
    ap.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="only render docs/study.md, its plots and the README block",
    )
    ap.add_argument("--no-render", action="store_true", help="do not render after running")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "study.md")
    ap.add_argument("--plots", type=Path, default=ROOT / "docs" / "study")
    ap.add_argument(
        "--readme",
        type=Path,
        default=ROOT / "README.md",
        help="the file whose study:headline markers get the headline block",
    )
    return ap.parse_args(argv)


def planned(args: argparse.Namespace) -> list[Run]:
    """Every run of the requested plans, in order."""
    if args.folds == 1 or args.folds < 0:
        raise CellcubeError(f"--folds: expected 0 or >= 2, got {args.folds}")
    runs: list[Run] = []
    for plan in args.plan or []:
        runs += plan_runs(plan, args.corpus, args.seed, args.folds, args.sets)
    return runs


def run_plans(args: argparse.Namespace) -> list[Run]:
    """Run (or with ``--dry-run`` print) the requested plans' runs that have no row yet."""
    if not args.plan:
        raise CellcubeError(f"--plan: name a plan ({', '.join(PLANS)}) or use --render-only")
    runs = pending(planned(args), [])  # each key once (plans may share runs)
    todo = pending(runs, read_results(args.results))
    print(f"{len(runs)} runs planned, {len(runs) - len(todo)} done, {len(todo)} to do", flush=True)
    if args.max_runs is not None:
        todo = todo[: args.max_runs]
    if args.dry_run:
        for run in todo:
            print(f"  {run.plan:5s} {run.name}  --set {' --set '.join(run.sets())}")
        return todo
    runner = Runner(args.results, args.runs_dir, args.config, args.threads, args.keep_runs)
    runner.run_all(todo, args.jobs)
    return todo


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 and one ``error:`` line on a user mistake)."""
    from benchmarks.study_render import render

    args = parse_args(argv)
    try:
        if not args.render_only:
            run_plans(args)
            if args.dry_run or args.no_render:
                return 0
        for path in render(args.results, args.md, args.plots, args.readme):
            print(f"wrote {path}")
    except CellcubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
