"""Transitional: old import path of ``load_builtin`` and the pair types, kept only until the tests
that still import ``cellcube.data.pairs`` switch to :mod:`cellcube.data`; delete it then."""

from cellcube.data.corpora import BUILTIN_CORPORA, load_builtin
from cellcube.data.records import QAPair, Split, autoencoder_pairs

__all__ = ["BUILTIN_CORPORA", "QAPair", "Split", "autoencoder_pairs", "load_builtin"]
