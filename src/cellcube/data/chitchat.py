"""The built-in ``chitchat`` corpus: questions and replies from open-domain chats.

The conversations are those of the Chit Chat Challenge, shipped by the PyPI package
``chitchat-dataset`` (MIT): 7,168 conversations between two people, each a list of turns, each
turn one or more utterances (``{"sender", "text", "timestamp"}``) by one speaker.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from cellcube.data.parse import one_line
from cellcube.data.records import QAPair
from cellcube.errors import DataError

__all__ = ["MIN_WORDS", "chitchat_pairs", "load_chitchat"]

MIN_WORDS = 3
"""The fewest whitespace-separated words a question turn and its reply turn must have."""


def _turn_text(turn: object) -> str:
    """A turn's utterances joined with one space, each with its whitespace collapsed ("" for a
    turn that is not a list of utterances with string texts)."""
    if not isinstance(turn, list):
        return ""
    texts = (u.get("text") for u in turn if isinstance(u, Mapping))
    return " ".join(one_line(t) for t in texts if isinstance(t, str) and t.strip())


def chitchat_pairs(conversations: Iterable[tuple[str, Mapping[str, Any]]]) -> list[QAPair]:
    """The question/reply pairs of chitchat conversations ``(id, {"messages": [turn, ...]})``.

    A turn's text is its utterances' texts, each with runs of whitespace collapsed to one space,
    joined with one space. Turn ``i`` and turn ``i + 1`` (the other speaker's reply: speakers
    alternate by turn) are a pair when turn ``i``'s text ends in ``"?"`` and both texts have
    at least :data:`MIN_WORDS` words (whitespace-separated). The origin is
    ``"chitchat:<conversation id>:<i>"``, ``i`` counting turns from 0. Conversations are read in
    the given order; exact duplicates are left to the caller.

    Example::

        >>> said = lambda *texts: [{"sender": "x", "text": t} for t in texts]
        >>> conversation = {"messages": [
        ...     said("Hi!", "How are  you?"), said("Fine, thanks. You?"), said("Good, thanks.")]}
        >>> [(p.question, p.answer, p.origin) for p in chitchat_pairs([("c1", conversation)])]
        [('Hi! How are you?', 'Fine, thanks. You?', 'chitchat:c1:0')]

    """
    pairs: list[QAPair] = []
    for cid, conversation in conversations:
        messages = conversation.get("messages") if isinstance(conversation, Mapping) else None
        if not isinstance(messages, list):
            continue
        texts = [_turn_text(turn) for turn in messages]
        for i, (question, answer) in enumerate(itertools.pairwise(texts)):
            if (
                question.endswith("?")
                and len(question.split()) >= MIN_WORDS
                and len(answer.split()) >= MIN_WORDS
            ):
                pairs.append(QAPair(question, answer, f"chitchat:{cid}:{i}"))
    return pairs


def load_chitchat() -> list[QAPair]:
    """The pairs of :func:`chitchat_pairs` over every conversation of ``chitchat-dataset``, in
    the package's order (about a second: one 8 MB JSON file).

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
    return chitchat_pairs(conversations.items())
