"""Approximate nearest-neighbour search for large phrase banks: a FAISS inner-product IVF index.

Up to :data:`EXACT_MAX` phrases the bank is searched exactly, in blocks
(:func:`cellcube.eval.similarity.topk_dot`); above it, one query against a million phrases
reads 1.5 GB of embeddings, so the bank gets an inverted-file index (Jégou et al., "Product
Quantization for Nearest Neighbor Search", TPAMI 2011; FAISS, Douze et al. 2024): the unit
embeddings are clustered by k-means into :func:`n_lists` lists, and a query scans only the
``nprobe`` lists whose centroids are closest to it, with exact inner products inside them
(``IndexIVFFlat``, ``METRIC_INNER_PRODUCT``: on unit rows, the cosine). Its recall@10 against
exact search is measured by ``python -m benchmarks.bank``.

The index is built once, from the stored bank's embeddings, and stored beside them
(:mod:`cellcube.decode.bank`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cellcube.errors import CellcubeError
from cellcube.io import atomic_open

__all__ = [
    "EXACT_MAX",
    "NPROBE",
    "build_index",
    "faiss_module",
    "load_index",
    "n_lists",
    "n_probe",
    "pairs_within",
    "save_index",
    "search",
]

EXACT_MAX = 200_000
"""Largest bank searched exactly; a larger one is searched through its index."""

NPROBE = 32
"""Fewest lists a query scans; :func:`n_probe` scans a tenth of the lists when that is more."""

TRAIN_PER_LIST = 64
"""k-means training rows per list (a seeded sample of the bank)."""

SEED = 1234
"""Seeds the training sample and k-means: the same bank builds the same index."""


def faiss_module() -> Any:
    """The ``faiss`` module, or one clear error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise CellcubeError(
            f"phrase banks over {EXACT_MAX:,} phrases need FAISS: pip install faiss-cpu"
        ) from None
    return faiss


def n_lists(n: int) -> int:
    """Inverted lists for ``n`` rows: about ``sqrt(n)`` (1,000 for a million), at least 1."""
    return max(1, round(math.sqrt(n)))


def n_probe(lists: int) -> int:
    """Lists a query scans: ``max(NPROBE, lists // 10)``, at most ``lists`` (32 of 316 lists at
    100k rows, 100 of 1,000 at a million; ``python -m benchmarks.bank`` measures the recall)."""
    return min(lists, max(NPROBE, lists // 10))


def build_index(vectors: np.ndarray) -> Any:
    """An IVF-Flat inner-product index over the unit float32 rows ``vectors`` (n, D).

    k-means is trained on a seeded sample of ``TRAIN_PER_LIST * n_lists(n)`` rows, then every row
    is added; ids are row numbers."""
    faiss = faiss_module()
    n, dim = vectors.shape
    lists = n_lists(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = SEED
    sample = np.random.default_rng(SEED).permutation(n)[: TRAIN_PER_LIST * lists]
    index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    for start in range(0, n, 65_536):  # add in slices: no float32 copy of a memory-mapped bank
        index.add(np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32))
    index.nprobe = n_probe(lists)
    return index


def save_index(index: Any, path: Path) -> None:
    """Write ``index`` to ``path`` atomically."""
    faiss = faiss_module()
    with atomic_open(path, "wb") as fh:
        writer = faiss.PyCallbackIOWriter(fh.write)  # streamed: no copy of the index in memory
        faiss.write_index(index, writer)
        del writer  # flushes its buffer into fh


def load_index(path: Path, count: int, dim: int) -> Any:
    """The index stored at ``path``, memory-mapped read-only (opening it reads no lists).

    Raises :class:`CellcubeError` naming the file when it cannot be read or does not hold
    ``count`` rows of dimension ``dim``."""
    faiss = faiss_module()
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise CellcubeError(f"{path}: not a FAISS index ({first})") from None
    if index.ntotal != count or index.d != dim:
        raise CellcubeError(
            f"{path}: index holds {index.ntotal} rows of dimension {index.d}, "
            f"the bank {count} of dimension {dim}"
        )
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = n_probe(ivf.nlist)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of largest inner product with each unit float32 query row (found in the
    ``nprobe`` closest lists): ``(scores, ids)``, each ``(n, k)``, best first; ``k`` is capped
    at the index size."""
    k = min(k, index.ntotal)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ids


def pairs_within(index: Any, vectors: np.ndarray, threshold: float) -> np.ndarray:
    """The pairs ``(i, j)``, ``i < j``, of the rows of ``vectors`` (the unit float32 rows the index
    holds, ids = row numbers) whose inner product is at least ``threshold`` and that the index
    finds: a range search of every row in its ``nprobe`` closest lists. An ``(p, 2)`` int64
    array, sorted, each pair once; the caller re-scores them (the index's float32 sums may
    differ from a matrix product's in the last bit)."""
    found = []
    for start in range(0, len(vectors), 65_536):
        rows = np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32)
        limits, _, ids = index.range_search(rows, threshold)
        i = start + np.repeat(np.arange(len(rows)), np.diff(limits).astype(np.int64))
        found.append(np.stack([np.minimum(i, ids), np.maximum(i, ids)], axis=1)[i != ids])
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    return np.unique(pairs.astype(np.int64), axis=0)
