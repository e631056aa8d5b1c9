"""The cube's fast inference path: the rule's update, in place, in cache-sized blocks.

:class:`cellcube.models.cube.Cube` runs this path when autograd is off and the residual is
folded into the stencil's weight (:meth:`cellcube.models.cube.CellRule.folds_residual`), and the
readable rule otherwise. It computes the same function (``tests/test_cube_perf.py`` checks it
against the rule with weights at which every row's own input dominates the tolerance) with three
changes that only speed it up:

* **Blocks.** A step gathers the neighbourhoods of about :data:`CHUNK_ROWS` cells at a time (a
  block may span embeddings or split one), runs the first layer and the stencil as GEMMs and
  accumulates the second layer onto the stencil term, so the block's neighbourhoods and hidden
  layer stay in cache between the GEMMs; every output is written in place (``out=``).
* **Two workspaces.** Successive steps take turns between two preallocated lattices instead of
  allocating (and first touching) a new one each time.
* **Cones.** Under the ``faces`` reshaper the cells outside the light cone and above the signal
  front are skipped or computed once per batch (:mod:`cellcube.models.cones`), as in training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cellcube.models.cones import propagate, update_plan
from cellcube.models.lattice import lattice_rows

if TYPE_CHECKING:
    from cellcube.models.cube import Cube

CHUNK_ROWS = 4096
"""Cells per block of :func:`step_in_place`. Against blocks of 256-8,192 cells on the 2-core dev
CPU, 2,048-4,096 were the fastest from 8x8x6x16 to 16x16x16x32 lattices. (Training computes each
step as one block: there, per-block gradients of the whole lattice, ``index_select``'s backward,
cost more than the cache saves.)"""

Workspace = tuple[torch.Tensor, torch.Tensor]


def step_in_place(
    x: torch.Tensor,
    index: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    top: torch.Tensor | None = None,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """One update of the cells that ``index`` lists, in blocks, without autograd.

    ``x`` ``(B, X, Y, Z, C)`` with ``top`` stacked on it, and ``index``, as
    :meth:`cellcube.models.cube.CellRule.index` gives it for the layers to update; ``weights``
    ``(stencil, bias, update, perceive weight, perceive bias)`` with the residual folded into
    the stencil (:meth:`cellcube.models.cube.CellRule.fused_weights`). Each block computes
    ``h @ stencil.T + bias + gelu(h @ Wp.T + bp) @ update.T``. Returns the updated layers,
    ``(B, X, Y, rows, C)``. ``workspace``: two ``(rows, C)`` buffers that successive steps take
    turns between (the result lies in one of them; pass it back as the next ``x``). Everything
    it needs comes in as arguments, so it is also the unit to hand to ``torch.compile``.
    """
    ws, bs, wu, wp, bp = weights
    b, nx, ny, _, c = x.shape
    k = ws.shape[1] // c
    n = index.numel() // k  # cells to update, whole batch
    if workspace is not None and x.data_ptr() == workspace[1].data_ptr():
        workspace = workspace[1], workspace[0]  # x is in the second: read there
    if workspace is None:
        src, new = lattice_rows(x, top), x.new_empty(n, c)
    else:
        rows = (x.numel() + (0 if top is None else top.numel())) // c + 1
        if min(len(workspace[0]), len(workspace[1])) < max(rows, n):
            raise ValueError(f"workspace: buffers of {max(rows, n)} rows needed")
        src, new = lattice_rows(x, top, into=workspace[0]), workspace[1][:n]
    blocks = [(i, min(i + CHUNK_ROWS, n)) for i in range(0, n, CHUNK_ROWS)]
    size = blocks[0][1]
    gathered, hidden = src.new_empty(size * k, c), src.new_empty(size, wp.shape[0])
    for i, j in blocks:
        h = torch.index_select(src, 0, index[i * k : j * k], out=gathered[: (j - i) * k])
        z = torch.addmm(bp, h.view(j - i, k * c), wp.t(), out=hidden[: j - i])
        torch.ops.aten.gelu_(z)
        torch.addmm(bs, h.view(j - i, k * c), ws.t(), out=new[i:j]).addmm_(z, wu.t())
    return new.view(b, nx, ny, -1, c)


def infer(cube: Cube, e: torch.Tensor, steps: int) -> torch.Tensor:
    """``cube(e, steps)`` without autograd, through :func:`step_in_place` (same numbers)."""
    rule, reshaper = cube.rule, cube.reshaper
    nx, ny, depth = reshaper.lattice
    cones = cube.follows_cones(steps)
    x = reshaper.encode_face(e) if cones else reshaper.encode(e)
    if steps == 0:
        return reshaper.decode(x, e)
    weights = (*rule.fused_weights(), rule.perceive.weight, rule.perceive.bias)
    plan = update_plan(depth, steps, cones)
    layers = max([x.shape[3]] + [len(own) for own, _ in plan])  # the deepest per-embedding
    rows = (e.shape[0] * layers + 2) * nx * ny + 1  # the batch, 2 top layers, the wall
    workspace = x.new_empty(rows, x.shape[4]), x.new_empty(rows, x.shape[4])

    def own_step(x: torch.Tensor, start: int, stop: int | None, top: torch.Tensor | None):
        return step_in_place(x, rule.index(x, start, stop, top), weights, top, workspace)

    def shared_step(x: torch.Tensor, start: int, stop: int | None, top: torch.Tensor | None):
        return step_in_place(x, rule.index(x, start, stop, top), weights, top)

    if cones:
        x = propagate(x, depth, steps, own_step, shared_step)
    else:
        for _ in range(steps):
            x = own_step(x, 0, None, None)
    return reshaper.decode(x, e)
