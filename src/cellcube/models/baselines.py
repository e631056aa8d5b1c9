"""Reference models that every report includes beside the cube.

Trained with the cube's loss, optimiser, budget and early stopping (:mod:`cellcube.train.fit`):

* ``no_lattice``: the cube with its cell rule removed, ``e + proj_out(proj_in(e))``: the same
  reshaper maps (for ``faces``: from the input face straight to the output face), starting from
  the cube's own initial weights. "Cube beats ``no_lattice``" is the test of the lattice.
* ``linear``: a full-rank residual linear adapter ``e + W e + b``, starting at the identity
  (``eval.linear_rank`` r: the low-rank ``e + U V e + b``).
* ``mlp``: a residual MLP of about the cube's parameter count.
* ``cube_0_steps``: the same cube with zero propagation steps (under ``faces``: the identity plus
  a learned bias, since the empty output face is all it reads; under ``cube.base: linear``:
  exactly the linear adapter).

The ``cube`` is :class:`~cellcube.models.cube.Cube`, or under ``cube.base: linear`` the
:class:`~cellcube.models.refine.Refined` linear map plus cube (:func:`build_cube`).

Not trained:

* ``identity``: the question embedding itself used as the predicted answer (no model at all).
* ``mean_answer``: the mean training answer embedding for every question (a collapse detector:
  it often scores a high cosine and the lowest possible retrieval).
* ``ridge``: a closed-form linear map Q -> A, alpha chosen on the validation split's MRR.

The parameter count a report gives is :func:`cellcube.models.params.effective_params`: the
parameters that actually affect a model's output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cellcube.config import TRAINED_MODELS, Config, CubeConfig
from cellcube.errors import ConfigError
from cellcube.eval.metrics import retrieval_metrics
from cellcube.models.cube import Cube, Reshaper
from cellcube.models.refine import Refined, ResidualLinear

__all__ = [
    "TRAINED_MODELS",
    "NoLattice",
    "ResidualLinear",
    "ResidualMLP",
    "Ridge",
    "build_cube",
    "build_model",
    "fit_ridge",
    "mean_answer",
    "mlp_hidden_for",
    "n_params",
    "trained_models",
]


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


class NoLattice(nn.Module):
    """The cube without its lattice: ``e + proj_out(proj_in(e))``, the cube's reshaper maps
    composed directly (for ``faces``, input face straight to output face; for ``learned``, the
    maps into and out of the whole lattice).

    Built from the same :class:`~cellcube.models.cube.Reshaper` as the cube (first thing built,
    so under the same seed its ``proj_in`` equals the cube's initial one, and its zero
    ``proj_out`` makes it the identity at the start). The ``plain`` reshaper has no maps: there
    ``no_lattice`` would be the identity, reported as ``identity``, and is a ConfigError here.
    """

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        if cfg.reshaper == "plain":
            raise ConfigError(
                "no_lattice: cube.reshaper=plain has no maps to keep (it is the identity)"
            )
        self.reshaper = Reshaper(dim, cfg)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        r = self.reshaper
        return e + r.proj_out(r.proj_in(e))


def trained_models(cfg: Config) -> tuple[str, ...]:
    """The models of :data:`TRAINED_MODELS` that ``cfg`` can build, in training order:
    ``no_lattice`` is left out under the ``plain`` reshaper (it is the identity there)."""
    return tuple(
        n for n in TRAINED_MODELS if not (n == "no_lattice" and cfg.cube.reshaper == "plain")
    )


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters (stored, whether or not they affect the output; what the
    ``mlp`` is sized by). Reports give :func:`cellcube.models.params.effective_params`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mlp_hidden_for(dim: int, budget: int) -> int:
    """Hidden width giving a :class:`ResidualMLP` about ``budget`` parameters (at least 1)."""
    return max(1, round((budget - dim) / (2 * dim + 1)))


def build_cube(dim: int, cube: CubeConfig) -> Cube | Refined:
    """The cube of ``cube`` (a :class:`CubeConfig`): :class:`Cube`, or :class:`Refined` under
    ``base: linear``."""
    return Refined(dim, cube) if cube.base == "linear" else Cube(dim, cube)


def build_model(name: str, dim: int, cfg: Config) -> nn.Module:
    """Construct a trainable model by report name (one of :data:`TRAINED_MODELS`).

    Initial weights depend only on ``cfg.seed`` (the global RNG is left untouched), so a model
    is the same whatever was built before it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if name == "cube":
            return build_cube(dim, cfg.cube)
        if name == "cube_0_steps":
            return build_cube(dim, cfg.cube.model_copy(update={"steps": 0, "steps_range": None}))
        if name == "mlp":
            return ResidualMLP(dim, mlp_hidden_for(dim, n_params(build_cube(dim, cfg.cube))))
        if name == "no_lattice":
            return NoLattice(dim, cfg.cube)
        if name == "linear":
            return ResidualLinear(dim, cfg.eval.linear_rank)
    raise ValueError(f"unknown model {name!r}; expected one of {TRAINED_MODELS}")


@dataclass
class Ridge:
    """A linear map ``pred = (q - q_mean) @ W + a_mean`` fitted in closed form.

    ``fit_seconds``: wall time of the :func:`fit_ridge` call that chose it (every alpha tried).
    """

    weight: torch.Tensor
    q_mean: torch.Tensor
    a_mean: torch.Tensor
    alpha: float
    fit_seconds: float = 0.0

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

    @property
    def n_params(self) -> int:
        """Free parameters of the affine map: ``D*D + D`` (``q_mean`` folds into the bias)."""
        return self.weight.numel() + self.a_mean.numel()

    def state_dict(self) -> dict[str, object]:
        return {
            "weight": self.weight,
            "q_mean": self.q_mean,
            "a_mean": self.a_mean,
            "alpha": self.alpha,
            "fit_seconds": self.fit_seconds,
        }


def fit_ridge(
    train_q: torch.Tensor,
    train_a: torch.Tensor,
    val_q: torch.Tensor,
    val_ids: torch.Tensor,
    val_candidates: torch.Tensor,
    alphas: Sequence[float],
) -> Ridge:
    """Fit one ridge per alpha on train; keep the one with the best validation MRR (its
    ``fit_seconds``: the wall time of this whole call)."""
    start = time.perf_counter()
    fits = [Ridge.fit(train_q, train_a, a) for a in alphas]
    mrrs = [retrieval_metrics(r(val_q), val_ids, val_candidates)["mrr"] for r in fits]
    best = fits[max(range(len(fits)), key=mrrs.__getitem__)]
    best.fit_seconds = time.perf_counter() - start
    return best


def mean_answer(train_a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The constant predictor: every question gets the mean training answer embedding."""
    centre = train_a.mean(0)
    return lambda q: centre.expand(q.shape[0], -1)
