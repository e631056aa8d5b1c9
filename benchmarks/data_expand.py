"""Does data expansion help, and do quality scores mean anything? Measured on the tech corpus.

For each seed the ORIGINAL tech pairs are split once (:func:`cellcube.data.split_pairs`, the
config's fractions), and four training sets are built around that one split, each written as a
JSONL file whose records pin their split, so every run is tested on the same held-out test
pairs (original pairs only) and validated on the same validation pairs:

* ``original``: the train pairs as they are;
* ``expanded``: the train pairs plus their synthetic variants (``cellcube.data.expand`` with its
  defaults; variants are made of TRAIN questions only);
* ``drop_low_quality``: the train pairs minus the 10% with the lowest quality score (computed by
  the teacher among the train pairs only; no validation/test information);
* ``drop_random``: the train pairs minus a random 10% (seeded);
* ``noisy``: the train pairs with 10% of them given a wrong answer (answers rotated among a
  random 10%), to test whether quality finds broken pairs; ``noisy_drop_low_quality`` and
  ``noisy_drop_random`` remove 10% of that noisy set by lowest quality / at random (the script
  also prints how many of the broken pairs the lowest-quality 10% catches).

Each is a full ``cellcube train`` run (default config: cube + mlp + 0-step cube + ridge +
identity), ``--jobs`` at a time, one thread each. The script checks that all runs of a seed share
the same test pairs, then prints test MRR mean ± std over seeds::

    python benchmarks/data_expand.py --out runs/data_expand --seed 0 --seed 1 --seed 2
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
from typing import Any

import numpy as np

from cellcube.config import load_config
from cellcube.data import QAPair, load_builtin, split_pairs
from cellcube.data.expand import ExpandOptions, expand_pairs
from cellcube.embed.encode import embed as embed_with
from cellcube.embed.teachers import load_teacher
from cellcube.io import atomic_open, write_json
from cellcube.run.rundir import RunDir

CONDITIONS = (
    "original",
    "expanded",
    "drop_low_quality",
    "drop_random",
    "noisy",
    "noisy_drop_low_quality",
    "noisy_drop_random",
)
MODELS = ("cube", "cube_0_steps", "mlp", "identity")


def _record(p: QAPair, split: str) -> dict[str, Any]:
    return {"question": p.question, "answer": p.answer, "domain": p.domain, "split": split}


def build_sets(seed: int, out: Path, config: str, drop: float) -> dict[str, Path]:
    """Write the four training-set files of one seed; returns condition -> file."""
    cfg = load_config(config)
    split = split_pairs(load_builtin("tech"), cfg.data, seed)
    teacher = load_teacher(cfg.teacher)

    def embed(texts: list[str]) -> np.ndarray:
        return embed_with(texts, teacher, cfg.cache)

    expanded, report = expand_pairs(split.train, embed, ExpandOptions())
    scored, _ = expand_pairs(split.train, embed, ExpandOptions(variants=0))
    n_drop = round(drop * len(split.train))
    broken = np.random.default_rng(seed + 1000).permutation(len(split.train))[:n_drop]
    noisy_pairs = list(split.train)
    for k, i in enumerate(broken):  # rotate the answers among the chosen pairs
        source = split.train[int(broken[(k + 1) % len(broken)])]
        noisy_pairs[int(i)] = QAPair(split.train[int(i)].question, source.answer, "noisy")
    noisy_scored, _ = expand_pairs(noisy_pairs, embed, ExpandOptions(variants=0))
    held = [_record(p, "val") for p in split.val] + [_record(p, "test") for p in split.test]
    train = [_record(p, "train") for p in split.train]
    n_drop = round(drop * len(train))
    quality = np.array([r["quality"] for r in scored])
    assert [r["question"] for r in scored] == [r["question"] for r in train]
    low = set(np.argsort(quality, kind="stable")[:n_drop].tolist())
    rand = set(np.random.default_rng(seed).permutation(len(train))[:n_drop].tolist())
    for r in expanded:
        r["split"] = "train"
    noisy = [_record(p, "train") for p in noisy_pairs]
    assert len(noisy_scored) == len(noisy)
    noisy_low = set(
        np.argsort([r["quality"] for r in noisy_scored], kind="stable")[:n_drop].tolist()
    )
    caught = len(noisy_low & set(broken.tolist()))
    write_json(out / f"s{seed}" / "noise.json", {"broken": n_drop, "caught_by_low_quality": caught})
    sets = {
        "original": train,
        "expanded": expanded,
        "drop_low_quality": [r for i, r in enumerate(train) if i not in low],
        "drop_random": [r for i, r in enumerate(train) if i not in rand],
        "noisy": noisy,
        "noisy_drop_low_quality": [r for i, r in enumerate(noisy) if i not in noisy_low],
        "noisy_drop_random": [r for i, r in enumerate(noisy) if i not in rand],
    }
    files = {}
    for name, records in sets.items():
        path = out / f"s{seed}" / f"{name}.jsonl"
        with atomic_open(path) as fh:
            for r in [*records, *held]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        files[name] = path
    write_json(out / f"s{seed}" / "expand_report.json", report.to_dict())
    return files


def _train(config: str, data: Path, run: Path, seed: int) -> dict[str, Any]:
    report = RunDir(run).report
    if not report.exists():
        cmd = [sys.executable, "-m", "cellcube", "train", "--config", config, "--out", str(run)]
        cmd += ["--overwrite", "--set", f"data.path={data}", "--set", f"seed={seed}"]
        cmd += ["--set", "train.progress=false"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = run.with_suffix(".log")
        with log.open("w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return json.loads(report.read_text())


def _test_questions(run: Path) -> list[str]:
    return sorted(p.question for p in RunDir(run).read_pairs().test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", type=Path, default=Path("runs/data_expand"))
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--drop", type=float, default=0.1, help="fraction of train pairs dropped")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    seeds = args.seed or [0]
    files = {s: build_sets(s, args.out, args.config, args.drop) for s in seeds}
    keys = [(c, s) for s in seeds for c in CONDITIONS]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            (c, s): pool.submit(_train, args.config, files[s][c], args.out / f"s{s}" / c, s)
            for c, s in keys
        }
        reports = {k: f.result() for k, f in futures.items()}
    for s in seeds:
        tests = {c: _test_questions(args.out / f"s{s}" / c) for c in CONDITIONS}
        assert all(t == tests["original"] for t in tests.values()), f"seed {s}: test splits differ"
    summary: dict[str, Any] = {}
    for c in CONDITIONS:
        runs = [reports[(c, s)] for s in seeds]
        cell: dict[str, Any] = {
            "n_train": [r["n_train"] for r in runs],
            "n_test": runs[0]["n_test"],
        }
        for m in MODELS:
            vals = [r["models"][m]["mrr"] for r in runs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cell[m] = {"mrr": [round(statistics.fmean(vals), 4), round(sd, 4)], "runs": vals}
            cell[m]["val_mrr"] = [r["models"][m]["val_mrr"] for r in runs]
        summary[c] = cell
    for c in CONDITIONS[1:]:
        summary[c]["cube_wins_vs_original"] = sum(
            reports[(c, s)]["models"]["cube"]["mrr"]
            > reports[("original", s)]["models"]["cube"]["mrr"]
            for s in seeds
        )
    for low, rand in (
        ("drop_low_quality", "drop_random"),
        ("noisy_drop_low_quality", "noisy_drop_random"),
    ):
        summary[low]["cube_wins_vs_random_drop"] = sum(
            reports[(low, s)]["models"]["cube"]["mrr"] > reports[(rand, s)]["models"]["cube"]["mrr"]
            for s in seeds
        )
    noise = [json.loads((args.out / f"s{s}" / "noise.json").read_text()) for s in seeds]
    summary["noise"] = {
        "broken": sum(n["broken"] for n in noise),
        "caught_by_low_quality": sum(n["caught_by_low_quality"] for n in noise),
    }
    write_json(args.out / "summary.json", summary)
    head = ["training set", "train pairs", *[f"{m} test MRR" for m in MODELS], "cube > original"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in CONDITIONS:
        cell = summary[c]
        row = [c, "/".join(str(n) for n in cell["n_train"])]
        row += [f"{cell[m]['mrr'][0]:.3f} ± {cell[m]['mrr'][1]:.3f}" for m in MODELS]
        wins = cell.get("cube_wins_vs_original")
        row.append("" if wins is None else f"{wins}/{len(seeds)}")
        lines.append("| " + " | ".join(row) + " |")
    print("\n".join(lines))
    for low in ("drop_low_quality", "noisy_drop_low_quality"):
        wins = summary[low]["cube_wins_vs_random_drop"]
        print(
            f"{low} cube > {low.replace('low_quality', 'random')} cube: {wins}/{len(seeds)} seeds"
        )
    n = summary["noise"]
    print(
        f"broken pairs among the lowest-quality 10%: {n['caught_by_low_quality']} of {n['broken']}"
    )


if __name__ == "__main__":
    main()
