"""Tests for the built-in "tech" corpus: the team's curated technical Q&A (five domains)."""

from __future__ import annotations

import collections
import re
from importlib import resources

import pytest

from cellcube.config import DataConfig
from cellcube.data import BUILTIN_CORPORA, QAPair, load_builtin, split_pairs

DOMAINS = ("ai_ml", "computer_science", "programming", "data_science", "nlp")

# Abbreviations whose full stops do not end a sentence.
_ABBREVIATIONS = re.compile(r"\b(?:e\.g\.|i\.e\.|etc\.|vs\.|cf\.|approx\.|Dr\.|Mr\.|Ms\.)", re.I)
# A sentence ends at . ! or ? (possibly followed by a closing quote or bracket) that is followed
# by whitespace or the end of the text; "3.14", "x.y" or "MAJOR.MINOR" do not count.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def _sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(_ABBREVIATIONS.sub("ABBR", text)))


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def pairs() -> list[QAPair]:
    return load_builtin("tech")


def test_registered_and_shipped() -> None:
    assert "tech" in BUILTIN_CORPORA
    assert resources.files("cellcube").joinpath("data", "corpora", "tech_qa.jsonl").is_file()


def test_size_and_domains(pairs: list[QAPair]) -> None:
    assert len(pairs) >= 300
    counts = collections.Counter(p.domain for p in pairs)
    assert set(counts) == set(DOMAINS)
    assert all(counts[d] >= 50 for d in DOMAINS), counts
    assert all(p.origin.startswith("tech:") for p in pairs)
    assert len({p.origin for p in pairs}) == len(pairs)


def test_texts_non_empty_and_stripped(pairs: list[QAPair]) -> None:
    for p in pairs:
        for text in (p.question, p.answer):
            assert text and text == text.strip() and "\n" not in text, p.origin


def test_answers_and_questions_distinct(pairs: list[QAPair]) -> None:
    for field in ("answer", "question"):
        texts = [getattr(p, field) for p in pairs]
        assert len(set(texts)) == len(texts), f"duplicate {field}"
        normalised = [_normalise(t) for t in texts]
        dupes = [t for t, n in collections.Counter(normalised).items() if n > 1]
        assert not dupes, f"near-duplicate {field}s: {dupes}"


def test_answers_are_one_to_three_sentences(pairs: list[QAPair]) -> None:
    for p in pairs:
        assert p.answer[-1] in ".!?", p.origin
        assert 1 <= _sentences(p.answer) <= 3, (p.origin, p.answer)
        assert p.question.endswith("?") or _sentences(p.question) >= 1, p.origin


def test_answer_does_not_just_repeat_question(pairs: list[QAPair]) -> None:
    for p in pairs:
        assert _normalise(p.question) not in _normalise(p.answer), p.origin


def test_sentence_counter() -> None:
    assert _sentences("One. Two! Three?") == 3
    assert _sentences("Use tools, e.g. ruff, i.e. a linter. Version 3.12 works.") == 2
    assert _sentences("See MAJOR.MINOR.PATCH (semver).") == 1


def test_grouped_split(pairs: list[QAPair]) -> None:
    split = split_pairs(pairs, DataConfig(), 0)
    parts = (split.train, split.val, split.test)
    assert all(parts)
    assert sum(len(part) for part in parts) == len(pairs)
    answers = [{p.answer for p in part} for part in parts]
    assert not (answers[0] & answers[1] or answers[0] & answers[2] or answers[1] & answers[2])
    questions = [{p.question for p in part} for part in parts]
    assert not (questions[0] & questions[1] or questions[0] & questions[2])
    assert not questions[1] & questions[2]
    assert split_pairs(pairs, DataConfig(), 0) == split
    # The assignment does not depend on input order; domain labels survive the split.
    reversed_split = split_pairs(list(reversed(pairs)), DataConfig(), 0)
    assert {p.answer for p in reversed_split.test} == answers[2]
    assert {p.domain for p in split.test} <= set(DOMAINS)
