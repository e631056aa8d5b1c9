"""The training objective: a weighted sum of small, documented losses (one per module).

Every loss takes the same arguments, so :class:`CombinedLoss` can add any of them:

================  ==========  ==============================================================
argument          shape       meaning
================  ==========  ==============================================================
``pred``          (B, D)      the model's output for the batch's questions
``target``        (B, D)      the true answers' teacher embeddings
``answer_ids``    (B,)        one integer per distinct answer text: equal ids are never
                              each other's negatives
``negatives``     (B, K, D)   optional mined negatives per row (see ``negatives``)
``negative_ids``  (B, K)      their answer ids
``weights``       (B,)        optional per-row curriculum weights (see ``curriculum``)
================  ==========  ==============================================================

=============================  ============================================================
loss (``loss.<name>`` weight)  what it does
=============================  ============================================================
``infonce``                    contrastive: the true answer must out-score in-batch (and
                               mined) negatives; :class:`InfoNCELoss`
``cosine``                     ``1 - cos(pred, target)``; :class:`CosineLoss`
``mse``                        squared error; :class:`MSELoss`
``triplet``                    prediction closer to its answer than to the hardest negative
                               by ``margin``; :class:`TripletLoss`
``diversity``                  predictions no more alike than their answers;
                               :class:`DiversityLoss`
=============================  ============================================================

Non-finite or mis-shaped inputs raise :class:`LossInputError` (a ``CellcubeError``).
"""

from __future__ import annotations

import torch
from torch import nn

from cellcube.config import LossConfig
from cellcube.objectives.losses._common import LossInputError
from cellcube.objectives.losses.cosine import CosineLoss
from cellcube.objectives.losses.diversity import DiversityLoss
from cellcube.objectives.losses.infonce import InfoNCELoss
from cellcube.objectives.losses.mse import MSELoss
from cellcube.objectives.losses.triplet import TripletLoss

__all__ = [
    "CombinedLoss",
    "CosineLoss",
    "DiversityLoss",
    "InfoNCELoss",
    "LossInputError",
    "MSELoss",
    "TripletLoss",
    "build_loss",
]


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; ``forward`` returns the total and each term for logging.

    Terms with weight 0 are not built, so they cost nothing and are not logged.
    """

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: w for name, (w, _) in terms.items() if w > 0}
        self.terms = nn.ModuleDict({name: fn for name, (w, fn) in terms.items() if w > 0})

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        answer_ids: torch.Tensor,
        negatives: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            name: fn(pred, target, answer_ids, negatives, negative_ids, weights)
            for name, fn in self.terms.items()
        }
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts


def build_loss(cfg: LossConfig) -> CombinedLoss:
    """The training objective of a config's ``loss`` section (the one constructor training uses)."""
    return CombinedLoss(
        {
            "infonce": (cfg.infonce, InfoNCELoss(cfg.temperature)),
            "cosine": (cfg.cosine, CosineLoss()),
            "mse": (cfg.mse, MSELoss()),
            "triplet": (cfg.triplet, TripletLoss(cfg.margin)),
            "diversity": (cfg.diversity, DiversityLoss()),
        }
    )
