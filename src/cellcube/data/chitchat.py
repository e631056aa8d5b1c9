"""The built-in ``chitchat`` corpus: questions and replies from open-domain chats.

The conversations are those of the Chit Chat Challenge, shipped by the PyPI package
``chitchat-dataset`` (MIT): 7,168 conversations between two people, each a list of turns, each
turn one or more utterances (``{"sender", "text", "timestamp"}``) by one speaker.

Two readings of the same conversations: question turns and their replies
(:func:`chitchat_pairs`, ``turns="questions"``: 23,911 pairs) or every consecutive turn pair
(``turns="all"``: 131,368 pairs); and every utterance on its own, a phrase bank
(:func:`chitchat_messages`: 223,013 distinct messages).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from cellcube.data.parse import one_line
from cellcube.data.records import QAPair
from cellcube.errors import DataError

__all__ = [
    "MIN_WORDS",
    "TURNS",
    "chitchat_conversations",
    "chitchat_messages",
    "chitchat_pairs",
    "load_chitchat",
]

TURNS = ("questions", "all")
"""Which consecutive turn pairs :func:`chitchat_pairs` keeps (``data.chitchat_turns``)."""

MIN_WORDS = 3
"""The fewest whitespace-separated words a question turn and its reply turn must have."""


Conversations = Iterable[tuple[str, Mapping[str, Any]]]


def _utterances(turn: object) -> list[str]:
    """A turn's non-blank utterance texts, each with its whitespace collapsed ([] for a turn
    that is not a list of utterances)."""
    if not isinstance(turn, list):
        return []
    texts = (u.get("text") for u in turn if isinstance(u, Mapping))
    return [one_line(t) for t in texts if isinstance(t, str) and t.strip()]


def _turns(conversation: object) -> list[object]:
    """A conversation's list of turns ([] when it has none)."""
    messages = conversation.get("messages") if isinstance(conversation, Mapping) else None
    return messages if isinstance(messages, list) else []


def _keep(question: str, answer: str, turns: str) -> bool:
    """Whether consecutive turn texts ``question``, ``answer`` are a pair under ``turns``."""
    if turns == "all":
        return bool(question and answer)
    return (
        question.endswith("?")
        and len(question.split()) >= MIN_WORDS
        and len(answer.split()) >= MIN_WORDS
    )


def chitchat_pairs(conversations: Conversations, turns: str = "questions") -> list[QAPair]:
    """The turn/reply pairs of chitchat conversations ``(id, {"messages": [turn, ...]})``.

    A turn's text is its utterances' texts, each with runs of whitespace collapsed to one space,
    joined with one space. Turn ``i`` and turn ``i + 1`` (the other speaker's reply: speakers
    alternate by turn) are a pair when, with ``turns="questions"``, turn ``i``'s text ends in
    ``"?"`` and both texts have at least :data:`MIN_WORDS` words (whitespace-separated); with
    ``turns="all"``, when both texts are non-empty. The origin is
    ``"chitchat:<conversation id>:<i>"``, ``i`` counting turns from 0. Conversations are read in
    the given order; exact duplicates are left to the caller.

    Example::

        >>> said = lambda *texts: [{"sender": "x", "text": t} for t in texts]
        >>> conversation = {"messages": [
        ...     said("Hi!", "How are  you?"), said("Fine, thanks. You?"), said("Good, thanks.")]}
        >>> [(p.question, p.answer, p.origin) for p in chitchat_pairs([("c1", conversation)])]
        [('Hi! How are you?', 'Fine, thanks. You?', 'chitchat:c1:0')]
        >>> [p.answer for p in chitchat_pairs([("c1", conversation)], turns="all")]
        ['Fine, thanks. You?', 'Good, thanks.']

    """
    if turns not in TURNS:
        raise ValueError(f"turns must be one of {TURNS}, got {turns!r}")
    pairs: list[QAPair] = []
    for cid, conversation in conversations:
        texts = [" ".join(_utterances(turn)) for turn in _turns(conversation)]
        for i, (question, answer) in enumerate(itertools.pairwise(texts)):
            if _keep(question, answer, turns):
                pairs.append(QAPair(question, answer, f"chitchat:{cid}:{i}"))
    return pairs


def chitchat_messages(conversations: Conversations) -> list[str]:
    """Every distinct utterance of chitchat conversations, whitespace collapsed, in first
    occurrence order: a phrase bank of things people say in a chat.

    Example::

        >>> said = lambda *texts: [{"sender": "x", "text": t} for t in texts]
        >>> conversation = {"messages": [said("Hi!", "How are  you?"), said("Hi!")]}
        >>> chitchat_messages([("c1", conversation)])
        ['Hi!', 'How are you?']

    """
    seen: dict[str, None] = {}
    for _, conversation in conversations:
        for turn in _turns(conversation):
            seen.update(dict.fromkeys(_utterances(turn)))
    return list(seen)


def chitchat_conversations() -> Conversations:
    """The ``(id, conversation)`` items of ``chitchat-dataset``, in the package's order (about a
    second: one 8 MB JSON file).

    Raises:
        DataError: the package is missing or its data cannot be read.
    """
    try:
        from chitchat_dataset import Dataset
    except ImportError as exc:
        raise DataError(
            f"built-in corpus 'chitchat' needs the package chitchat-dataset ({exc})"
        ) from None
    try:
        conversations = Dataset()
    except Exception as exc:  # a broken installation; report it as a data problem
        raise DataError(f"built-in corpus 'chitchat': cannot load ({one_line(str(exc))})") from None
    return conversations.items()


def load_chitchat(turns: str = "questions") -> list[QAPair]:
    """The pairs of :func:`chitchat_pairs` (``turns``: ``"questions"`` or ``"all"``) over every
    conversation of ``chitchat-dataset``, in the package's order.

    Raises:
        DataError: the package is missing or its data cannot be read.
    """
    return chitchat_pairs(chitchat_conversations(), turns)
