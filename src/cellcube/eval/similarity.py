"""Cosine similarity between sets of embeddings: the one place that normalises and multiplies.

Everything that compares embeddings (evaluation, negative mining, curriculum difficulty,
expansion, quality scores, inspection, the phrase bank) goes through these helpers. Queries are
processed in blocks of rows (:func:`block_rows`): at most ``chunk`` rows, and never more than
:data:`BLOCK_ELEMENTS` similarities at once, so peak memory is ``O(block * len(keys))`` and
bounded, never ``O(len(queries) * len(keys))``; with few enough rows a call is a single matrix
product.

``cosine_*`` functions normalise their inputs; ``dot_*`` functions take rows that are already
unit length (a stored bank, the data stage's float64 vectors) and keep their dtype.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

CHUNK = 8192
"""Default largest number of query rows per block."""

BLOCK_ELEMENTS = 1 << 24
"""Most similarities held in one block (64 MiB in float32, 128 MiB in float64); caps the rows per
block. Up to 2,048 keys a block is ``CHUNK`` rows."""

ROW_ALIGN = 64
"""A block of at least this many rows has a multiple of it: float64 matrix products are then bit
for bit those of one large product (float32 ones are at any row count, on the CPUs measured), so
results do not depend on the number of keys through the block size."""


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 with every row scaled to unit L2 norm (a zero row stays zero)."""
    return F.normalize(x.float(), dim=-1)


def block_rows(n_keys: int, chunk: int = CHUNK) -> int:
    """Query rows per block against ``n_keys`` keys: ``chunk``, or fewer so that a block holds
    at most :data:`BLOCK_ELEMENTS` similarities (at least one row; a multiple of
    :data:`ROW_ALIGN` when at least that many)."""
    rows = BLOCK_ELEMENTS // max(n_keys, 1)
    if rows >= chunk:
        return chunk
    return rows // ROW_ALIGN * ROW_ALIGN if rows >= ROW_ALIGN else max(1, rows)


def dot_blocks(
    queries: torch.Tensor, keys: torch.Tensor, chunk: int = CHUNK
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, block)`` pairs: ``block`` is ``queries[start : start + rows] @ keys.T``, blocks
    in order and covering every query, ``rows`` from :func:`block_rows`."""
    kt = keys.T
    step = block_rows(keys.shape[0], chunk)
    for start in range(0, queries.shape[0], step):
        yield start, queries[start : start + step] @ kt


def cosine_blocks(
    queries: torch.Tensor, keys: torch.Tensor, chunk: int = CHUNK
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, block)`` pairs: ``block`` is the ``(rows, len(keys))`` cosine matrix of the query
    rows ``start .. start + rows``, blocks in order and covering every query."""
    yield from dot_blocks(unit(queries), unit(keys), chunk)


def topk_rows(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of every row of ``block``: ``(values, indices)``, best first;
    of equal values the lower index comes first and wins the last places (deterministic,
    unlike :func:`torch.topk`, whose choice among ties depends on the tensor's shape).

    Memory: the ``(rows, k + 1)`` top entries, plus masks over the few rows whose ``k``-th and
    ``k + 1``-th values tie (only there is the choice open)."""
    rows, m = block.shape
    if k == 0 or rows == 0:
        return block.new_zeros(rows, k), torch.zeros(rows, k, dtype=torch.long)
    top = block.topk(min(k + 1, m), dim=1)
    values, indices = top.values[:, :k], top.indices[:, :k]
    crowded = (top.values[:, k] == top.values[:, k - 1]).nonzero()[:, 0] if m > k else []
    if len(crowded):
        sub, kth = block[crowded], values[crowded, -1:]
        above, tied = sub > kth, sub == kth
        need = k - above.sum(dim=1, keepdim=True)  # tied entries to take, lowest index first
        take = above | (tied & (tied.cumsum(dim=1) <= need))
        indices[crowded] = take.nonzero()[:, 1].view(-1, k)
        values[crowded] = sub.gather(1, indices[crowded])
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    order = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, order), indices.gather(1, order)


def topk_dot(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys of largest inner product with every query: ``(scores, indices)``, each
    ``(n, k)``, best first, ties to the lower index (:func:`topk_rows`); exact, in blocks.

    ``exclude_self``: queries and keys are the same set, and a row never returns itself.
    ``k`` is capped at the number of keys (minus one with ``exclude_self``).
    """
    k = max(0, min(k, keys.shape[0] - int(exclude_self)))
    scores, indices = [], []
    for start, block in dot_blocks(queries, keys, chunk):
        if exclude_self:
            rows = torch.arange(block.shape[0])
            block[rows, rows + start] = -float("inf")
        top = topk_rows(block, k)
        scores.append(top[0])
        indices.append(top[1])
        del block  # freed before the next block is computed: one block in memory at a time
    if not scores:
        return queries.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def topk_cosine(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_dot` of the unit-normalised (float32) ``queries`` and ``keys``: the ``k``
    most similar keys of every query by cosine."""
    return topk_dot(unit(queries), unit(keys), k, exclude_self=exclude_self, chunk=chunk)


def pairs_above(
    vectors: torch.Tensor, threshold: float, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair of rows ``i < j`` of the unit rows ``vectors`` with inner product >=
    ``threshold``: ``(i, j, value)``, each ``(p,)``, in row-major order; computed in blocks, never
    as a dense ``n x n`` matrix (memory: one block plus the pairs found)."""
    found_i, found_j, found_v = [], [], []
    for start, block in dot_blocks(vectors, vectors, chunk):
        hit = block >= threshold
        hit[:, :start] = False  # keep j > i only (row r is i = start + r)
        hit[:, start : start + block.shape[0]].triu_(1)
        i, j = hit.nonzero(as_tuple=True)
        found_i.append(i + start)
        found_j.append(j)
        found_v.append(block[i, j])
        del block, hit  # freed before the next block is computed
    if not found_i:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), vectors[:0, 0]
    return torch.cat(found_i), torch.cat(found_j), torch.cat(found_v)


def block_ranks(block: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's rank of its ``targets`` column (1 + entries strictly higher) and that entry:
    ``(ranks, values)``. Overwrites ``block`` (in place, 1.0 where an entry is higher: the float
    sums are exact counts below 2**24)."""
    true = block[torch.arange(block.shape[0]), targets]
    return block.gt_(true[:, None]).sum(dim=1).long() + 1, true


def true_ranks(
    queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the rank of its target key (1 + keys scoring strictly higher) and the
    cosine to it: ``(ranks, cosines)``, each ``(n,)``."""
    ranks, cosines = [], []
    for start, block in cosine_blocks(queries, keys, chunk):
        rank, true = block_ranks(block, targets[start : start + block.shape[0]])
        ranks.append(rank)
        cosines.append(true)
        del block  # freed before the next block is computed: one block in memory at a time
    if not ranks:
        return torch.zeros(0, dtype=torch.long), queries.new_zeros(0)
    return torch.cat(ranks), torch.cat(cosines)
