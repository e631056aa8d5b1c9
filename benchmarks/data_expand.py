"""Does data expansion help, and do quality scores mean anything? Measured on the tech corpus.

For each seed the ORIGINAL tech pairs are split once (:func:`cellcube.data.split_pairs`, the
config's fractions), and seven training sets are built around that one split, each written as a
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
  ``noisy_drop_random`` remove 10% of that noisy set by lowest quality / at random.

Each is a full ``cellcube train`` run (the built-in default config, every model of it) through
:class:`benchmarks.study.Runner`: a finished run appends one JSON line (key, overrides, resolved
config, commit, whole ``report.json``) to ``benchmarks/data_expand/results.jsonl``, and a run
whose key is there is skipped, so an interrupted benchmark resumes. Each seed's training sets are
described (sizes, planted broken pairs and how many the lowest-quality 10% catches, the expansion
report) by one line of ``benchmarks/data_expand/sets.jsonl``. After the runs, every run's test
split is checked against its seed's held-out pairs. ``--render-only`` rewrites the tables of
``docs/data.md`` between ``<!-- bench:data_expand:begin -->`` and ``<!-- bench:data_expand:end
-->`` from those two files alone::

    python -m benchmarks.data_expand                       # seeds 0-4, one run at a time
    python -m benchmarks.data_expand --seed 5 --seed 6     # more seeds, same files
    python -m benchmarks.data_expand --render-only
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
from benchmarks.study import Runner, git_commit
from benchmarks.study_plans import Run, Variant
from benchmarks.study_results import ROOT, append_result, overrides_hash, read_results, row_key
from benchmarks.study_tables import shown, table
from cellcube.errors import CellcubeError

CORPUS = "tech"
CONDITIONS = (
    "original",
    "expanded",
    "drop_low_quality",
    "drop_random",
    "noisy",
    "noisy_drop_low_quality",
    "noisy_drop_random",
)
MODELS = ("cube", "no_lattice", "linear", "mlp", "identity")
DIFF_MODELS = ("cube", "no_lattice", "linear", "mlp")
DROP = 0.1
SEEDS = (0, 1, 2, 3, 4)
RESULTS = ROOT / "benchmarks" / "data_expand" / "results.jsonl"
SETS = ROOT / "benchmarks" / "data_expand" / "sets.jsonl"
RUNS = ROOT / "runs" / "data_expand"
DOC = ROOT / "docs" / "data.md"
BLOCK = "data_expand"
RUN_COMMAND = "python -m benchmarks.data_expand"
RENDER_COMMAND = "python -m benchmarks.data_expand --render-only"


# -- the training sets -------------------------------------------------------------------------


def _record(p, split: str) -> dict[str, Any]:
    return {"question": p.question, "answer": p.answer, "domain": p.domain, "split": split}


def _noisy(train: list, broken: np.ndarray) -> list:
    """``train`` with the answers of the pairs at ``broken`` rotated among themselves."""
    from cellcube.data import QAPair

    noisy = list(train)
    for k, i in enumerate(broken):
        source = train[int(broken[(k + 1) % len(broken)])]
        noisy[int(i)] = QAPair(train[int(i)].question, source.answer, "noisy")
    return noisy


def _lowest(scored: list[dict[str, Any]], n: int) -> set[int]:
    """Indices of the ``n`` records with the lowest quality (stable order on ties)."""
    return set(np.argsort([r["quality"] for r in scored], kind="stable")[:n].tolist())


def build_sets(seed: int, folder: Path, config: str | None, drop: float) -> dict[str, Any]:
    """Write the training-set files of one seed (``folder/CONDITION.jsonl``, train records plus
    the seed's pinned validation and test records); returns the seed's description."""
    from cellcube.config import load_config
    from cellcube.data import load_builtin, split_pairs
    from cellcube.data.expand import ExpandOptions, expand_pairs
    from cellcube.embed.encode import embed as embed_with
    from cellcube.embed.teachers import load_teacher
    from cellcube.io import atomic_open

    cfg = load_config(config)
    split = split_pairs(load_builtin(CORPUS), cfg.data, seed)
    teacher = load_teacher(cfg.teacher)

    def embed(texts: list[str]) -> np.ndarray:
        return embed_with(texts, teacher, cfg.cache)

    expanded, report = expand_pairs(split.train, embed, ExpandOptions())
    scored, _ = expand_pairs(split.train, embed, ExpandOptions(variants=0))
    n_drop = round(drop * len(split.train))
    broken = np.random.default_rng(seed + 1000).permutation(len(split.train))[:n_drop]
    noisy_pairs = _noisy(split.train, broken)
    noisy_scored, _ = expand_pairs(noisy_pairs, embed, ExpandOptions(variants=0))
    train = [_record(p, "train") for p in split.train]
    noisy = [_record(p, "train") for p in noisy_pairs]
    if [r["question"] for r in scored] != [r["question"] for r in train]:
        raise CellcubeError("quality scores are not in train order")
    low, noisy_low = _lowest(scored, n_drop), _lowest(noisy_scored, n_drop)
    rand = set(np.random.default_rng(seed).permutation(len(train))[:n_drop].tolist())
    for r in expanded:
        r["split"] = "train"
    sets = {
        "original": train,
        "expanded": expanded,
        "drop_low_quality": [r for i, r in enumerate(train) if i not in low],
        "drop_random": [r for i, r in enumerate(train) if i not in rand],
        "noisy": noisy,
        "noisy_drop_low_quality": [r for i, r in enumerate(noisy) if i not in noisy_low],
        "noisy_drop_random": [r for i, r in enumerate(noisy) if i not in rand],
    }
    held = [_record(p, "val") for p in split.val] + [_record(p, "test") for p in split.test]
    for name, records in sets.items():
        with atomic_open(folder / f"{name}.jsonl") as fh:
            for r in [*records, *held]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {
        "n_train": {name: len(records) for name, records in sets.items()},
        "n_val": len(split.val),
        "n_test": len(split.test),
        "broken": n_drop,
        "caught_by_low_quality": len(noisy_low & set(broken.tolist())),
        "expand": report.to_dict(),
    }


# -- the plan ----------------------------------------------------------------------------------


def variant_name(condition: str, drop: float) -> str:
    return condition if drop == DROP else f"{condition}_drop{drop:g}"


def sets_folder(runs_dir: Path, seed: int, drop: float) -> Path:
    return runs_dir / "sets" / f"drop{drop:g}" / f"s{seed}"


def plan(seeds: Sequence[int], drop: float, runs_dir: Path) -> list[Run]:
    """Every (seed, condition) run, seed by seed; the data file is the run's one override."""
    runs = []
    for seed in seeds:
        folder = sets_folder(runs_dir, seed, drop)
        for c in CONDITIONS:
            data = (folder / f"{c}.jsonl").resolve()
            where = data.relative_to(ROOT) if data.is_relative_to(ROOT) else data
            overrides = (f"data.path={where.as_posix()}",)
            runs.append(Run("data_expand", CORPUS, seed, Variant(variant_name(c, drop), overrides)))
    return runs


def sets_row(seed: int, drop: float, info: dict[str, Any]) -> dict[str, Any]:
    """The line of ``sets.jsonl`` describing one seed's training sets (keyed like a run)."""
    commit, dirty = git_commit()
    return {
        "corpus": CORPUS,
        "seed": seed,
        "fold": None,
        "train_size": "all",
        "variant": variant_name("sets", drop),
        "overrides_hash": overrides_hash([f"drop={drop}"]),
        "drop": drop,
        "commit": commit,
        "dirty": dirty,
        **info,
    }


def check_test_split(run_dir: Path, data: Path) -> None:
    """The run tested on exactly the test records of its data file (the seed's held-out pairs)."""
    from cellcube.run.rundir import RunDir

    want = sorted(
        json.loads(line)["question"]
        for line in data.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["split"] == "test"
    )
    got = sorted(p.question for p in RunDir(run_dir).read_pairs().test)
    if got != want:
        raise CellcubeError(f"{run_dir}: its test split differs from the test records of {data}")


def run(args: argparse.Namespace) -> None:
    """Build the sets of every seed with runs to do, run them, check their test splits."""
    runs = todo(plan(args.seed, args.drop, args.runs_dir), args.results, args.max_runs)
    if args.dry_run:
        for r in runs:
            print(f"  {r.name}  --set {' --set '.join(r.sets())}")
        return
    described = {(r["seed"], r["variant"]) for r in read_results(args.sets)}
    for seed in sorted({r.seed for r in runs}):
        info = build_sets(seed, sets_folder(args.runs_dir, seed, args.drop), None, args.drop)
        if (seed, variant_name("sets", args.drop)) not in described:
            append_result(args.sets, sets_row(seed, args.drop, info))
    runner = Runner(args.results, args.runs_dir / "runs", None, args.threads, keep_runs=True)
    runner.run_all(runs, args.jobs)
    for r in runs:
        check_test_split(runner.runs_dir / r.name, ROOT / r.overrides[0].split("=", 1)[1])


# -- rendering ---------------------------------------------------------------------------------


def _by_condition(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """The default plan's rows (drop 10%), per condition, per seed."""
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if row.get("corpus") == CORPUS and row.get("variant") in CONDITIONS:
            out[row["variant"]].setdefault(row["seed"], row)
    return out


def _mrr(row: dict[str, Any], model: str) -> float | None:
    return row["report"]["models"].get(model, {}).get("mrr")


def _diffs(runs: dict, a: str, b: str, model: str) -> list[float]:
    """Per seed where both conditions ran: MRR of ``model`` under ``a`` minus under ``b``."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    pairs = [(_mrr(runs[a][s], model), _mrr(runs[b][s], model)) for s in seeds]
    return [x - y for x, y in pairs if x is not None and y is not None]


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


COMPARISONS = (
    *((c, "original") for c in CONDITIONS[1:]),
    ("drop_low_quality", "drop_random"),
    ("noisy_drop_low_quality", "noisy_drop_random"),
)


def block(rows: list[dict[str, Any]], set_rows: list[dict[str, Any]], results: Path) -> list[str]:
    """The markdown between the data_expand markers."""
    runs = _by_condition(rows)
    planned = {r.key for r in plan(SEEDS, DROP, RUNS)}
    done = len(planned & {row_key(r) for r in rows})
    lines = [provenance(RENDER_COMMAND, results, done, len(planned), RUN_COMMAND), ""]
    if not runs:
        return [*lines, f"No run is in `{shown(results)}` yet."]
    n_test = sorted({r["report"]["n_test"] for seeds in runs.values() for r in seeds.values()})
    lines += [
        f"Test MRR ({', '.join(map(str, n_test))} test pairs per seed, the same in every "
        "condition of a seed): the mean over seeds with its 95% t-interval (one seed: its value).",
        "",
    ]
    body = []
    for c in CONDITIONS:
        seeds = runs.get(c, {})
        if not seeds:
            continue
        cells = [
            mean_ci([v for r in seeds.values() if (v := _mrr(r, m)) is not None]) for m in MODELS
        ]
        n_train = [r["report"]["n_train"] for r in seeds.values()]
        body.append([f"`{c}`", _span(n_train), str(len(seeds)), *cells])
    lines += [*table(["training set", "train pairs", "seeds", *MODELS], body), ""]
    lines += [
        "Paired differences in test MRR (matched by seed): mean ± SE over seeds, and on how many "
        f"seeds the first is higher. {NOISE_RULE}",
        "",
    ]
    body = []
    for a, b in COMPARISONS:
        ps = {m: paired_diff(_diffs(runs, a, b, m)) for m in DIFF_MODELS}
        if any(ps.values()):
            body.append([f"`{a}` − `{b}`", *(diff_cell(ps[m]) for m in DIFF_MODELS),
                         verdict_cell(ps["cube"])])  # fmt: skip
    head = ["comparison", *(f"{m}" for m in DIFF_MODELS), "cube: verdict"]
    lines += table(head, body) if body else ["Fewer than two seeds match; no paired difference."]
    described = [r for r in set_rows if r.get("variant") == "sets" and r["seed"] in runs["noisy"]]
    if described:
        broken = sum(r["broken"] for r in described)
        caught = sum(r["caught_by_low_quality"] for r in described)
        lines += [
            "",
            f"Planted wrong answers among the lowest-quality 10% of the noisy train pairs: "
            f"{caught} of {broken} ({100 * caught / broken:.0f}%; a random 10% holds about 10%), "
            f"over {len(described)} seed{'' if len(described) == 1 else 's'} "
            f"(`{shown(SETS)}`).",
        ]
    return lines


def render(results: Path = RESULTS, sets: Path = SETS, md: Path = DOC) -> Path:
    """Rewrite the data_expand block of ``md`` from ``results`` and ``sets`` alone."""
    return render_into(md, {BLOCK: block(read_results(results), read_results(sets), results)})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.data_expand",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--drop", type=float, default=DROP, help="fraction of train pairs dropped")
    ap.add_argument("--sets", type=Path, default=SETS, help="the training-set descriptions")
    ap.add_argument("--md", type=Path, default=DOC, help="the doc whose block is rendered")
    add_run_args(ap, RESULTS, RUNS)
    args = ap.parse_args(argv)
    args.seed = args.seed or list(SEEDS)
    try:
        if not args.render_only:
            run(args)
            if args.dry_run or args.no_render:
                return 0
        print(f"wrote {render(args.results, args.sets, args.md)}")
    except CellcubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
