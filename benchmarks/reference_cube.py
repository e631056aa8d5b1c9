"""A straightforward per-cell reference of the cube's update rule (kept out of the package).

This is how the earlier prototype computed its lattice: one embedding at a time, a Python loop
over every cell, each cell gathering its neighbours one by one and running the rule on its own.
It computes exactly what :class:`cellcube.models.cube.Cube` computes (same weights, same maths), so
it
serves two purposes: a correctness oracle for the vectorised implementation (tests compare the
two) and the baseline of the speed-up benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellcube.models.cube import Cube


def _neighbour(state: torch.Tensor, pos: tuple[int, int, int], boundary: str) -> torch.Tensor:
    """The state at ``pos`` (X, Y, Z, C lattice), with zero walls or periodic wrap-around."""
    shape = state.shape[:3]
    if boundary == "periodic":
        return state[tuple(p % s for p, s in zip(pos, shape, strict=True))]
    if all(0 <= p < s for p, s in zip(pos, shape, strict=True)):
        return state[pos]
    return torch.zeros(state.shape[3], dtype=state.dtype)


@torch.no_grad()
def reference_forward(cube: Cube, e: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Per-embedding, per-cell loop version of ``cube(e, steps)`` (eval mode semantics)."""
    rule = cube.rule
    outputs = []
    for row in e:  # one embedding at a time, like the prototype
        state = cube.reshaper.encode(row[None])[0]  # (X, Y, Z, C)
        nx, ny, nz, _ = state.shape
        for _ in range(cube.steps if steps is None else steps):
            new = state.clone()
            for i in range(nx):
                for j in range(ny):
                    for k in range(nz):
                        h = torch.cat(
                            [
                                _neighbour(state, (i + a, j + b, k + c), rule.boundary)
                                for a, b, c in rule.offsets
                            ]
                        )
                        dx = rule.stencil(h) + rule.update(F.gelu(rule.perceive(h)))
                        new[i, j, k] = state[i, j, k] + dx * rule.fire_rate
            state = new
        outputs.append(cube.reshaper.decode(state[None], row[None])[0])
    return torch.stack(outputs)
