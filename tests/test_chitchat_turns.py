"""The chitchat corpus with every turn pair (``data.chitchat_turns=all``) and its message bank."""

from __future__ import annotations

import pytest

from cellcube.config import load_config
from cellcube.data import load_builtin
from cellcube.data.chitchat import chitchat_messages, chitchat_pairs
from cellcube.data.corpora import load_builtin_bank
from cellcube.errors import DataError
from cellcube.run.pipeline import read_pairs


def _said(*texts: object) -> list[dict[str, object]]:
    return [{"sender": "x", "text": t} for t in texts]


CONVERSATION = {
    "messages": [
        _said("Hi there!", "How  are you?"),
        _said("Fine."),
        _said("Good."),
        _said(" ", 7),  # no text: breaks the chain
        _said("Do you ski?"),
        _said("Yes.", "Often."),
    ]
}


def test_all_turns_pairs_every_two_consecutive_non_empty_turns() -> None:
    pairs = chitchat_pairs([("c", CONVERSATION), ("d", {"no": "messages"})], turns="all")
    assert [(p.question, p.answer, p.origin) for p in pairs] == [
        ("Hi there! How are you?", "Fine.", "chitchat:c:0"),
        ("Fine.", "Good.", "chitchat:c:1"),
        ("Do you ski?", "Yes. Often.", "chitchat:c:4"),
    ]
    # the question rule keeps only "?" turns with >= 3 words and a reply with >= 3 words
    assert chitchat_pairs([("c", CONVERSATION)]) == []
    with pytest.raises(ValueError, match="turns"):
        chitchat_pairs([("c", CONVERSATION)], turns="some")


def test_messages_are_the_distinct_utterances_in_order() -> None:
    again = {"messages": [_said("Fine.", "New  one")]}
    assert chitchat_messages([("c", CONVERSATION), ("d", again), ("e", [])]) == [
        "Hi there!",
        "How are you?",
        "Fine.",
        "Good.",
        "Do you ski?",
        "Yes.",
        "Often.",
        "New one",
    ]


def test_builtin_all_turns_corpus_and_message_bank() -> None:
    every = load_builtin("chitchat", chitchat_turns="all")
    questions = load_builtin("chitchat")
    assert len(every) == 131_368 and len(questions) == 23_911
    assert len({(p.question, p.answer) for p in every}) == len(every)  # duplicates dropped
    assert {(p.question, p.answer) for p in questions} <= {(p.question, p.answer) for p in every}
    assert all(p.question and p.answer for p in every)
    assert load_builtin("zaragoza", chitchat_turns="all") == load_builtin("zaragoza")
    bank = load_builtin_bank("chitchat")
    assert len(bank) == len(set(bank)) == 223_013
    assert all(m == " ".join(m.split()) and m for m in bank)
    with pytest.raises(DataError, match="unknown built-in bank 'faq'"):
        load_builtin_bank("faq")
    with pytest.raises(DataError, match="chitchat_turns"):
        load_builtin("chitchat", chitchat_turns="most")


def test_config_key_selects_the_corpus() -> None:
    cfg = load_config(None, ["data.corpus=chitchat", "data.chitchat_turns=all"])
    assert len(read_pairs(cfg)) == 131_368
    assert load_config().data.chitchat_turns == "questions"
