"""Cosine similarity between sets of embeddings: the one place that normalises and multiplies.

Everything that compares embeddings (evaluation, negative mining, curriculum difficulty,
expansion, inspection, the phrase bank) goes through these helpers. Queries are processed in
blocks of ``chunk`` rows, so peak memory is ``O(chunk * len(keys))`` rather than quadratic; with
fewer rows than ``chunk`` a call is a single matrix product.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

CHUNK = 8192
"""Default query rows per block of a chunked similarity."""


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 with every row scaled to unit L2 norm (a zero row stays zero)."""
    return F.normalize(x.float(), dim=-1)


def cosine_blocks(
    queries: torch.Tensor, keys: torch.Tensor, chunk: int = CHUNK
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, block)`` pairs: ``block`` is the ``(rows, len(keys))`` cosine matrix of the query
    rows ``start .. start + rows``, blocks in order and covering every query."""
    k = unit(keys).T
    for start in range(0, queries.shape[0], chunk):
        yield start, unit(queries[start : start + chunk]) @ k


def cosine_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The dense ``(n, m)`` cosine matrix; for sizes where ``n * m`` floats fit in memory."""
    return unit(queries) @ unit(keys).T


def topk_cosine(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar keys of every query: ``(scores, indices)``, each ``(n, k)``.

    ``exclude_self``: queries and keys are the same set, and a row never returns itself.
    ``k`` is capped at the number of keys (minus one with ``exclude_self``).
    """
    n_keys = keys.shape[0] - int(exclude_self)
    k = max(0, min(k, n_keys))
    scores, indices = [], []
    for start, block in cosine_blocks(queries, keys, chunk):
        if exclude_self:
            rows = torch.arange(block.shape[0])
            block[rows, rows + start] = -float("inf")
        top = block.topk(k, dim=1)
        scores.append(top.values)
        indices.append(top.indices)
    if not scores:
        return queries.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def true_ranks(
    queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the rank of its target key (1 + keys scoring strictly higher) and the
    cosine to it: ``(ranks, cosines)``, each ``(n,)``."""
    ranks, cosines = [], []
    for start, block in cosine_blocks(queries, keys, chunk):
        rows = torch.arange(block.shape[0])
        true = block[rows, targets[start : start + block.shape[0]]]
        ranks.append((block > true[:, None]).sum(dim=1) + 1)
        cosines.append(true)
    if not ranks:
        return torch.zeros(0, dtype=torch.long), queries.new_zeros(0)
    return torch.cat(ranks), torch.cat(cosines)
