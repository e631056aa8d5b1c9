"""The leak-free split on the real built-in corpora: no question text and no answer text in two
splits, over several seeds, folds and pinned files; and what it changed against the former
answer-grouped split.

Run as a script to print the change per built-in corpus (the numbers the README quotes)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_split_leaks.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cellcube.config import DataConfig
from cellcube.data import (
    BUILTIN_CORPORA,
    QAPair,
    Split,
    groups,
    load_builtin,
    read_path,
    split_dataset,
    split_pairs,
)
from cellcube.errors import DataError

SEEDS = range(5)


def _parts(split: Split) -> tuple[list[QAPair], list[QAPair], list[QAPair]]:
    return split.train, split.val, split.test


def shared_texts(split: Split) -> dict[str, int]:
    """How many distinct question texts and answer texts occur in more than one split."""
    out = {}
    for kind in ("question", "answer"):
        seen: dict[str, set[int]] = {}
        for index, part in enumerate(_parts(split)):
            for pair in part:
                seen.setdefault(getattr(pair, kind), set()).add(index)
        out[kind] = sum(len(splits) > 1 for splits in seen.values())
    return out


def answer_grouped_split(pairs: Sequence[QAPair], seed: int) -> Split:
    """The split cellcube made before the leak-free one (default fractions, no folds): distinct
    answers sorted, shuffled with the seed, 20% of them to test, 10% to val, whole."""
    answers = sorted({p.answer for p in pairs})
    n = len(answers)
    n_test, n_val = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    shuffled = [answers[i] for i in np.random.default_rng(seed).permutation(n)]
    test, val = set(shuffled[:n_test]), set(shuffled[n_test : n_test + n_val])
    return Split(
        train=[p for p in pairs if p.answer not in test | val],
        val=[p for p in pairs if p.answer in val],
        test=[p for p in pairs if p.answer in test],
    )


def change(name: str, seed: int = 0) -> dict[str, int]:
    """What the leak-free split changed on built-in corpus ``name`` (default fractions)."""
    pairs = load_builtin(name)
    old, new = answer_grouped_split(pairs, seed), split_pairs(pairs, DataConfig(), seed)
    where_old = {p: i for i, part in enumerate(_parts(old)) for p in part}
    where_new = {p: i for i, part in enumerate(_parts(new)) for p in part}
    old_train_questions = {p.question for p in old.train}
    return {
        "pairs": len(pairs),
        "groups": len(groups(pairs)),
        "moved": sum(where_old[p] != where_new[p] for p in pairs),
        "old_test": len(old.test),
        "old_test_question_in_train": sum(p.question in old_train_questions for p in old.test),
        "old_shared_questions": shared_texts(old)["question"],
        "new_train": len(new.train),
        "new_val": len(new.val),
        "new_test": len(new.test),
        "new_shared_questions": shared_texts(new)["question"],
        "new_shared_answers": shared_texts(new)["answer"],
    }


# ---------------------------------------------------------------------------- the property


@pytest.fixture(scope="module", params=BUILTIN_CORPORA)
def corpus(request: pytest.FixtureRequest) -> tuple[str, list[QAPair]]:
    return request.param, load_builtin(request.param)


def test_every_builtin_corpus_is_covered() -> None:
    assert set(BUILTIN_CORPORA) == {"chatterbot", "zaragoza", "tech", "chitchat"}


def test_no_text_in_two_splits_on_real_corpora(corpus: tuple[str, list[QAPair]]) -> None:
    name, pairs = corpus
    largest = max(map(len, groups(pairs)))
    for seed in SEEDS:
        result = split_pairs(pairs, DataConfig(), seed)
        assert shared_texts(result) == {"question": 0, "answer": 0}, (name, seed)
        assert all(_parts(result)), (name, seed)
        assert sum(map(len, _parts(result))) == len(pairs)
        # the fractions count pairs: each held-out split is within one group of its target
        assert abs(len(result.test) - 0.2 * len(pairs)) < largest + 1, (name, seed)
        assert abs(len(result.val) - 0.1 * len(pairs)) < largest + 1, (name, seed)


def test_deterministic_and_independent_of_input_order(corpus: tuple[str, list[QAPair]]) -> None:
    name, pairs = corpus
    shuffled = list(pairs)
    random.Random(5).shuffle(shuffled)
    for seed in (0, 3):
        result = split_pairs(pairs, DataConfig(), seed)
        assert split_pairs(pairs, DataConfig(), seed) == result
        for other in (
            split_pairs(shuffled, DataConfig(), seed),
            split_pairs(pairs[::-1], DataConfig(), seed),
        ):
            for mine, theirs in zip(_parts(result), _parts(other), strict=True):
                assert set(mine) == set(theirs), (name, seed)
    assert split_pairs(pairs, DataConfig(), 0).test != split_pairs(pairs, DataConfig(), 1).test


def test_folds_are_leak_free_and_partition_the_rest(corpus: tuple[str, list[QAPair]]) -> None:
    name, pairs = corpus
    plain = split_pairs(pairs, DataConfig(), 2)
    folds = [split_pairs(pairs, DataConfig(folds=5, fold=k), 2) for k in range(5)]
    for result in folds:
        assert result.test == plain.test, name
        assert shared_texts(result) == {"question": 0, "answer": 0}, name
        assert result.val and result.train
    vals = [set(result.val) for result in folds]
    assert sum(map(len, vals)) == len(set().union(*vals)) == len(plain.train) + len(plain.val)
    sizes = [len(v) for v in vals]
    largest = max(map(len, groups(pairs)))
    assert max(sizes) - min(sizes) <= 2 * largest, (name, sizes)  # (nearly) equal, in pairs


# ---------------------------------------------------------------------------- groups


def test_groups_follow_chains_of_shared_questions_and_answers() -> None:
    pairs = [
        QAPair("q1", "a1", "f:1"),
        QAPair("q2", "a2", "f:2"),
        QAPair("q1", "a3", "f:3"),  # shares q1 with f:1
        QAPair("q4", "a3", "f:4"),  # shares a3 with f:3, so joins f:1 too
        QAPair("a1", "q1", "f:5"),  # the texts swapped: a question is not an answer
    ]
    assert [[p.origin for p in g] for g in groups(pairs)] == [
        ["f:1", "f:3", "f:4"],
        ["f:2"],
        ["f:5"],
    ]
    assert groups(pairs[::-1]) == [g[::-1] for g in groups(pairs)]


def test_a_chain_never_straddles_two_splits() -> None:
    # 30 chains of 4 pairs: q_i -> a_i, q_i -> b_i, r_i -> b_i, r_i -> c_i
    pairs = [
        QAPair(q, a, f"f:{i}:{j}")
        for i in range(30)
        for j, (q, a) in enumerate(
            [(f"q{i}", f"a{i}"), (f"q{i}", f"b{i}"), (f"r{i}", f"b{i}"), (f"r{i}", f"c{i}")]
        )
    ]
    for seed in SEEDS:
        result = split_pairs(pairs, DataConfig(), seed)
        assert (len(result.train), len(result.val), len(result.test)) == (84, 12, 24)
        for part in _parts(result):
            chains = {p.origin.split(":")[1] for p in part}
            assert sum(p.origin.split(":")[1] in chains for p in pairs) == len(part)


def test_too_few_groups() -> None:
    pairs = [QAPair("q", f"a{i}", f"f:{i}") for i in range(10)] + [QAPair("x", "y", "f:x")]
    with pytest.raises(DataError, match=r"^need at least 3 groups .* to split, got 2$"):
        split_pairs(pairs, DataConfig(), 0)


# ---------------------------------------------------------------------------- pinned splits


def _jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_pinned_splits_that_share_a_text_are_one_line_naming_both(tmp_path: Path) -> None:
    base = [
        {"question": "What is AI?", "answer": "A field.", "split": "train"},
        {"question": "Hi?", "answer": "Hello.", "split": "val"},
        {"question": "Bye?", "answer": "See you.", "split": "test"},
    ]
    path = _jsonl(tmp_path / "p.jsonl", *base)
    split, _ = split_dataset(read_path(path)[0], DataConfig(), 0)
    assert [len(part) for part in _parts(split)] == [1, 1, 1]

    leak = {"question": "What is AI?", "answer": "Machines that think.", "split": "test"}
    path = _jsonl(tmp_path / "p.jsonl", *base, leak)
    with pytest.raises(DataError) as info:
        split_dataset(read_path(path)[0], DataConfig(), 0)
    assert str(info.value) == (
        "p.jsonl:1 (train) and p.jsonl:4 (test) share the question 'What is AI?': a text may be "
        "in one split only"
    )
    # through a chain: f:5 shares its answer with f:4, whose question is f:1's
    chained = {"question": "Tell me about AI?", "answer": "Machines that think.", "split": "val"}
    leak["split"] = "train"
    path = _jsonl(tmp_path / "p.jsonl", *base, leak, chained)
    with pytest.raises(
        DataError,
        match=r"p\.jsonl:4 \(train\) and .*p\.jsonl:5 \(val\) share the "
        r"answer 'Machines that think\.'",
    ):
        split_dataset(read_path(path)[0], DataConfig(), 0)


def test_a_run_split_pinned_back_is_accepted_on_every_corpus(
    corpus: tuple[str, list[QAPair]],
) -> None:
    name, pairs = corpus
    result = split_pairs(pairs, DataConfig(), 4)
    pinned = [
        QAPair(p.question, p.answer, p.origin, split=part_name)
        for part_name, part in zip(("train", "val", "test"), _parts(result), strict=True)
        for p in part
    ]
    again, dropped = split_dataset(pinned, DataConfig(), 0)
    assert dropped == 0
    assert [len(part) for part in _parts(again)] == [len(part) for part in _parts(result)], name


# ---------------------------------------------------------------------------- what changed


# seed 0, default fractions: (pairs moved to another split, old test pairs, of which with their
# question text in the old train split); the README quotes these numbers
CHANGE_SEED_0 = {
    "chatterbot": (261, 237, 46),
    "zaragoza": (2, 101, 0),
    "tech": (0, 66, 0),
    "chitchat": (1414, 4786, 196),
}


def test_the_change_against_the_answer_grouped_split(corpus: tuple[str, list[QAPair]]) -> None:
    """The issue's count: the answer-grouped split had 46 of 237 chatterbot test questions in
    train too (seed 0); the leak-free split has none and moves few pairs where nothing leaked."""
    name, _ = corpus
    got = change(name, 0)
    assert (got["moved"], got["old_test"], got["old_test_question_in_train"]) == CHANGE_SEED_0[name]
    assert got["new_shared_questions"] == got["new_shared_answers"] == 0
    assert (got["old_shared_questions"] > 0) == (name in ("chatterbot", "zaragoza", "chitchat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    print(f"seed {seed}, default fractions (val 0.1, test 0.2); old = answer-grouped split")
    for name in BUILTIN_CORPORA:
        print(name, json.dumps(change(name, seed)))


if __name__ == "__main__":
    main()
