"""Mean squared error between prediction and answer embedding."""

from __future__ import annotations

import torch
from torch import nn

from cellcube.objectives.losses._common import check_inputs, weighted_mean


class MSELoss(nn.Module):
    """Mean over rows of ``mean_d (pred_id - target_id)^2`` (the embedding-distillation loss).

    Unlike :class:`~cellcube.objectives.losses.CosineLoss` it also constrains the prediction's
    norm; the
    teacher's embeddings are unit-norm, so it is ``(2 - 2 cos) / D`` for unit predictions.

    Inputs: ``pred`` (B, D), ``target`` (B, D), optional curriculum ``weights`` (B,); the
    negatives arguments of the shared signature are ignored. Output: a non-negative scalar.

    Reference: ``sentence_transformers.losses.MSELoss`` (Reimers & Gurevych, "Making Monolingual
    Sentence Embeddings Multilingual using Knowledge Distillation", 2020).
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
        check_inputs("mse", pred, target)
        return weighted_mean((pred - target).pow(2).mean(dim=-1), weights)
