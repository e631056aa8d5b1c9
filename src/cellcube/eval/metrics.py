"""Retrieval metrics: does the prediction find its true answer among all candidate answers?

Mean cosine to the true answer is reported too, but it rewards collapse (a constant mean answer
can beat every honest model on it), so models are selected and compared on MRR and Recall@k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cellcube.eval.similarity import true_ranks


def retrieval_metrics(
    pred: torch.Tensor,
    answer_ids: torch.Tensor,
    candidates: torch.Tensor,
    ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """Rank every candidate answer for each prediction by cosine similarity.

    Args:
        pred: (n, D) predicted answer embeddings.
        answer_ids: (n,) index of each row's true answer in ``candidates``.
        candidates: (m, D) embeddings of the distinct candidate answers.
        ks: cut-offs for Recall@k.

    Returns:
        ``cosine`` (mean cosine of prediction and true answer), ``recall@k`` for each k (fraction
        of rows whose true answer ranks within the top k) and ``mrr`` (mean reciprocal rank).
        A rank counts the candidates scoring strictly higher than the true answer, plus one.
    """
    rank, true = true_ranks(pred, candidates, answer_ids)
    return rank_metrics(rank, true, ks)


def rank_metrics(
    rank: torch.Tensor, true: torch.Tensor, ks: Sequence[int] = (1, 10)
) -> dict[str, float]:
    """``cosine``, ``recall@k`` and ``mrr`` from each row's rank of its true answer and its
    score."""
    out = {"cosine": true.mean().item()}
    for k in ks:
        out[f"recall@{k}"] = (rank <= k).float().mean().item()
    out["mrr"] = (1.0 / rank.float()).mean().item()
    return out
