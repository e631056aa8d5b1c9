"""Splitting pairs into train / validation / test: seeded, leak-free, variants in train.

A split is *leak-free* when no question text and no answer text occurs in two splits. Pairs are
the edges of a bipartite graph between question texts and answer texts; :func:`groups` finds its
connected components (union-find), and whole components are assigned to the splits. Grouping by
answer alone is not enough: chatterbot asks "What is AI?" with several answers, and on seed 0 an
answer-grouped split put 46 of its 237 test questions in train as well.

:func:`split_pairs` partitions original pairs; :func:`split_dataset` is what a run uses: it
honours splits pinned by the file (checking that they do not leak either), attaches synthetic
variants (:mod:`cellcube.data.expand`) to the training split of their source only, and keeps
``data.max_train`` training pairs. Both take the validated :class:`~cellcube.config.DataConfig`
(fractions and folds are checked there) and the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellcube.config import DataConfig
from cellcube.data.records import QAPair, Split
from cellcube.errors import ConfigError, DataError

__all__ = ["SPLIT_NAMES", "groups", "split_dataset", "split_pairs", "subsample_train"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def groups(pairs: Sequence[QAPair]) -> list[list[QAPair]]:
    """The pairs grouped by the connected components of their question--answer graph.

    Every distinct question text and every distinct answer text is a node (a text used as a
    question and as an answer is two nodes: what must not leak is a question into another
    split's questions, or an answer into another split's answers); every pair is an edge between
    its question and its answer. Two pairs are in one group exactly when a chain of pairs, each
    sharing its question or its answer with the next, joins them. Union-find with path halving,
    O(n) in practice.

    Returns:
        The groups, sorted by their smallest answer text (so the order does not depend on the
        input order); pairs keep their input order inside a group.

    Example::

        >>> [[p.origin for p in g] for g in groups([
        ...     QAPair("Hi?", "Hello.", "f:1"), QAPair("Yo?", "Hey.", "f:2"),
        ...     QAPair("Hi?", "Hey.", "f:3"), QAPair("Why?", "Because.", "f:4")])]
        [['f:4'], ['f:1', 'f:2', 'f:3']]
    """
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(node: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pair in pairs:
        root_q, root_a = find(("q", pair.question)), find(("a", pair.answer))
        if root_q != root_a:
            parent[root_q] = root_a
    members: dict[tuple[str, str], list[QAPair]] = {}
    for pair in pairs:
        members.setdefault(find(("a", pair.answer)), []).append(pair)
    return sorted(members.values(), key=lambda group: min(p.answer for p in group))


def _shuffled_groups(pairs: Sequence[QAPair], seed: int) -> list[list[QAPair]]:
    """The :func:`groups` in seeded random order: the distinct answer texts are sorted and
    shuffled with ``numpy.random.default_rng(seed)`` (as the former answer-grouped split did),
    and each group comes at the place of its first answer in that order."""
    answers = sorted({p.answer for p in pairs})
    order = np.random.default_rng(int(seed)).permutation(len(answers))
    rank = {answers[i]: place for place, i in enumerate(order)}
    return sorted(groups(pairs), key=lambda group: min(rank[p.answer] for p in group))


def _take(sizes: Sequence[int], start: int, target: float, keep: int) -> int:
    """The end of the run of groups from ``start`` whose pairs first reach ``target``: at least
    one group, and at least ``keep`` groups left after it (``start`` itself if none can be
    taken)."""
    end, total = start, 0
    while end < len(sizes) - keep and (end == start or total < target):
        total += sizes[end]
        end += 1
    return end


def _fold_bounds(sizes: Sequence[int], start: int, folds: int) -> list[int]:
    """Where the ``folds`` runs of the groups from ``start`` on begin and end (``folds + 1``
    indices): run ``k`` ends once the runs so far hold ``round((k + 1) * rest / folds)`` of the
    ``rest`` pairs, each run at least one group, the last one everything left."""
    rest, done, bounds = sum(sizes[start:]), 0, [start]
    for k in range(folds):
        target = round((k + 1) * rest / folds) - done
        bounds.append(_take(sizes, bounds[-1], target, keep=folds - k - 1))
        done += sum(sizes[bounds[-2] : bounds[-1]])
    return bounds


def _check_enough(n_groups: int, data: DataConfig) -> None:
    """A :class:`DataError` unless there are enough groups for every split (and fold)."""
    needed = data.folds + 1 if data.folds else 3
    if n_groups < needed:
        what = f"for {data.folds} folds" if data.folds else "to split"
        raise DataError(
            f"need at least {needed} groups of pairs sharing no question or answer text {what}, "
            f"got {n_groups}"
        )


def split_pairs(pairs: Sequence[QAPair], data: DataConfig, seed: int) -> Split:
    """Split pairs into train/val/test, deterministically, with no text in two splits.

    The pairs are grouped by :func:`groups` (no question text and no answer text is shared
    between groups), and the groups are assigned whole, in a seeded random order: the distinct
    answer texts are sorted and shuffled with ``numpy.random.default_rng(seed)``, and each group
    comes at the place of its first answer (so a group that the former answer-grouped split held
    whole stays where that split put it, as far as the sizes allow). The fractions count
    **pairs**: test takes groups until it holds at least ``round(data.test_fraction * n)`` of
    the ``n`` pairs, val then takes groups until it holds ``round(data.val_fraction * n)``, and
    train gets the rest; every split gets at least one group. The result does not depend on the
    input order, and pairs keep their input order within each split. Where no text is shared
    (every group one pair) this is the former answer-grouped split, pair for pair (apart from
    data sets of a handful of pairs).

    Cross-validation (``data.folds >= 2``): the test groups are the same as above (they depend
    on ``seed`` and ``test_fraction`` only), and the other groups are cut, in shuffled order,
    into ``folds`` runs of (nearly) equal numbers of pairs, each at least one group; run
    ``data.fold`` is val and the rest is train (``val_fraction`` is not used). Over
    ``fold = 0 .. folds-1`` every non-test pair is validated on exactly once, with the test split
    untouched.

    Raises:
        DataError: with fewer than 3 groups (or fewer than ``folds + 1``).
    """
    shuffled = _shuffled_groups(pairs, seed)
    _check_enough(len(shuffled), data)
    sizes = [len(group) for group in shuffled]
    n = len(pairs)

    n_test = _take(sizes, 0, round(data.test_fraction * n), keep=max(data.folds, 2))
    if data.folds:
        bounds = _fold_bounds(sizes, n_test, data.folds)
        val_groups = shuffled[bounds[data.fold] : bounds[data.fold + 1]]
    else:
        val_groups = shuffled[n_test : _take(sizes, n_test, round(data.val_fraction * n), 1)]

    test = {p for group in shuffled[:n_test] for p in group}
    val = {p for group in val_groups for p in group}
    split = Split(train=[], val=[], test=[])
    for pair in pairs:
        part = split.test if pair in test else split.val if pair in val else split.train
        part.append(pair)
    return split


def _check_pins_do_not_leak(originals: Sequence[QAPair]) -> None:
    """A :class:`DataError` naming two pinned records that share a text but not a split.

    Pins are consistent on every group exactly when every two pairs sharing a question or an
    answer pin the same split, so checking shared texts directly finds every conflict.
    """
    first: dict[tuple[str, str], QAPair] = {}
    for pair in originals:
        for kind, text in (("question", pair.question), ("answer", pair.answer)):
            seen = first.setdefault((kind, text), pair)
            if seen.split != pair.split:
                shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
                raise DataError(
                    f"{seen.origin} ({seen.split}) and {pair.origin} ({pair.split}) share the "
                    f"{kind} {shown}: a text may be in one split only"
                )


def _pinned_split(originals: Sequence[QAPair]) -> Split:
    """The split the pairs pin: every original must name one of :data:`SPLIT_NAMES`, and no
    text may be pinned to two splits."""
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
    _check_pins_do_not_leak(originals)
    return Split(**buckets)


def subsample_train(train: Sequence[QAPair], max_train: int | None, seed: int) -> list[QAPair]:
    """A seeded random subset of ``max_train`` training pairs (all of them if ``None`` or more).

    The pairs are sorted by (question, answer, origin) and shuffled with
    ``numpy.random.default_rng([seed, 1])`` (a stream apart from the split's); the first
    ``max_train`` are kept, in their input order. So the subset does not depend on the input
    order, and for one seed a smaller subset is part of every larger one (nested learning-curve
    sizes). A ``max_train`` above the number of pairs is clamped: every pair is kept.
    """
    if max_train is None or max_train >= len(train):
        return list(train)
    keys = [(p.question, p.answer, p.origin) for p in train]
    ordered = sorted(range(len(train)), key=keys.__getitem__)
    order = np.random.default_rng([int(seed), 1]).permutation(len(train))
    kept = {ordered[i] for i in order[:max_train]}
    return [pair for i, pair in enumerate(train) if i in kept]


def split_dataset(pairs: Sequence[QAPair], data: DataConfig, seed: int) -> tuple[Split, int]:
    """Split ORIGINAL pairs, keep ``data.max_train`` of train, then attach synthetic variants.

    Original pairs (``variant_of is None``) are split by their pinned ``split`` when the file
    pins one (then every original must: a missing pin is a :class:`DataError` naming the pair's
    origin; two originals that share a question or answer text but pin different splits are a
    :class:`DataError` naming both and the text), else by :func:`split_pairs` (no text in two
    splits) -- the same split the originals get without any variants. With ``data.max_train``
    the training originals are then cut to that many by :func:`subsample_train` (val and test
    unchanged; a larger value keeps them all). A variant joins train only when its source
    question is a kept original train question; variants of validation/test sources, of
    sources left out by ``max_train``, and orphans are dropped, so validation and test hold
    original pairs only and no rephrasing of a held-out question is trained on.

    Returns:
        The split and the number of variants dropped.

    Raises:
        ConfigError: ``data.folds`` with pinned splits (cross-validation needs unpinned data).
        DataError: partly pinned data, a pinned split left empty, a text pinned to two splits.
    """
    originals = [p for p in pairs if p.variant_of is None]
    variants = [p for p in pairs if p.variant_of is not None]
    pinned = next((p for p in originals if p.split is not None), None)
    if pinned is not None and data.folds:
        raise ConfigError(
            f"data.folds: {pinned.origin} pins its split; cross-validation needs unpinned data"
        )
    split = _pinned_split(originals) if pinned is not None else split_pairs(originals, data, seed)
    train = subsample_train(split.train, data.max_train, seed)
    train_questions = {p.question for p in train}
    held_out = {t for p in (*split.val, *split.test) for t in (p.question, p.answer)}
    kept = [
        p
        for p in variants
        if p.variant_of in train_questions
        and p.question not in held_out
        and p.answer not in held_out
    ]
    return Split(train + kept, split.val, split.test), len(variants) - len(kept)
