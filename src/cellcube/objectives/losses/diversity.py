"""Diversity penalty against collapsed predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.objectives.losses._common import check_inputs


def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the ``B(B-1)`` ordered pairs of distinct rows of ``x`` (B >= 2)."""
    u = F.normalize(x, dim=-1)
    b = x.shape[0]
    total = u.sum(0).pow(2).sum() - u.pow(2).sum()  # sum_{i != j} <u_i, u_j>
    return total / (b * (b - 1))


class DiversityLoss(nn.Module):
    """``max(0, meancos(pred) - meancos(target))`` over the pairs of rows of the batch.

    A model that collapses towards one output (the mean answer is what cosine and MSE reward)
    makes its predictions more alike than the answers they stand for; this penalises exactly the
    excess of the predictions' mean pairwise cosine over the true answers' (duplicates included on
    both sides), and is 0 while the predictions are at least as spread out as the answers. We use
    the cosine rather than the variance because retrieval is by cosine. It is a batch-level
    penalty: the curriculum ``weights`` do not apply, nor do the negatives arguments.

    Inputs: ``pred`` (B, D), ``target`` (B, D). Output: a scalar in [0, 2]; 0 for a batch of 1.

    Reference: the uniformity term of Wang & Isola, "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere" (2020), here relative to the
    targets' own spread.
    """

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        answer_ids: torch.Tensor,
        negatives: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("diversity", pred, target)
        if pred.shape[0] < 2:
            return pred.sum() * 0.0
        return F.relu(mean_pairwise_cosine(pred) - mean_pairwise_cosine(target.detach()))
