"""The cube as a refinement of a residual linear map (``cube.base: linear``).

The plain residual linear adapter ``e + W e + b`` is the best cheap head in the study, so the
question worth asking of the lattice is whether it adds anything *on top of it*.
:class:`Refined` predicts

    base(e) + (cube(x) - x),    base(e) = e + W e + b,    x = e (input) or base(e) (base)

that is the linear map plus the change the cube makes to what it reads (the cube's own residual
``cube(x) = x + read-out``, so ``cube(x) - x`` is its read-out). The cube starts as the identity,
so a fresh :class:`Refined` is the identity too; with 0 steps it is *exactly* the linear adapter
(the lattice's read-out of an empty output face would only add a constant, which ``b`` already
holds, so it is left out), and "T > 0 beats T = 0" is the lattice's whole contribution.
"""

from __future__ import annotations

import torch
from torch import nn

from cellcube.config import CubeConfig
from cellcube.models.cube import Cube

__all__ = ["Refined", "ResidualLinear"]


class ResidualLinear(nn.Module):
    """``e + W e + b``, zero-initialised (the identity at the start); with ``rank`` r the
    low-rank ``e + U V e + b`` (``V`` at PyTorch's default init, ``U`` and ``b`` zero)."""

    def __init__(self, dim: int, rank: int | None = None) -> None:
        super().__init__()
        if rank is None:
            self.linear: nn.Module = nn.Linear(dim, dim)
            out = self.linear
        else:
            self.linear = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
            out = self.linear[1]
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.linear(e)


class Refined(nn.Module):
    """``base(e) + cube(x) - x`` (module docstring); ``cfg.base`` must be ``linear``.

    Args:
        dim: embedding dimension D.
        cfg: the cube's config (``reads``: what the cube reads; ``steps``, ``steps_range`` and
            the rest as for :class:`~cellcube.models.cube.Cube`).

    The cube is built first, so under the same seed it starts with the default cube's weights.

    Example::

        >>> model = Refined(384, CubeConfig(base="linear"))
        >>> e = torch.randn(4, 384)
        >>> torch.equal(model(e), e)  # both parts start as the identity
        True
    """

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        self.cube = Cube(dim, cfg)
        self.base = ResidualLinear(dim)
        self.reads = cfg.reads

    @property
    def steps(self) -> int:
        """The cube's configured steps."""
        return self.cube.steps

    def forward(self, e: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.cube.steps if steps is None else steps
        b = self.base(e)
        if steps == 0:  # no lattice dynamics: exactly the linear adapter
            return b
        x = e if self.reads == "input" else b
        return b + self.cube(x, steps) - x

    def training_outputs(self, e: torch.Tensor) -> list[torch.Tensor]:
        """The predictions training supervises (:meth:`Cube.training_outputs` of what the cube
        reads, each added to the base map); with 0 steps, the base map alone."""
        b = self.base(e)
        if self.cube.steps == 0:
            return [b]
        x = e if self.reads == "input" else b
        return [b + out - x for out in self.cube.training_outputs(x)]
