"""The data stage's types: a question/answer pair, a split, and a pair as a JSON record.

cellcube learns to map the embedding of a question to the embedding of its answer, so all of its
training data is a list of :class:`QAPair`. Readers (:mod:`cellcube.data.readers`) and built-in
corpora (:mod:`cellcube.data.corpora`) produce such lists; :mod:`cellcube.data.split` partitions
them into a :class:`Split`. :func:`pair_to_record` / :func:`pair_from_record` are the one JSON
form of a pair, used by ``cellcube data import`` and by a run directory's ``pairs.jsonl``; every
field survives the round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "QAPair",
    "Split",
    "autoencoder_pairs",
    "dedupe",
    "pair_from_record",
    "pair_to_record",
]


@dataclass(frozen=True)
class QAPair:
    """One training example: a question, its answer, where it came from, and its metadata.

    Equality and hashing use ``question``, ``answer`` and ``origin`` only; every other field is
    metadata.

    Attributes:
        question: the input text (stripped, non-empty).
        answer: the target text (stripped, non-empty).
        origin: provenance for reports and error messages, e.g. ``"data.jsonl:12"``,
            ``"chatterbot:ai.yml"`` or ``"zaragoza:bygglov-001"``.
        domain: a topic label (the zaragoza category, the tech corpus domain), or None.
        variant_of: for a synthetic variant (:mod:`cellcube.data.expand`), its source question;
            None for an original pair.
        split: the split this pair is pinned to (``"train"``, ``"val"`` or ``"test"``), or None;
            in a run directory's ``pairs.jsonl``, the split the run assigned.
        context: previous conversation turns, oldest first.
        quality: a quality score in the file (as ``cellcube data expand`` writes), or None.
    """

    question: str
    answer: str
    origin: str
    domain: str | None = field(default=None, compare=False)
    variant_of: str | None = field(default=None, compare=False)
    split: str | None = field(default=None, compare=False)
    context: tuple[str, ...] = field(default=(), compare=False)
    quality: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Split:
    """A train/validation/test partition of question/answer pairs."""

    train: list[QAPair]
    val: list[QAPair]
    test: list[QAPair]


_OPTIONAL = ("domain", "variant_of", "quality")


def pair_to_record(pair: QAPair, split: str | None = None) -> dict[str, Any]:
    """``pair`` as a JSON-ready dict; ``split`` (the split a run assigned) overrides the pair's.

    Keys: ``split`` (when set), ``question``, ``answer``, ``origin``, then ``domain``,
    ``variant_of``, ``quality`` and ``context`` only when set. The record is also a valid input
    file line for :func:`cellcube.data.readers.read_path`.

    Example::

        >>> pair_to_record(QAPair("Hi?", "Hello.", "d.jsonl:1"), "train")
        {'split': 'train', 'question': 'Hi?', 'answer': 'Hello.', 'origin': 'd.jsonl:1'}
    """
    chosen = split if split is not None else pair.split
    rec: dict[str, Any] = {} if chosen is None else {"split": chosen}
    rec.update(question=pair.question, answer=pair.answer, origin=pair.origin)
    for name in _OPTIONAL:
        if getattr(pair, name) is not None:
            rec[name] = getattr(pair, name)
    if pair.context:
        rec["context"] = list(pair.context)
    return rec


def pair_from_record(rec: dict[str, Any]) -> QAPair:
    """The :class:`QAPair` that :func:`pair_to_record` wrote as ``rec`` (every field restored).

    Other keys (a run's ``difficulty``) are ignored. A record that lacks ``question``, ``answer``
    or ``origin`` raises ``KeyError``, one that is not a dict ``TypeError``.
    """
    return QAPair(
        rec["question"],
        rec["answer"],
        rec["origin"],
        domain=rec.get("domain"),
        variant_of=rec.get("variant_of"),
        split=rec.get("split"),
        context=tuple(rec.get("context", ())),
        quality=rec.get("quality"),
    )


def dedupe(pairs: Iterable[QAPair]) -> list[QAPair]:
    """``pairs`` without exact repeats of (question, answer), the first occurrence kept."""
    seen: set[tuple[str, str]] = set()
    out: list[QAPair] = []
    for pair in pairs:
        key = (pair.question, pair.answer)
        if key not in seen:
            seen.add(key)
            out.append(pair)
    return out


def autoencoder_pairs(pairs: Sequence[QAPair]) -> list[QAPair]:
    """Turn pairs into autoencoder examples: each distinct text maps to itself.

    Every distinct text among the questions and answers (in first-occurrence order, a pair's
    question before its answer) becomes ``QAPair(text, text, origin)``, with the origin of the
    pair where the text first occurred.
    """
    seen: set[str] = set()
    out: list[QAPair] = []
    for pair in pairs:
        for text in (pair.question, pair.answer):
            if text not in seen:
                seen.add(text)
                out.append(QAPair(text, text, pair.origin))
    return out
