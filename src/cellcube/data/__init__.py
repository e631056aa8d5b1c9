"""The data stage: question/answer pairs from files and corpora, split, expanded, inspected.

Modules: :mod:`~cellcube.data.records` (:class:`QAPair`, :class:`Split`, the JSON record form),
:mod:`~cellcube.data.readers` (the one reader stack, strict or skip mode),
:mod:`~cellcube.data.corpora` (built-in corpora; the chat reader :mod:`~cellcube.data.chitchat`),
:mod:`~cellcube.data.split` (the seeded, leak-free split: no question or answer text in two
splits), :mod:`~cellcube.data.quality`, :mod:`~cellcube.data.expand` and
:mod:`~cellcube.data.inspect` (``cellcube data expand | inspect``), with the rule-based
rephrasings of :mod:`~cellcube.data.variants`; seeded typos and word dropout
(:mod:`~cellcube.data.corrupt`) for robustness, augmentation and ``mode: denoise``.
"""

from cellcube.data.corpora import BUILTIN_CORPORA, load_builtin
from cellcube.data.corrupt import (
    Corruption,
    augment_pairs,
    corrupt_texts,
    denoise_pairs,
    parse_corruptions,
)
from cellcube.data.readers import IMPORT_SUFFIXES, ImportReport, Skip, fold_context, read_path
from cellcube.data.records import (
    QAPair,
    Split,
    autoencoder_pairs,
    dedupe,
    pair_from_record,
    pair_to_record,
)
from cellcube.data.split import SPLIT_NAMES, groups, split_dataset, split_pairs, subsample_train

__all__ = [
    "BUILTIN_CORPORA",
    "IMPORT_SUFFIXES",
    "SPLIT_NAMES",
    "Corruption",
    "ImportReport",
    "QAPair",
    "Skip",
    "Split",
    "augment_pairs",
    "autoencoder_pairs",
    "corrupt_texts",
    "dedupe",
    "denoise_pairs",
    "fold_context",
    "groups",
    "load_builtin",
    "pair_from_record",
    "pair_to_record",
    "parse_corruptions",
    "read_path",
    "split_dataset",
    "split_pairs",
    "subsample_train",
]
