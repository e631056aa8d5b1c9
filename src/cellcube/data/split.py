"""Splitting pairs into train / validation / test: seeded, grouped by answer, variants in train.

:func:`split_pairs` partitions original pairs; :func:`split_dataset` is what a run uses: it
honours splits pinned by the file, and attaches synthetic variants (:mod:`cellcube.data.expand`)
to the training split of their source only. Both take the validated
:class:`~cellcube.config.DataConfig` (fractions and folds are checked there) and the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellcube.config import DataConfig
from cellcube.data.records import QAPair, Split
from cellcube.errors import ConfigError, DataError

__all__ = ["SPLIT_NAMES", "split_dataset", "split_pairs"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def _held_out_sizes(n: int, data: DataConfig) -> tuple[int, int]:
    """How many of ``n`` distinct answers go to test and to val (each at least one, and at least
    one left for training; with folds, at least one answer per fold)."""
    n_test = max(1, round(data.test_fraction * n))
    if data.folds:
        n_test = min(n_test, n - data.folds)  # every fold needs an answer
        if n_test < 1:
            raise DataError(
                f"need at least {data.folds + 1} distinct answers for {data.folds} folds, got {n}"
            )
    n_val = max(1, round(data.val_fraction * n))
    # Leave at least one answer for training, shrinking the larger held-out split first.
    while n_test + n_val > n - 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    return n_test, n_val


def split_pairs(pairs: Sequence[QAPair], data: DataConfig, seed: int) -> Split:
    """Split pairs into train/val/test, deterministically and grouped by answer text.

    The distinct answer texts are sorted, shuffled with ``numpy.random.default_rng(seed)``, and
    assigned as whole groups: the first ``round(data.test_fraction * n)`` answers go to test,
    the next ``round(data.val_fraction * n)`` to val and the rest to train (each split gets at
    least one answer). All pairs sharing an answer text therefore land in the same split, and
    the result does not depend on the input order. Pairs keep their input order within each
    split.

    Cross-validation (``data.folds >= 2``): the test answers are the same as above (they depend
    on ``seed`` and ``test_fraction`` only), and the other answers are cut into ``folds`` groups
    of (nearly) equal size in shuffled order; group ``data.fold`` is val and the rest is train
    (``val_fraction`` is not used). Over ``fold = 0 .. folds-1`` every non-test pair is
    validated on exactly once, with the test split untouched.

    Raises:
        DataError: with fewer than 3 distinct answers (or fewer than ``folds + 1``).
    """
    answers = sorted({pair.answer for pair in pairs})
    n = len(answers)
    if n < 3:
        raise DataError(f"need at least 3 distinct answers to split, got {n}")
    n_test, n_val = _held_out_sizes(n, data)

    order = np.random.default_rng(int(seed)).permutation(n)
    shuffled = [answers[i] for i in order]
    test_answers = set(shuffled[:n_test])
    if data.folds:
        rest = shuffled[n_test:]
        bounds = [round(i * len(rest) / data.folds) for i in range(data.folds + 1)]
        val_answers = set(rest[bounds[data.fold] : bounds[data.fold + 1]])
    else:
        val_answers = set(shuffled[n_test : n_test + n_val])

    split = Split(train=[], val=[], test=[])
    for pair in pairs:
        if pair.answer in test_answers:
            split.test.append(pair)
        elif pair.answer in val_answers:
            split.val.append(pair)
        else:
            split.train.append(pair)
    return split


def _pinned_split(originals: Sequence[QAPair]) -> Split:
    """The split the pairs pin: every original must name one of :data:`SPLIT_NAMES`."""
    missing = next((p for p in originals if p.split is None), None)
    if missing is not None:
        raise DataError(
            f"{missing.origin}: no 'split' but other pairs pin theirs; pin every original pair "
            "or none"
        )
    buckets: dict[str, list[QAPair]] = {name: [] for name in SPLIT_NAMES}
    for p in originals:
        if p.split not in buckets:
            raise DataError(
                f"{p.origin}: field 'split' must be one of train, val, test, got {p.split!r}"
            )
        buckets[p.split].append(p)
    for name, members in buckets.items():
        if not members:
            raise DataError(f"pinned splits leave '{name}' empty; every split needs a pair")
    return Split(**buckets)


def split_dataset(pairs: Sequence[QAPair], data: DataConfig, seed: int) -> tuple[Split, int]:
    """Split ORIGINAL pairs, then attach synthetic variants to their source's split, train only.

    Original pairs (``variant_of is None``) are split by their pinned ``split`` when the file
    pins one (then every original must: a missing pin is a :class:`DataError` naming the pair's
    origin), else by :func:`split_pairs` (grouped by answer) -- the same split the originals get
    without any variants. A variant joins train only when its source question is an original
    train question; variants of validation/test sources and orphans are dropped, so validation
    and test hold original pairs only and no rephrasing of a held-out question is trained on.

    Returns:
        The split and the number of variants dropped.

    Raises:
        ConfigError: ``data.folds`` with pinned splits (cross-validation needs unpinned data).
        DataError: partly pinned data, or a pinned split left empty.
    """
    originals = [p for p in pairs if p.variant_of is None]
    variants = [p for p in pairs if p.variant_of is not None]
    pinned = next((p for p in originals if p.split is not None), None)
    if pinned is not None and data.folds:
        raise ConfigError(
            f"data.folds: {pinned.origin} pins its split; cross-validation needs unpinned data"
        )
    split = _pinned_split(originals) if pinned is not None else split_pairs(originals, data, seed)
    train_questions = {p.question for p in split.train}
    held_out = {t for p in (*split.val, *split.test) for t in (p.question, p.answer)}
    kept = [
        p
        for p in variants
        if p.variant_of in train_questions
        and p.question not in held_out
        and p.answer not in held_out
    ]
    return Split(split.train + kept, split.val, split.test), len(variants) - len(kept)
