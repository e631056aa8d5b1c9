"""Loss ablation: train the default cube with each loss configuration, on both corpora and
several seeds, and tabulate validation MRR (what the default is chosen on) beside test metrics.

    python -m benchmarks.ablate --out runs/ablate --seed 0 --seed 1 --seed 2 --jobs 2

Cross-validated (``--folds K``): every configuration is trained K times per seed and corpus, fold
``i`` of the non-test pairs serving as validation (``data.folds=K data.fold=i``); the test split
is the seed's usual one. Validation MRR then averages over every non-test pair, K times more
validation evidence than the 10% split, and test numbers average over the K fold models.
``--only NAME`` restricts the run to some configurations::

    python -m benchmarks.ablate --out runs/ablate_cv --folds 5 --seed 0 --seed 1 \
        --only infonce+cosine --only infonce --only infonce+cosine+diversity \
        --only infonce+cosine+curriculum

Built on :mod:`benchmarks.sweep` (same runs, same resumable run directories, same summary).
Only the cube is trained (``eval.baselines=false``), except for ``BESIDE`` (the default before
the ablation), which keeps its baselines so that ``identity`` and ``cube_0_steps`` stand beside
it. Every configuration states its curriculum and diversity settings, so the table does not
depend on the default (``DEFAULT``, configs/default.yaml's loss, is marked).
The table is written to ``OUT/ablation.md`` and printed; ``OUT/summary.json`` holds every number.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.sweep import run_all, summarise
from cellcube.io import write_json, write_text

MINED = ["loss.hard_negatives=8", "loss.random_negatives=8"]
# every configuration states the terms it leaves out, so the table does not depend on the default
BASE = ["loss.curriculum=false", "loss.diversity=0"]
CONFIGS: dict[str, list[str]] = {
    # the default before the ablation; trained with its baselines for reference
    "infonce+cosine": [*BASE, "eval.baselines=true"],
    "infonce": [*BASE, "loss.cosine=0"],
    "cosine": [*BASE, "loss.infonce=0"],
    "mse": [*BASE, "loss.infonce=0", "loss.cosine=0", "loss.mse=1"],
    "infonce+triplet_mined": [*BASE, "loss.cosine=0", "loss.triplet=1", *MINED],
    "infonce_mined": [*BASE, "loss.cosine=0", *MINED],
    "infonce+cosine+diversity": ["loss.curriculum=false", "loss.diversity=1"],
    "infonce+cosine+curriculum": ["loss.diversity=0", "loss.curriculum=true"],
    "all": ["loss.triplet=1", "loss.diversity=1", "loss.curriculum=true", *MINED],
}
# the default (configs/default.yaml): best mean validation MRR under 5-fold cross-validation
DEFAULT = "infonce+cosine+diversity"
# the configuration trained with the baselines (identity, 0-step cube) beside it
BESIDE = "infonce+cosine"


def fold_variants(variants: dict[str, list[str]], folds: int) -> dict[str, list[str]]:
    """``NAME@i``: each variant with fold ``i`` of ``folds`` as its validation split."""
    if not folds:
        return variants
    return {
        f"{name}@{i}": [*sets, f"data.folds={folds}", f"data.fold={i}"]
        for name, sets in variants.items()
        for i in range(folds)
    }


def pool_folds(reports: dict[tuple[str, str, int], dict]) -> dict[tuple[str, str, int], dict]:
    """Key fold runs ``(NAME@i, corpus, seed)`` as ``(NAME, corpus, seed * 1000 + i)`` so that
    :func:`summarise` pools every fold and seed of a configuration into one cell."""
    pooled = {}
    for (name, corpus, seed), report in reports.items():
        base, _, fold = name.partition("@")
        pooled[(base, corpus, seed * 1000 + int(fold or 0))] = report
    return pooled


def format_ablation(summary: dict[str, dict], corpora: list[str]) -> str:
    """Markdown: one row per configuration, validation MRR (mean over corpora) first."""
    head = ["loss configuration", "val MRR (mean)"]
    for c in corpora:
        head += [f"{c} val MRR", f"{c} test MRR", f"{c} test R@1", f"{c} test cos"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pm(stat: list[float]) -> str:
        return f"{stat[0]:.3f} ± {stat[1]:.3f}"

    for name in (n for n in CONFIGS if f"{n}/{corpora[0]}" in summary):
        cubes = [summary[f"{name}/{c}"]["cube"] for c in corpora]
        label = f"{name} (default)" if name == DEFAULT else name
        row = [label, f"{statistics.fmean(cube['val_mrr'][0] for cube in cubes):.3f}"]
        for cube in cubes:
            row += [pm(cube["val_mrr"]), pm(cube["mrr"]), pm(cube["recall@1"]), pm(cube["cosine"])]
        lines.append("| " + " | ".join(row) + " |")
    for rival in ("cube_0_steps", "identity"):
        if rival not in summary.get(f"{BESIDE}/{corpora[0]}", {}):
            continue
        row = [f"*{rival}* (beside {BESIDE})", ""]
        for c in corpora:
            m = summary[f"{BESIDE}/{c}"][rival]
            row += [pm(m["val_mrr"]), pm(m["mrr"]), pm(m["recall@1"]), pm(m["cosine"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired_deltas(pooled: dict[tuple[str, str, int], dict]) -> dict[str, dict[str, list[float]]]:
    """Each configuration's cube MRR minus the default's on MATCHED runs (same corpus, seed and
    fold: same split, same test set), validation and test: ``[mean, standard error, runs]``.

    Split-to-split variation, the largest noise in the table, cancels in the differences. The
    runs of one seed share their test set and overlap in training data, so the standard error
    is an optimistic one."""
    base = {(c, k): r["models"]["cube"] for (n, c, k), r in pooled.items() if n == DEFAULT}
    out: dict[str, dict[str, list[float]]] = {}
    for name in (n for n in CONFIGS if n != DEFAULT):
        diffs: dict[str, list[float]] = {"val_mrr": [], "mrr": []}
        for (n, c, k), r in pooled.items():
            if n == name and (c, k) in base:
                for key, vals in diffs.items():
                    vals.append(r["models"]["cube"][key] - base[(c, k)][key])
        if len(diffs["mrr"]) > 1:
            out[name] = {
                key: [
                    round(statistics.fmean(v), 4),
                    round(statistics.stdev(v) / len(v) ** 0.5, 4),
                    len(v),
                ]
                for key, v in diffs.items()
            }
    return out


def format_deltas(deltas: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: paired differences from the default, validation first."""
    lines = [
        f"| loss configuration | Δ val MRR vs {DEFAULT} | Δ test MRR vs {DEFAULT} | matched runs |",
        "|---|---|---|---|",
    ]
    for name, d in deltas.items():
        val, test = d["val_mrr"], d["mrr"]
        lines.append(
            f"| {name} | {val[0]:+.4f} ± {val[1]:.4f} | {test[0]:+.4f} ± {test[1]:.4f} | {val[2]} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    ap.add_argument("--out", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=0, help="K-fold cross-validation (0: off)")
    ap.add_argument("--only", action="append", choices=list(CONFIGS), default=None)
    args = ap.parse_args()
    if args.folds == 1 or args.folds < 0:
        ap.error(f"--folds: 0 (no cross-validation) or >= 2, got {args.folds}")
    corpora = args.corpus or ["chatterbot", "zaragoza"]
    names = args.only or list(CONFIGS)
    variants = {name: ["eval.baselines=false", *CONFIGS[name]] for name in names}
    variants = fold_variants(variants, args.folds)
    reports = run_all(args.config, args.out, variants, corpora, args.seed or [0], args.jobs)
    pooled = pool_folds(reports)
    summary = summarise(pooled)
    summary["paired_vs_default"] = paired_deltas(pooled)
    write_json(args.out / "summary.json", summary)
    table = format_ablation(summary, corpora) + "\n\n" + format_deltas(summary["paired_vs_default"])
    write_text(args.out / "ablation.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
