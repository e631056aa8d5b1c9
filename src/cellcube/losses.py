"""Training losses for mapping a question embedding to its answer embedding.

Each loss takes ``pred`` (B, D), the model's output, ``target`` (B, D), the true answers'
teacher embeddings, and ``answer_ids`` (B,), an integer per distinct answer text, so that two
rows with the same answer are never used as each other's negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch negatives (a.k.a. MultipleNegativesRankingLoss).

    For each prediction, the true answer must out-score every other answer in the batch under
    cosine similarity divided by ``temperature``; cross-entropy over the batch's answers. Rows
    whose answer text equals the true one are masked out instead of being pushed away.

    Args:
        temperature: softmax temperature; 0.05 equals sentence-transformers' ``scale=20``.

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive
    Coding" (2018); Henderson et al., "Efficient Natural Language Response Suggestion" (2017).
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, answer_ids: torch.Tensor
    ) -> torch.Tensor:
        logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / self.temperature
        same = answer_ids[:, None] == answer_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, torch.finfo(logits.dtype).min)
        labels = torch.arange(pred.shape[0], device=pred.device)
        return F.cross_entropy(logits, labels)


class CosineLoss(nn.Module):
    """Mean ``1 - cos(pred, target)``: pulls each prediction towards its own answer only.

    On its own it rewards regression to the mean answer; combined with InfoNCE it keeps the
    prediction close to the answer region while InfoNCE keeps answers apart.
    """

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, answer_ids: torch.Tensor
    ) -> torch.Tensor:
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; ``forward`` returns the total and each term for logging."""

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: w for name, (w, _) in terms.items() if w > 0}
        self.terms = nn.ModuleDict({name: fn for name, (w, fn) in terms.items() if w > 0})

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, answer_ids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(pred, target, answer_ids) for name, fn in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts


def build_loss(cfg: TrainConfig) -> CombinedLoss:
    """The training objective of a config: InfoNCE plus ``cosine_weight`` x cosine."""
    return CombinedLoss(
        {
            "infonce": (1.0, InfoNCELoss(cfg.temperature)),
            "cosine": (cfg.cosine_weight, CosineLoss()),
        }
    )
