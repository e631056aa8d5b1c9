"""Seeded corruption of text: character typos and word dropout.

What a robust question-to-answer map must survive: a user who mistypes (``typo``) or leaves words
out (``drop``). A corruption is written ``kind:rate`` (``typo:0.05``, ``drop:0.2``) in the
config keys that use it (``eval.robustness``, ``train.augment``, ``data.denoise``) and parsed by
:meth:`Corruption.parse`.

* ``typo:r`` edits a fraction ``r`` of a text's letters and digits (its *eligible* characters),
  each chosen position once, by one of four keyboard errors with equal probability: substitute
  a neighbouring key on a QWERTY keyboard (case kept), delete the character, insert a
  neighbouring key after it, or swap it with the next character (a substitution where the next
  character is not a letter or digit, or the same one). A text with a single eligible character
  is never emptied: its deletion becomes a substitution.
* ``drop:r`` removes a fraction ``r`` of a text's words (whitespace-separated tokens,
  punctuation stays with its word) and joins the rest with single spaces. At least one word is
  always kept, so a one-word text is returned unchanged.

How many positions: ``r * n`` of ``n`` eligible characters (or words) rounded *stochastically*
(``floor(r * n)``, plus one with probability ``frac(r * n)``), so the rate holds in expectation
on every text, short ones included, and no text is ever more than one edit away from it. Word
dropout's cap (at least one word kept) lowers the rate on texts of one or two words; the
robustness report records the share of texts a corruption actually changed.

Seeding: every text draws from its own generator, seeded by ``(seed, kind, rate, SHA-256 of the
text)``, so a text is corrupted the same way wherever it occurs, in any order, in any process;
the same seed gives the same output, another seed another one.

:func:`corrupt_texts` corrupts a list of texts; :func:`augment_pairs` adds corrupted copies of
training questions (``train.augment``); :func:`denoise_pairs` builds the corrupted-text ->
clean-text pairs of ``mode: denoise``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cellcube.data.records import QAPair, dedupe

__all__ = [
    "KINDS",
    "NEIGHBOURS",
    "Corruption",
    "augment_pairs",
    "corrupt_texts",
    "denoise_pairs",
    "drop_words",
    "parse_corruptions",
    "typos",
]

KINDS = ("typo", "drop")
"""The corruption kinds, in the order their index enters the seed."""

_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours() -> dict[str, str]:
    """Each key of :data:`_ROWS` -> the keys beside it on its row and the rows above and below
    (the keys at most one column away: rows are compared by index, ignoring their stagger)."""
    out: dict[str, str] = {}
    for r, row in enumerate(_ROWS):
        for c, key in enumerate(row):
            near = []
            for other in _ROWS[max(r - 1, 0) : r + 2]:
                near += [k for k in other[max(c - 1, 0) : c + 2] if k != key]
            out[key] = "".join(near)
    return out


NEIGHBOURS = _neighbours()
"""A QWERTY key -> the keys next to it: where a finger slips."""
_FALLBACK = "abcdefghijklmnopqrstuvwxyz"  # for characters that are not on the QWERTY rows


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``kind`` (one of :data:`KINDS`) at ``rate`` in (0, 1).

    ``str(c)`` is the canonical spec, e.g. ``"typo:0.05"``.
    """

    kind: str
    rate: float

    @classmethod
    def parse(cls, spec: str) -> Corruption:
        """``"typo:0.05"`` -> ``Corruption("typo", 0.05)``.

        Raises:
            ValueError: one line saying what is wrong (unknown kind, a rate that is not a number
                in (0, 1), a missing ``:``).
        """
        kind, sep, rate = str(spec).strip().partition(":")
        if not sep or kind not in KINDS:
            raise ValueError(
                f"{spec!r}: expected kind:rate with kind one of {', '.join(KINDS)}, e.g. typo:0.05"
            )
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if not 0 < value < 1:  # also false for nan
            raise ValueError(f"{spec!r}: the rate must be a number in (0, 1)")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate:g}"

    def apply(self, text: str, rng: np.random.Generator) -> str:
        """``text`` corrupted with draws from ``rng``."""
        fn = typos if self.kind == "typo" else drop_words
        return fn(text, self.rate, rng)

    def rng(self, text: str, seed: int) -> np.random.Generator:
        """The generator of ``text`` under ``seed``: ``(seed, kind, rate, SHA-256 of text)``."""
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
        return np.random.default_rng(
            [int(seed), KINDS.index(self.kind), round(self.rate * 1e6), *words]
        )


def parse_corruptions(specs: Sequence[str]) -> list[Corruption]:
    """Every spec of a config list, parsed (:meth:`Corruption.parse`)."""
    return [Corruption.parse(s) for s in specs]


def _count(n: int, rate: float, rng: np.random.Generator) -> int:
    """``rate * n`` rounded stochastically: its floor, plus one with probability its fraction."""
    exact = rate * n
    whole = math.floor(exact)
    return whole + int(rng.random() < exact - whole)


def _near(ch: str, rng: np.random.Generator) -> str:
    """A key next to ``ch`` (its case kept); a random letter for a character off the rows."""
    keys = NEIGHBOURS.get(ch.lower(), _FALLBACK)
    out = keys[rng.integers(len(keys))]
    return out.upper() if ch.isupper() else out


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """``text`` with a fraction ``rate`` of its letters and digits mistyped (module docstring)."""
    chars = list(text)
    eligible = [i for i, ch in enumerate(chars) if ch.isalnum()]
    k = _count(len(eligible), rate, rng)
    if k == 0:
        return text
    positions = sorted(rng.choice(eligible, size=k, replace=False).tolist(), reverse=True)
    ops = rng.integers(4, size=k).tolist()
    for i, op in zip(positions, ops, strict=True):  # right to left: indices stay valid
        ch = chars[i]
        nxt = chars[i + 1] if i + 1 < len(chars) else ""
        if op == 1 and len(eligible) > 1:
            del chars[i]
        elif op == 2:
            chars.insert(i + 1, _near(ch, rng))
        elif op == 3 and nxt.isalnum() and nxt != ch:
            chars[i], chars[i + 1] = nxt, ch
        else:
            chars[i] = _near(ch, rng)
    return "".join(chars)


def drop_words(text: str, rate: float, rng: np.random.Generator) -> str:
    """``text`` with a fraction ``rate`` of its words removed, at least one kept (module
    docstring)."""
    words = text.split()
    k = min(_count(len(words), rate, rng), len(words) - 1)
    if k <= 0:
        return text
    gone = set(rng.choice(len(words), size=k, replace=False).tolist())
    return " ".join(w for i, w in enumerate(words) if i not in gone)


def corrupt_texts(texts: Sequence[str], corruption: Corruption, seed: int) -> list[str]:
    """Each text corrupted by ``corruption``, from its own seeded generator (module docstring)."""
    return [corruption.apply(t, corruption.rng(t, seed)) for t in texts]


def augment_pairs(
    train: Sequence[QAPair],
    corruptions: Sequence[Corruption],
    seed: int,
    held_out: Collection[str] = (),
) -> list[QAPair]:
    """Corrupted copies of training pairs' questions, with the same answers (``train.augment``).

    For every corruption, every pair gets one copy whose question is corrupted
    (:func:`corrupt_texts`) and which records its source question in ``variant_of``. A copy
    whose question the corruption left unchanged, that repeats a pair already there, or whose
    question is in ``held_out`` (the validation and test texts: a corrupted question that
    happens to equal a held-out text would leak it into training) is left out.

    Returns:
        The new pairs only, corruption by corruption, each in ``train`` order.
    """
    seen = {(p.question, p.answer) for p in train}
    out = []
    for corruption in corruptions:
        noisy = corrupt_texts([p.question for p in train], corruption, seed)
        for pair, question in zip(train, noisy, strict=True):
            if question == pair.question or question in held_out:
                continue
            if (question, pair.answer) not in seen:
                seen.add((question, pair.answer))
                out.append(replace(pair, question=question, variant_of=pair.question))
    return out


def denoise_pairs(
    pairs: Sequence[QAPair], corruptions: Sequence[Corruption], seed: int
) -> list[QAPair]:
    """The pairs of ``mode: denoise``: a corrupted text -> the clean text.

    Every distinct text among the questions and answers (first-occurrence order, a pair's
    question before its answer, with that pair's origin and pinned split) gets one corrupted
    version per corruption. Kept are the versions the corruption changed and that are neither a
    clean text themselves nor the corrupted version of two different texts: each input then has
    exactly one target, and a leak-free split of these pairs (their groups are one clean text
    with its corrupted versions) keeps every text in one split.
    """
    first: dict[str, QAPair] = {}
    for pair in pairs:
        for text in (pair.question, pair.answer):
            first.setdefault(text, pair)
    candidates = [
        QAPair(noisy, text, source.origin, split=source.split)
        for corruption in corruptions
        for (text, source), noisy in zip(
            first.items(), corrupt_texts(list(first), corruption, seed), strict=True
        )
        if noisy != text
    ]
    sources: dict[str, set[str]] = {}
    for pair in candidates:
        sources.setdefault(pair.question, set()).add(pair.answer)
    return dedupe(
        p for p in candidates if len(sources[p.question]) == 1 and p.question not in first
    )
