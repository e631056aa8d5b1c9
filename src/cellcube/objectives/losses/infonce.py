"""InfoNCE with in-batch negatives and optional mined negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.objectives.losses._common import check_inputs, weighted_mean


class InfoNCELoss(nn.Module):
    """InfoNCE (a.k.a. MultipleNegativesRankingLoss) with duplicate-aware in-batch negatives.

    For row ``i`` the logits are ``cos(pred_i, c) / temperature`` over the candidates ``c``: every
    answer of the batch, then row ``i``'s own extra ``negatives`` (mined, see
    :mod:`cellcube.objectives.negatives`); the loss is the cross-entropy of the true answer
    ``target_i``.
    A candidate with the same answer id as row ``i`` (a duplicate answer text elsewhere in the
    batch, or a negative that is the answer itself) is masked out rather than pushed away.

    Args:
        temperature: softmax temperature (default 0.05, i.e. sentence-transformers' ``scale=20``).

    Inputs:

    ================  ==========  ==================================================
    argument          shape       meaning
    ================  ==========  ==================================================
    ``pred``          (B, D)      model outputs
    ``target``        (B, D)      the true answers' teacher embeddings
    ``answer_ids``    (B,)        one integer per distinct answer text
    ``negatives``     (B, K, D)   optional extra negatives per row
    ``negative_ids``  (B, K)      their answer ids (required with ``negatives``)
    ``weights``       (B,)        optional per-row curriculum weights
    ================  ==========  ==================================================

    Output: a scalar; ``log(number of candidates)`` for an uninformative prediction, 0 when the
    batch holds a single answer and no negatives (nothing to contrast).

    References: van den Oord et al., "Representation Learning with Contrastive Predictive Coding"
    (2018); Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply"
    (2017); ``sentence_transformers.losses.MultipleNegativesRankingLoss``.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        answer_ids: torch.Tensor,
        negatives: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("infonce", pred, target)
        p = F.normalize(pred, dim=-1)
        logits = p @ F.normalize(target, dim=-1).T
        same = answer_ids[:, None] == answer_ids[None, :]
        same.fill_diagonal_(False)  # the true answer itself stays the label
        if negatives is not None:
            extra = torch.einsum("bd,bkd->bk", p, F.normalize(negatives, dim=-1))
            logits = torch.cat([logits, extra], dim=1)
            same = torch.cat([same, negative_ids == answer_ids[:, None]], dim=1)
        logits = (logits / self.temperature).masked_fill(same, torch.finfo(logits.dtype).min)
        labels = torch.arange(pred.shape[0], device=pred.device)
        return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), weights)
