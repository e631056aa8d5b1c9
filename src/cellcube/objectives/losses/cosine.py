"""Cosine loss: ``1 - cos(pred, target)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.objectives.losses._common import check_inputs, weighted_mean


class CosineLoss(nn.Module):
    """Mean ``1 - cos(pred_i, target_i)``: pulls each prediction towards its own answer only.

    Alone it rewards regression towards the mean answer (a constant prediction already scores a
    high cosine); beside InfoNCE it keeps predictions in the answers' region while InfoNCE keeps
    them apart.

    Inputs:

    ==============  ========  ====================================================
    argument        shape     meaning
    ==============  ========  ====================================================
    ``pred``        (B, D)    model outputs
    ``target``      (B, D)    the true answers' teacher embeddings
    ``weights``     (B,)      optional per-row curriculum weights (weighted mean)
    ==============  ========  ====================================================

    The other arguments of the shared loss signature (``answer_ids``, ``negatives``,
    ``negative_ids``) are ignored. Output: a scalar in [0, 2].
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
        check_inputs("cosine", pred, target)
        return weighted_mean(1 - F.cosine_similarity(pred, target, dim=-1), weights)
