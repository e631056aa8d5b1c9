"""Train cube variants on several corpora and tabulate validation and test retrieval.

Each (variant, corpus) pair is a full ``cellcube train`` run (cube + baselines, one process, one
thread), ``--jobs`` at a time. Variants are chosen on VALIDATION MRR (mean over corpora); test
numbers are printed beside them for the record, never used to choose.

    python -m benchmarks.sweep --out runs/sweep \
        --variant base: --variant steps8:cube.steps=8 --corpus chatterbot --corpus zaragoza

A variant is ``NAME:KEY=VALUE,KEY=VALUE`` (an empty list keeps the config as is). Without
``--config`` the runs use cellcube's built-in defaults (what configs/default.yaml spells out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cellcube.io import write_json
from cellcube.run.rundir import RunDir


def _run(config: str | None, out: Path, corpus: str, overrides: list[str], seed: int) -> dict:
    report = RunDir(out).report
    if not report.exists():
        sets = [f"data.corpus={corpus}", f"seed={seed}", "train.progress=false", *overrides]
        cmd = [sys.executable, "-m", "cellcube", "train", "--out", str(out)]
        if config is not None:
            cmd += ["--config", config]
        cmd.append("--overwrite")  # a run without a report is an unfinished attempt
        for s in sets:
            cmd += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = out.with_suffix(".log")
        out.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    corpora = args.corpus or ["chatterbot", "zaragoza"]
    seeds = args.seed or [0]
    variants = {}
    for v in args.variant:
        name, _, sets = v.partition(":")
        variants[name] = [s for s in sets.split(",") if s]
    reports = run_all(args.config, args.out, variants, corpora, seeds, args.jobs)
    summary = summarise(reports)
    write_json(args.out / "summary.json", summary)
    print(format_summary(summary))


def run_all(
    config: str | None,
    out: Path,
    variants: dict[str, list[str]],
    corpora: list[str],
    seeds: list[int],
    jobs: int,
) -> dict[tuple[str, str, int], dict]:
    """Every (variant, corpus, seed) run's report, ``jobs`` runs at a time; finished runs (those
    with a ``report.json`` under ``out/CORPUS/VARIANT_sSEED``) are read, not re-trained."""
    keys = [(n, c, s) for n in variants for c in corpora for s in seeds]
    with ThreadPoolExecutor(jobs) as pool:
        futures = {
            key: pool.submit(
                _run, config, out / key[1] / f"{key[0]}_s{key[2]}", key[1], variants[key[0]], key[2]
            )
            for key in keys
        }
        return {key: f.result() for key, f in futures.items()}


MODELS = ("cube", "cube_0_steps", "mlp", "ridge", "identity", "mean_answer")


def summarise(reports: dict[tuple[str, str, int], dict]) -> dict[str, dict]:
    """Mean and std over seeds of each model's test metrics and validation MRR."""
    out: dict[str, dict] = {}
    for (name, corpus, _), r in reports.items():
        cell = out.setdefault(f"{name}/{corpus}", {"n_test": r["n_test"], "runs": []})
        cell["runs"].append(r["models"])
    for cell in out.values():
        runs = cell.pop("runs")
        cell["seeds"] = len(runs)
        for model in MODELS:
            if model not in runs[0]:
                continue
            for key in ("mrr", "recall@1", "recall@10", "cosine", "val_mrr"):
                vals = [run[model][key] for run in runs]
                mean = statistics.fmean(vals)
                std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cell.setdefault(model, {})[key] = [round(mean, 4), round(std, 4)]
        for rival in ("cube_0_steps", "identity"):
            cell[f"cube_wins_vs_{rival}"] = sum(
                run["cube"]["mrr"] > run[rival]["mrr"] for run in runs if rival in run
            )
    return out


def format_summary(summary: dict[str, dict]) -> str:
    """Markdown: one row per variant/corpus, test MRR mean ± std over seeds for every model."""
    head = [
        "variant/corpus",
        "seeds",
        "cube val MRR",
        *[f"{m} MRR" for m in MODELS],
        "cube R@1",
        "cube cos",
        "cube > 0-steps",
        "cube > identity",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cell in summary.items():
        cube = cell["cube"]
        row = [key, str(cell["seeds"]), f"{cube['val_mrr'][0]:.3f}"]
        for m in MODELS:
            row.append(f"{cell[m]['mrr'][0]:.3f} ± {cell[m]['mrr'][1]:.3f}" if m in cell else "-")
        row += [
            f"{cube['recall@1'][0]:.3f}",
            f"{cube['cosine'][0]:.3f}",
            f"{cell['cube_wins_vs_cube_0_steps']}/{cell['seeds']}",
            f"{cell['cube_wins_vs_identity']}/{cell['seeds']}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
