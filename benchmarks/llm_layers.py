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

    python -m benchmarks.llm_layers --corpus chatterbot --corpus zaragoza --layers 0:31:3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cellcube.config import Config, TeacherConfig, load_config
from cellcube.data.records import Split
from cellcube.data.split import split_dataset
from cellcube.embed.encode import open_cache
from cellcube.embed.splits import embed_splits
from cellcube.embed.teachers import load_teacher
from cellcube.eval.metrics import retrieval_metrics
from cellcube.run.pipeline import read_pairs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "multi_teacher.yaml"


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


def table(results: dict[str, dict[int, float]]) -> str:
    """Markdown: validation MRR per layer and corpus, and the mean over corpora."""
    corpora = list(results)
    lines = [
        "| layer | " + " | ".join(f"{c} val MRR" for c in corpora) + " | mean |",
        "|---|" + "---|" * (len(corpora) + 1),
    ]
    for layer in results[corpora[0]]:
        vals = [results[c][layer] for c in corpora]
        cells = " | ".join(f"{v:.3f}" for v in vals)
        lines.append(f"| {layer} | {cells} | {sum(vals) / len(vals):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--teacher", default="smollm2", help="label of the teachers.others entry")
    ap.add_argument("--layers", default="0:31:3", help="a range 'start:stop:step' or '3,6,9'")
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    layers = parse_layers(args.layers)
    results = {}
    for corpus in args.corpus or ["zaragoza", "chatterbot"]:
        overrides = [f"data.corpus={corpus}", f"seed={args.seed}", *args.set]
        results[corpus] = layer_scores(load_config(args.config, overrides), args.teacher, layers)
        print(f"{corpus}: {results[corpus]}", flush=True)
    print(table(results))
    mean = {n: sum(r[n] for r in results.values()) / len(results) for n in layers}
    print(f"best layer on validation (mean MRR): {max(mean, key=mean.__getitem__)}")


if __name__ == "__main__":
    main()
