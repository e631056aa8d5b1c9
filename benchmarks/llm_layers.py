"""Which hidden layer of an LLM teacher makes the best embedding? Chosen on validation, on the
training code path.

For every corpus, the pairs are read and split exactly as ``cellcube train`` splits them. The
candidate teacher is one entry of ``teachers.others`` in ``--config`` (default: the ``smollm2``
entry of ``configs/multi_teacher.yaml``, with its ``max_length``, pooling and ``standardize``),
with ``layer: N`` for each candidate ``N``. Every layer's embeddings are the ones training would
use with ``layer: N``: :meth:`cellcube.embed.teachers.Teacher.encode_layers` computes all
candidates in one forward pass per batch (equal, bit for bit, to ``encode`` with ``layer: N``:
``tests/test_multiteacher.py``) and stores them in the SQLite embedding cache under each
``layer: N`` teacher's identity; :func:`cellcube.embed.splits.embed_splits`, the function training
calls, then reads them back and z-scores them with train statistics. The score is the teacher's
own identity retrieval on the VALIDATION split (each question ranks all distinct validation
answers). The test split is never embedded or read.

Every (corpus, layer) score appends one line to ``benchmarks/llm_layers/results.jsonl``
(resumable: the layers already there are skipped); ``--render-only`` rewrites the table of
``docs/multi_teacher.md`` between ``<!-- bench:llm_layers:begin -->`` and
``<!-- bench:llm_layers:end -->`` from that file alone::

    python -m benchmarks.llm_layers                  # zaragoza, chatterbot; layers 0:31:3, 4,5,7,8
    python -m benchmarks.llm_layers --render-only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.doc_tables import provenance, render_into, todo
from benchmarks.study import git_commit
from benchmarks.study_plans import Run, Variant
from benchmarks.study_results import KEY_FIELDS, ROOT, append_result, read_results, row_key
from benchmarks.study_stats import num
from benchmarks.study_tables import shown, table
from cellcube.config import Config, TeacherConfig, load_config
from cellcube.data.records import Split
from cellcube.data.split import split_dataset
from cellcube.embed.encode import open_cache
from cellcube.embed.splits import embed_splits
from cellcube.embed.teachers import load_teacher
from cellcube.errors import CellcubeError
from cellcube.eval.metrics import retrieval_metrics
from cellcube.run.pipeline import read_pairs

CONFIG = ROOT / "configs" / "multi_teacher.yaml"
CORPORA = ("zaragoza", "chatterbot")
LAYERS = (0, 3, 4, 5, 6, 7, 8, 9, 12, 15, 18, 21, 24, 27, 30)
RESULTS = ROOT / "benchmarks" / "llm_layers" / "results.jsonl"
DOC = ROOT / "docs" / "multi_teacher.md"
BLOCK = "llm_layers"
RUN_COMMAND = "python -m benchmarks.llm_layers"
RENDER_COMMAND = "python -m benchmarks.llm_layers --render-only"


def with_layer(cfg: Config, label: str, layer: int) -> Config:
    """``cfg`` with ``label`` as its only other teacher, set to ``layer``."""
    entry = next((t for t in cfg.teachers.others if t.label == label), None)
    if entry is None:
        raise SystemExit(f"{label!r} is not a teacher of teachers.others in the config")
    teachers = cfg.teachers.model_copy(
        update={"others": [entry.model_copy(update={"layer": layer})], "weights": None}
    )
    return cfg.model_copy(update={"teachers": teachers})


def train_val_split(cfg: Config) -> Split:
    """The run's split, as ``cellcube train`` makes it, without its test part."""
    split, _ = split_dataset(read_pairs(cfg), cfg.data, cfg.seed)
    return Split(split.train, split.val, [])


def fill_cache(cfg: Config, entries: dict[int, TeacherConfig], texts: list[str]) -> int:
    """Store every layer's embeddings of ``texts`` in the cache (one forward pass per batch for
    all layers still missing a text); returns how many texts had to be embedded."""
    teachers = {n: load_teacher(t) for n, t in entries.items()}
    cache = open_cache(cfg)
    if cache is None:
        raise SystemExit("cache.enabled must be true (the layers go through the embedding cache)")
    with cache:
        missing = {
            n: {
                t
                for t, v in zip(texts, cache.get_many(teacher.identity, texts), strict=True)
                if v is None
            }
            for n, teacher in teachers.items()
        }
        todo = [t for t in texts if any(t in m for m in missing.values())]
        layers = [n for n, m in missing.items() if m]
        if todo:
            first = teachers[layers[0]]
            for n, vectors in first.encode_layers(todo, layers, progress=True).items():
                cache.put_many(teachers[n].identity, todo, vectors)
    return len(todo)


def layer_scores(cfg: Config, label: str, layers: list[int]) -> dict[int, float]:
    """Validation MRR of the teacher ``label`` at each of ``layers``, as training embeds it."""
    split = train_val_split(cfg)
    configs = {n: with_layer(cfg, label, n) for n in layers}
    texts = list(
        dict.fromkeys(t for p in [*split.train, *split.val] for t in (p.question, p.answer))
    )
    fill_cache(cfg, {n: c.teachers.others[0] for n, c in configs.items()}, texts)
    scores = {}
    for n, layer_cfg in configs.items():
        val = embed_splits(layer_cfg, split, progress=False)["val"]
        view = val.views[label]
        scores[n] = retrieval_metrics(view.q, val.answer_ids, view.candidates)["mrr"]
    return scores


def parse_layers(text: str) -> list[int]:
    """``"0:31:3"`` (a Python range) or ``"3,6,9"``."""
    if ":" in text:
        return list(range(*(int(x) for x in text.split(":"))))
    return [int(x) for x in text.split(",")]


def plan(corpora: Sequence[str], seed: int, label: str, layers: Sequence[int], sets: Sequence[str]):
    """The (corpus, layer) scores to measure, keyed like study runs (variant ``LABEL_layerN``)."""
    return [
        Run("llm_layers", corpus, seed, Variant(f"{label}_layer{n}", tuple(sets)))
        for corpus in corpora
        for n in layers
    ]


def measure(args: argparse.Namespace) -> None:
    """Score the layers the results file lacks, one corpus at a time; one row per layer."""
    runs = todo(plan(args.corpus, args.seed, args.teacher, args.layers, args.set), args.results)
    commit, dirty = git_commit()
    for corpus in dict.fromkeys(r.corpus for r in runs):
        mine = [r for r in runs if r.corpus == corpus]
        layers = [int(r.variant.name.rsplit("layer", 1)[1]) for r in mine]
        overrides = [f"data.corpus={corpus}", f"seed={args.seed}", *args.set]
        scores = layer_scores(load_config(args.config, overrides), args.teacher, layers)
        for run, n in zip(mine, layers, strict=True):
            row = dict(zip(KEY_FIELDS, run.key, strict=True))
            row |= {
                "teacher": args.teacher,
                "layer": n,
                "val_mrr": scores[n],
                "commit": commit,
                "dirty": dirty,
                "overrides": list(args.set),
                "base_config": shown(args.config),
            }
            append_result(args.results, row)
        print(f"{corpus}: {scores}", flush=True)


def block(rows: list[dict[str, Any]], results: Path) -> list[str]:
    """The markdown between the llm_layers markers: validation MRR per layer and corpus (the
    default plan's seed and teacher), their mean, and the best mean."""
    scores: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.get("teacher") == "smollm2" and r["seed"] == 0 and not r.get("overrides"):
            scores.setdefault(r["corpus"], {}).setdefault(r["layer"], r["val_mrr"])
    planned = {r.key for r in plan(CORPORA, 0, "smollm2", LAYERS, [])}
    done = len(planned & {row_key(r) for r in rows})
    lines = [provenance(RENDER_COMMAND, results, done, len(planned), RUN_COMMAND), ""]
    corpora = sorted(scores)
    layers = sorted(set.intersection(*(set(v) for v in scores.values()))) if scores else []
    if not layers:
        return [*lines, f"No layer is scored on every corpus in `{shown(results)}` yet."]
    mean = {n: statistics.fmean(scores[c][n] for c in corpora) for n in layers}
    body = [[c, *(num(scores[c][n]) for n in layers)] for c in corpora]
    body.append(["mean", *(num(mean[n]) for n in layers)])
    best = max(layers, key=mean.__getitem__)
    return [
        *lines,
        "Validation MRR of SmolLM2's own identity retrieval by layer (seed 0; 0 = token "
        "embeddings, 30 = last block):",
        "",
        *table(["layer", *map(str, layers)], body),
        "",
        f"Best mean: layer {best} ({num(mean[best])}).",
    ]


def render(results: Path = RESULTS, md: Path = DOC) -> Path:
    """Rewrite the llm_layers block of ``md`` from ``results`` alone."""
    return render_into(md, {BLOCK: block(read_results(results), results)})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.llm_layers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--teacher", default="smollm2", help="label of the teachers.others entry")
    ap.add_argument(
        "--layers",
        type=parse_layers,
        default=LAYERS,
        help="a range 'start:stop:step' or '3,6,9' (default: 0:31:3 and 4,5,7,8)",
    )
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    ap.add_argument("--md", type=Path, default=DOC, help="the doc whose block is rendered")
    ap.add_argument("--render-only", action="store_true", help="only render the doc table")
    args = ap.parse_args(argv)
    args.corpus = args.corpus or list(CORPORA)
    try:
        if not args.render_only:
            measure(args)
        print(f"wrote {render(args.results, args.md)}")
    except CellcubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
