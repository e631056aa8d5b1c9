"""Expansion: template variants, teacher-guided selection (real MiniLM), quality, no leakage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cellcube.config import DataConfig, TeacherConfig
from cellcube.data import QAPair, load_builtin, read_path, split_dataset, split_pairs
from cellcube.data.expand import ExpandOptions, complexity, expand_pairs
from cellcube.data.quality import length_factor, quality_scores
from cellcube.data.variants import template_variants
from cellcube.embed.cache import EmbeddingCache, embed_texts
from cellcube.embed.teachers import load_teacher
from cellcube.errors import DataError

N = 24  # tech pairs used (real MiniLM on ~170 texts)


@pytest.fixture(scope="module")
def embed(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Real MiniLM through a real (per-module) SQLite cache: each text is encoded once."""
    teacher = load_teacher(TeacherConfig(model=str(minilm_dir)))
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache") / "cache.sqlite")
    yield lambda texts: embed_texts(teacher, texts, cache)
    cache.close()


@pytest.fixture(scope="module")
def tech_pairs() -> list[QAPair]:
    return load_builtin("tech")[:N]


@pytest.fixture(scope="module")
def expanded(tech_pairs, embed):
    return expand_pairs(tech_pairs, embed, ExpandOptions())


def test_template_variants_are_grammatical_rewrites() -> None:
    assert template_variants("What is gradient descent?") == [
        ("prefix", "Quick question: what is gradient descent?"),
        ("prefix", "I was wondering, what is gradient descent?"),
        ("prefix", "In simple terms, what is gradient descent?"),
        ("adverb", "What exactly is gradient descent?"),
        ("imperative", "Explain gradient descent."),
        ("imperative", "Tell me about gradient descent."),
        ("embedded", "Can you tell me what gradient descent is?"),
        ("wording", "What's gradient descent?"),
    ]
    texts = dict((t, s) for s, t in template_variants("How does attention work?"))
    assert texts["Explain how attention works."] == "imperative"
    assert texts["What is the mechanism behind attention?"] == "question word"
    texts = {t for _, t in template_variants("What's the difference between TCP and UDP?")}
    assert {"How do TCP and UDP differ?", "Compare TCP and UDP."} <= texts
    # A "What is X used for?" topic is a clause: no "Explain t-SNE used for." ...
    texts = {t for _, t in template_variants("What is t-SNE used for?")}
    assert "What are the uses of t-SNE?" in texts
    assert not any(t.startswith(("Explain", "Tell me")) for t in texts)
    # ... acronyms keep their case after a lead-in, and non-questions get no variants.
    assert ("prefix", "Quick question: BERT is what?") in template_variants("BERT is what?")
    assert template_variants("Hello there.") == []


def test_length_factor_and_complexity() -> None:
    assert length_factor("What is X?", "X is a thing we use.") == 1.0
    assert length_factor("What is X?", "Yes.") == pytest.approx(1 / 3)
    assert length_factor("Hi", "hi") == 0.0
    assert length_factor("q " * 80, "a b c d") == pytest.approx(0.5)
    assert complexity("What is X?", "X is small.") == round((3 / 60 + 3 / 25 + 1 / 8) / 3, 4)
    assert complexity("q " * 30, "x, " * 70) == 1.0


def test_quality_is_the_softmax_of_the_true_answer_times_length() -> None:
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    bank = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = quality_scores(
        q, np.array([0, 1]), bank, ["What is X?", "What is Y?"], ["X is it.", "No"], 1.0
    )
    p = math.e / (math.e + 1)
    assert out["relevance"] == pytest.approx([p, 1 - p])
    assert out["length_factor"] == pytest.approx([1.0, 1 / 3])  # a 1-word answer
    assert out["quality"] == pytest.approx([p, (1 - p) / 3])


def test_teacher_guided_selection_keeps_close_distinct_variants(
    tech_pairs, embed, expanded
) -> None:
    records, report = expanded
    opt = ExpandOptions()
    variants = [r for r in records if r["variant_of"] is not None]
    originals = [r for r in records if r["variant_of"] is None]
    assert [r["question"] for r in originals] == [p.question for p in tech_pairs]
    assert report.n_variants == len(variants) >= N  # more than one variant per source on average
    assert report.n_candidates == sum(len(template_variants(p.question)) for p in tech_pairs)
    assert sum(report.rejected.values()) + len(variants) <= report.n_candidates
    by_q = {p.question: p for p in tech_pairs}
    vq = embed([r["question"] for r in variants])
    sq = embed([r["variant_of"] for r in variants])
    sims = (vq * sq).sum(1)
    assert (sims >= opt.min_similarity).all() and (sims < opt.max_similarity).all()
    everything = embed([r["question"] for r in records])
    cross = everything @ everything.T - np.eye(len(records)) * 2
    assert cross.max() < opt.max_similarity  # no two kept questions are near-duplicates
    per_source = {}
    for r in variants:
        src = by_q[r["variant_of"]]
        assert (r["answer"], r["domain"]) == (src.answer, src.domain)
        assert r["source_id"] == next(
            o["source_id"] for o in originals if o["question"] == src.question
        )
        per_source[r["source_id"]] = per_source.get(r["source_id"], 0) + 1
    assert max(per_source.values()) <= opt.variants
    for r in records:
        assert 0 <= r["quality"] <= r["relevance"] <= 1 and 0 <= r["difficulty"] <= 1
        assert r["quality"] == pytest.approx(r["relevance"] * r["length_factor"], abs=1e-4)
        assert 0 <= r["complexity"] <= 1


def test_quality_measures_relevance(tech_pairs, embed) -> None:
    """True pairs score far above the same questions given a wrong (rotated) answer."""
    records, _ = expand_pairs(tech_pairs, embed, ExpandOptions(variants=0))
    wrong = [
        QAPair(p.question, tech_pairs[(i + 1) % N].answer, p.origin)
        for i, p in enumerate(tech_pairs)
    ]
    q = embed([p.question for p in tech_pairs])
    bank = embed(list(dict.fromkeys(p.answer for p in tech_pairs)))
    ids = np.array([(i + 1) % N for i in range(N)])
    rotated = quality_scores(q, ids, bank, [p.question for p in wrong], [p.answer for p in wrong])
    true_q = np.array([r["quality"] for r in records])
    assert np.median(true_q) > 0.3 and np.median(rotated["quality"]) < 0.05
    assert (true_q > rotated["quality"]).mean() >= 0.75  # 19 of 24; neighbours share topics


def test_min_quality_filters_pairs_and_takes_variants_along(tech_pairs, embed, expanded) -> None:
    records, _ = expanded
    threshold = float(np.median([r["quality"] for r in records if r["variant_of"] is None]))
    kept, report = expand_pairs(tech_pairs, embed, ExpandOptions(min_quality=threshold))
    assert all(r["quality"] >= threshold for r in kept)
    assert report.n_below_quality == len(records) - len(kept) > 0
    originals = {r["question"] for r in kept if r["variant_of"] is None}
    assert 0 < len(originals) < N
    assert all(r["variant_of"] in originals for r in kept if r["variant_of"] is not None)


def test_near_duplicate_originals_are_removed(embed) -> None:
    pairs = [
        QAPair("What is gradient descent?", "An iterative optimisation method.", "f:1"),
        QAPair("what is gradient descent ?", "An iterative optimisation method!", "f:2"),
        QAPair("What is a hash table?", "A map from keys to values using a hash.", "f:3"),
    ]
    records, report = expand_pairs(pairs, embed, ExpandOptions(variants=0))
    assert [r["question"] for r in records] == [pairs[0].question, pairs[2].question]
    assert report.n_duplicate_originals == 1
    with pytest.raises(DataError, match="min_similarity < max_similarity"):
        ExpandOptions(min_similarity=0.9, max_similarity=0.8)


def _write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_no_leakage_variants_follow_their_source_and_test_is_original_only(
    tmp_path: Path, tech_pairs, expanded
) -> None:
    records, _ = expanded
    pairs, _ = read_path(_write_records(tmp_path / "exp.jsonl", records))
    assert sum(p.variant_of is not None for p in pairs) == sum(
        r["variant_of"] is not None for r in records
    )
    for seed in range(5):
        split, dropped = split_dataset(pairs, DataConfig(), seed)
        alone = split_pairs(tech_pairs, DataConfig(), seed)
        # the held-out splits are exactly those of the original data, original pairs only
        texts = lambda ps: [(p.question, p.answer) for p in ps]  # noqa: E731
        assert texts(split.test) == texts(alone.test) and texts(split.val) == texts(alone.val)
        assert all(p.variant_of is None for p in (*split.val, *split.test))
        train_q = {p.question for p in split.train if p.variant_of is None}
        assert all(p.variant_of in train_q for p in split.train if p.variant_of is not None)
        held = {t for p in (*split.val, *split.test) for t in (p.question, p.answer)}
        assert not held & {t for p in split.train for t in (p.question, p.answer)}
        held_sources = {p.question for p in (*split.val, *split.test)}
        n_held_variants = sum(r["variant_of"] in held_sources for r in records)
        assert dropped == n_held_variants > 0
        assert (
            len(split.train)
            == len(alone.train)
            + sum(r["variant_of"] is not None for r in records)
            - n_held_variants
        )


def test_pinned_splits(tmp_path: Path) -> None:
    recs = [
        {"question": "q0", "answer": "a0", "split": "train"},
        {"question": "q0 again?", "answer": "a0", "variant_of": "q0", "split": "test"},
        {"question": "q1", "answer": "a1", "split": "val"},
        {"question": "q1 again?", "answer": "a1", "variant_of": "q1"},
        {"question": "q2", "answer": "a2", "split": "test"},
    ]
    pairs, _ = read_path(_write_records(tmp_path / "p.jsonl", recs))
    split, dropped = split_dataset(pairs, DataConfig(), 0)
    assert [p.question for p in split.train] == ["q0", "q0 again?"]  # the variant's pin is ignored
    assert ([p.question for p in split.val], [p.question for p in split.test]) == (["q1"], ["q2"])
    assert dropped == 1
    del recs[2]["split"]
    pairs, _ = read_path(_write_records(tmp_path / "p.jsonl", recs))
    with pytest.raises(DataError, match=r"^p\.jsonl:3: no 'split' but other pairs pin theirs"):
        split_dataset(pairs, DataConfig(), 0)
    recs[2]["split"] = "train"
    pairs, _ = read_path(_write_records(tmp_path / "p.jsonl", recs))
    with pytest.raises(DataError, match="leave 'val' empty"):
        split_dataset(pairs, DataConfig(), 0)
