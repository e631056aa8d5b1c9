"""Honest parameter counts: how many of a model's parameters actually affect its output.

A model can hold parameters that never reach its output: the cube with 0 steps under the
``faces`` reshaper reads back an output face that nothing was written to, so of its 207,312
stored parameters only ``proj_out.bias`` (384 values) changes what it predicts. Reports count
what matters, measured rather than assumed, by a *gradient probe*:

1. copy the model and give every parameter a random non-zero value (normal, scaled by
   ``1/sqrt(fan_in)`` so deep models stay finite), so that no zero initialisation hides a
   dependence (a zero read-out would otherwise block every gradient behind it);
2. in eval mode, push a random batch through it and back-propagate a random projection of the
   output, ``sum(model(e) * r)``;
3. count the parameter elements whose gradient is non-zero.

A parameter element that affects the output gets a non-zero gradient at a random point with
probability one; one that cannot affect it (unused, or multiplied by a structural zero) gets
exactly zero or no gradient at all. The probe is seeded, so a count is reproducible.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["effective_params"]


def effective_params(model: nn.Module, dim: int, batch: int = 8, seed: int = 0) -> int:
    """The number of parameter elements of ``model`` that affect its output (module docstring).

    Args:
        model: maps ``(B, dim)`` embeddings to ``(B, dim)``; it is not changed (a copy is
            probed).
        dim: its input dimension.
        batch: rows of the random probe batch.
        seed: seed of the random parameter values, inputs and projection.

    Returns:
        The count of parameter elements with a non-zero gradient in the probe.

    Example::

        >>> effective_params(nn.Linear(4, 4), 4)
        20
    """
    g = torch.Generator().manual_seed(seed)
    probe = copy.deepcopy(model).float().eval()
    params = [p for p in probe.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            fan_in = p.shape[-1] if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    e = torch.randn(batch, dim, generator=g)
    with torch.enable_grad():
        out = probe(e)
        if not out.requires_grad:  # e.g. the plain reshaper at 0 steps: no parameter is used
            return 0
        (out * torch.randn(out.shape, generator=g)).sum().backward()
    grads = [p.grad for p in params if p.grad is not None]
    if not all(torch.isfinite(gr).all() for gr in grads):
        raise RuntimeError("effective_params: the probe's gradient is not finite")
    return sum(int(torch.count_nonzero(gr)) for gr in grads)
