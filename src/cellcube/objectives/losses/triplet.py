"""Triplet loss: prediction (anchor), true answer (positive), hardest negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.objectives.losses._common import check_inputs, weighted_mean


class TripletLoss(nn.Module):
    """``max(0, d(pred, target) - d(pred, negative) + margin)`` with cosine distance ``1 - cos``.

    The anchor is the model's PREDICTION, the positive its true answer, and the negative the
    hardest (closest to the prediction) of row ``i``'s negatives: its mined ``negatives`` when
    given (hard + random, see :mod:`cellcube.objectives.negatives`), otherwise the other answers of
    the batch
    ("batch-hard"). Candidates with the row's own answer id are never negatives; a row with no
    negative at all (batch of 1, all answers equal) contributes 0.

    Args:
        margin: how much closer the true answer must be than the negative (default 0.2).

    Inputs: ``pred`` (B, D), ``target`` (B, D), ``answer_ids`` (B,), optional ``negatives``
    (B, K, D) with ``negative_ids`` (B, K), optional curriculum ``weights`` (B,) (see
    :class:`~cellcube.objectives.losses.InfoNCELoss` for the table). Output: a scalar in [0, 2 +
    margin].

    References: Schroff et al., "FaceNet" (2015); Hermans et al., "In Defense of the Triplet Loss
    for Person Re-Identification" (2017); ``sentence_transformers.losses.TripletLoss``.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        answer_ids: torch.Tensor,
        negatives: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("triplet", pred, target)
        p = F.normalize(pred, dim=-1)
        pos = (p * F.normalize(target, dim=-1)).sum(-1)
        if negatives is None:
            sims = p @ F.normalize(target, dim=-1).T
            invalid = answer_ids[:, None] == answer_ids[None, :]
        else:
            sims = torch.einsum("bd,bkd->bk", p, F.normalize(negatives, dim=-1))
            invalid = negative_ids == answer_ids[:, None]
        hardest = sims.masked_fill(invalid, -torch.inf).max(dim=1).values
        has_negative = ~invalid.all(dim=1)
        # d_pos - d_neg = (1 - pos) - (1 - hardest) = hardest - pos
        rows = F.relu(torch.where(has_negative, hardest, pos) - pos + self.margin)
        return weighted_mean(rows * has_negative, weights)
