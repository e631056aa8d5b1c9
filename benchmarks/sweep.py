"""Train cube variants on several corpora and tabulate validation and test retrieval.

Each (variant, corpus) pair is a full ``cellcube train`` run (cube + baselines, one process, one
thread), ``--jobs`` at a time. Variants are chosen on VALIDATION MRR (mean over corpora); test
numbers are printed beside them for the record, never used to choose.

    python benchmarks/sweep.py --out runs/sweep \
        --variant base: --variant steps8:cube.steps=8 --corpus chatterbot --corpus zaragoza

A variant is ``NAME:KEY=VALUE,KEY=VALUE`` (an empty list keeps the config as is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _run(config: str, out: Path, corpus: str, overrides: list[str], seed: int) -> dict:
    report = out / "report.json"
    if not report.exists():
        sets = [f"data.corpus={corpus}", f"seed={seed}", "train.progress=false", *overrides]
        cmd = [sys.executable, "-m", "cellcube", "train", "--config", config, "--out", str(out)]
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
    ap.add_argument("--config", default="configs/default.yaml")
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
    jobs = [(n, c, s) for n in variants for c in corpora for s in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            job: pool.submit(
                _run,
                args.config,
                args.out / job[1] / f"{job[0]}_s{job[2]}",
                job[1],
                variants[job[0]],
                job[2],
            )
            for job in jobs
        }
        reports = {job: f.result() for job, f in futures.items()}
    print(
        "| variant | corpus | seed | cube val MRR | cube test MRR | cube_0_steps test MRR "
        "| mlp test MRR | identity test MRR |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, corpus, seed), r in reports.items():
        m = r["models"]
        row = [name, corpus, str(seed), f"{m['cube']['val_mrr']:.3f}", f"{m['cube']['mrr']:.3f}"]
        row += [
            f"{m[k]['mrr']:.3f}" if k in m else "-" for k in ("cube_0_steps", "mlp", "identity")
        ]
        print("| " + " | ".join(row) + " |")
    print()
    for name in variants:
        vals = [r["models"]["cube"]["val_mrr"] for (n, _, _), r in reports.items() if n == name]
        print(f"{name}: mean cube val MRR {sum(vals) / len(vals):.4f}")


if __name__ == "__main__":
    main()
