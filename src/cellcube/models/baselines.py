"""Reference models that every report includes beside the cube.

* ``identity``: the question embedding itself used as the predicted answer (no model at all).
* ``mean_answer``: the mean training answer embedding for every question (a collapse detector:
  it often scores a high cosine and the lowest possible retrieval).
* ``ridge``: a closed-form linear map Q -> A, alpha chosen on the validation split's MRR.
* ``mlp``: a residual MLP of about the cube's parameter count, trained with the same loss and
  budget (see :mod:`cellcube.train.fit`).
* ``cube_0_steps``: the same cube with zero propagation steps, trained the same way: what the
  lattice dynamics add over the reshaper's linear maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.config import Config
from cellcube.eval.metrics import retrieval_metrics
from cellcube.models.cube import Cube

TRAINED_MODELS = ("cube", "mlp", "cube_0_steps")


class ResidualMLP(nn.Module):
    """``e + W2 gelu(W1 e)`` with a zero-initialised output layer (identity at the start)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.fc2(F.gelu(self.fc1(e)))


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mlp_hidden_for(dim: int, budget: int) -> int:
    """Hidden width giving a :class:`ResidualMLP` about ``budget`` parameters (at least 1)."""
    return max(1, round((budget - dim) / (2 * dim + 1)))


def build_model(name: str, dim: int, cfg: Config) -> nn.Module:
    """Construct a trainable model by report name: ``cube``, ``cube_0_steps`` or ``mlp``.

    Initial weights depend only on ``cfg.seed`` (the global RNG is left untouched), so a model
    is the same whatever was built before it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if name == "cube":
            return Cube(dim, cfg.cube)
        if name == "cube_0_steps":
            return Cube(dim, cfg.cube.model_copy(update={"steps": 0}))
        if name == "mlp":
            return ResidualMLP(dim, mlp_hidden_for(dim, n_params(Cube(dim, cfg.cube))))
    raise ValueError(f"unknown model {name!r}; expected one of {TRAINED_MODELS}")


@dataclass
class Ridge:
    """A linear map ``pred = (q - q_mean) @ W + a_mean`` fitted in closed form."""

    weight: torch.Tensor
    q_mean: torch.Tensor
    a_mean: torch.Tensor
    alpha: float

    @classmethod
    def fit(cls, q: torch.Tensor, a: torch.Tensor, alpha: float) -> Ridge:
        q, a = q.double(), a.double()
        qm, am = q.mean(0), a.mean(0)
        qc = q - qm
        gram = qc.T @ qc + alpha * torch.eye(q.shape[1], dtype=q.dtype)
        w = torch.linalg.solve(gram, qc.T @ (a - am))
        return cls(w.float(), qm.float(), am.float(), alpha)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return (q - self.q_mean) @ self.weight + self.a_mean

    def state_dict(self) -> dict[str, object]:
        return {
            "weight": self.weight,
            "q_mean": self.q_mean,
            "a_mean": self.a_mean,
            "alpha": self.alpha,
        }


def fit_ridge(
    train_q: torch.Tensor,
    train_a: torch.Tensor,
    val_q: torch.Tensor,
    val_ids: torch.Tensor,
    val_candidates: torch.Tensor,
    alphas: Sequence[float],
) -> Ridge:
    """Fit one ridge per alpha on train; keep the one with the best validation MRR."""
    fits = [Ridge.fit(train_q, train_a, a) for a in alphas]
    mrrs = [retrieval_metrics(r(val_q), val_ids, val_candidates)["mrr"] for r in fits]
    return fits[max(range(len(fits)), key=mrrs.__getitem__)]


def mean_answer(train_a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The constant predictor: every question gets the mean training answer embedding."""
    centre = train_a.mean(0)
    return lambda q: centre.expand(q.shape[0], -1)
