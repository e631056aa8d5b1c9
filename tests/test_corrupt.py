"""Seeded text corruption (cellcube.data.corrupt): rates, seeding, edge cases, augmentation and
denoising pairs, and the config keys that name corruptions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellcube.config import DataConfig, load_config
from cellcube.data import QAPair, load_builtin, split_pairs
from cellcube.data.corrupt import (
    Corruption,
    augment_pairs,
    corrupt_texts,
    denoise_pairs,
    drop_words,
    typos,
)
from cellcube.errors import ConfigError


@pytest.fixture(scope="module")
def questions() -> list[str]:
    """The 329 distinct questions of the built-in tech corpus (real text, 5-20 words each)."""
    return list(dict.fromkeys(p.question for p in load_builtin("tech")))


def _osa(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    adjacent characters, each 1."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _eligible(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2])
def test_typo_rate_holds(questions: list[str], rate: float) -> None:
    """Over the corpus the edit distance per eligible character is the rate (within 5%), and no
    text is edited at more than ceil(rate * n) positions (each edit costs at most 2 in
    optimal-string-alignment distance even where two edits touch)."""
    out = corrupt_texts(questions, Corruption("typo", rate), seed=0)
    dist = [_osa(a, b) for a, b in zip(questions, out, strict=True)]
    realised = sum(dist) / sum(_eligible(q) for q in questions)
    assert realised == pytest.approx(rate, rel=0.05)
    for q, d in zip(questions, dist, strict=True):
        assert d <= 2 * math.ceil(rate * _eligible(q))
    assert sum(a != b for a, b in zip(questions, out, strict=True)) > 0.9 * len(questions)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3])
def test_drop_rate_holds(questions: list[str], rate: float) -> None:
    """Each text loses floor(rate * n) or ceil(rate * n) of its n words, the rest in order, and
    over the corpus the share of words dropped is the rate (within 5%)."""
    out = corrupt_texts(questions, Corruption("drop", rate), seed=0)
    lost = 0
    for q, o in zip(questions, out, strict=True):
        words, kept = q.split(), o.split()
        k = len(words) - len(kept)
        assert math.floor(rate * len(words)) <= k <= math.ceil(rate * len(words))
        it = iter(words)
        assert all(w in it for w in kept)  # a subsequence: order kept, nothing new
        lost += k
    assert lost / sum(len(q.split()) for q in questions) == pytest.approx(rate, rel=0.05)


def test_same_seed_same_output_and_order_does_not_matter(questions: list[str]) -> None:
    for c in (Corruption("typo", 0.1), Corruption("drop", 0.2)):
        a = corrupt_texts(questions, c, seed=3)
        assert corrupt_texts(questions, c, seed=3) == a
        assert corrupt_texts(questions[::-1], c, seed=3) == a[::-1]
        other = corrupt_texts(questions, c, seed=4)
        assert sum(x != y for x, y in zip(a, other, strict=True)) > len(questions) // 2


def test_short_and_empty_texts() -> None:
    """Empty and blank texts come back unchanged; a one-word text keeps its word; a text with
    one letter is never emptied."""
    rng = np.random.default_rng(0)
    for text in ("", "   ", "?!"):
        assert typos(text, 0.2, rng) == text
        assert drop_words(text, 0.3, rng) == text
    assert all(drop_words("Hello?", 0.9, np.random.default_rng(s)) == "Hello?" for s in range(50))
    assert all(typos("A", 0.9, np.random.default_rng(s)).strip() for s in range(200))
    two = {drop_words("Hello there", 0.9, np.random.default_rng(s)) for s in range(50)}
    assert two == {"Hello", "there"}


def test_typos_are_keyboard_neighbours() -> None:
    """A substituted or inserted character is a QWERTY neighbour of the one it replaces/follows:
    'a' at rate 0.9 becomes one of q w s z x (or is deleted-then-substituted, swapped)."""
    seen = {typos("a", 0.9, np.random.default_rng(s)) for s in range(200)}
    assert seen <= {"a", *"qwszx", *("a" + k for k in "qwszx")}
    assert len(seen) > 5


def test_parse_and_config_keys() -> None:
    assert str(Corruption.parse(" typo:.050 ")) == "typo:0.05"
    assert Corruption.parse("drop:0.3") == Corruption("drop", 0.3)
    for bad in ("typo", "typos:0.1", "drop:0", "drop:1", "typo:x", "typo:nan"):
        with pytest.raises(ValueError):
            Corruption.parse(bad)
    cfg = load_config(None, ["eval.robustness=[typo:.05,drop:0.10]", "train.augment=[typo:0.1]"])
    assert cfg.eval.robustness == ["typo:0.05", "drop:0.1"]
    assert cfg.train.augment == ["typo:0.1"]
    with pytest.raises(ConfigError, match=r"eval\.robustness: 'typo:2'"):
        load_config(None, ["eval.robustness=[typo:2]"])
    with pytest.raises(ConfigError, match=r"data\.denoise: mode denoise needs"):
        load_config(None, ["mode=denoise", "data.denoise=[]"])


def test_augment_pairs() -> None:
    """One corrupted copy per pair and corruption: same answer, ``variant_of`` the source;
    unchanged copies and copies equal to a held-out text are left out."""
    train = [
        QAPair("How do I reset my password quickly?", "Use the link.", "f:1", split="train"),
        QAPair("Hi", "Hello.", "f:2"),  # one word: word dropout leaves it as it is
    ]
    out = augment_pairs(train, [Corruption("drop", 0.3), Corruption("typo", 0.2)], seed=0)
    long = [p for p in out if p.variant_of == train[0].question]
    assert len(long) == 2 and {p.answer for p in long} == {"Use the link."}
    assert all(p.question != p.variant_of for p in out)
    assert len(out) - len(long) <= 1  # "Hi": a typo copy at most
    assert long[0].origin == "f:1" and long[0].split == "train"
    assert augment_pairs(train, [Corruption("drop", 0.3)], seed=0) == long[:1]
    held = augment_pairs(train, [Corruption("drop", 0.3)], seed=0, held_out={long[0].question})
    assert held == []


def test_denoise_pairs_map_each_input_to_one_clean_text() -> None:
    """Every text (questions and answers) gets its corrupted versions as inputs; no input is a
    clean text or the version of two texts; a split of these pairs keeps every clean text and
    its versions in one split."""
    pairs = load_builtin("zaragoza")[:150]
    out = denoise_pairs(pairs, [Corruption("typo", 0.1), Corruption("drop", 0.2)], seed=0)
    clean = {t for p in pairs for t in (p.question, p.answer)}
    assert {p.answer for p in out} <= clean
    assert len({p.answer for p in out}) > 0.9 * len(clean)
    assert not {p.question for p in out} & clean
    targets: dict[str, set[str]] = {}
    for p in out:
        targets.setdefault(p.question, set()).add(p.answer)
    assert all(len(t) == 1 for t in targets.values())
    split = split_pairs(out, DataConfig(), seed=0)
    where = {p.answer: name for name in ("train", "val", "test") for p in getattr(split, name)}
    for name in ("train", "val", "test"):
        assert all(where[p.answer] == name for p in getattr(split, name))


def test_denoise_pairs_keep_pins() -> None:
    pinned = [
        QAPair("What is a list?", "An ordered collection.", "f:1", split="test"),
        QAPair("What is a set?", "An unordered collection.", "f:2", split="train"),
    ]
    out = denoise_pairs(pinned, [Corruption("typo", 0.2)], seed=0)
    assert {(p.answer, p.split) for p in out} == {
        ("What is a list?", "test"),
        ("An ordered collection.", "test"),
        ("What is a set?", "train"),
        ("An unordered collection.", "train"),
    }
