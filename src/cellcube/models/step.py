"""The cube's training step: one update of the rule as a hand-written autograd function.

:meth:`cellcube.models.cube.Cube.step` runs :func:`train_step` when autograd is on and the
residual is folded into the stencil (:meth:`cellcube.models.cube.CellRule.folds_residual`), and
the readable rule (:class:`cellcube.models.cube.CellRule`) otherwise; :func:`train_step` itself
leaves steps of fewer than :data:`MIN_CELLS` cells (the default 4x4x4 lattice's) to the rule.
It computes the same numbers, values and gradients alike, bit for bit on the CPU
(``tests/test_cube_perf.py`` checks them against the rule), with the same GEMMs; what it drops
is work around them:

* **One autograd node per step** instead of about a dozen (views, transposes, the two chained
  ``addmm``, the GELU, the gather, the ``cat`` of the lattice rows).
* **The neighbourhood gradient** ``gz @ Wp + gout @ Ws`` is one GEMM and one GEMM accumulated
  onto it (``addmm``, ``beta=1``), written into a buffer that ends in a zero row, instead of two
  GEMMs and an add.
* **Its way back to the cells** is a gather and an add per neighbour offset through the inverse
  neighbour table (:func:`cellcube.models.lattice.inverse_index`, cached) instead of
  ``index_select``'s scatter-add, which sorts the whole table at every step.

Why the numbers do not move: autograd adds the two neighbourhood terms once (addition of two
terms commutes exactly, and the accumulating GEMM rounds the same on this CPU: tested), and
``index_add_`` adds each row's contributions in ascending position, as :func:`gather_sum` does.
On a GPU the GEMM library may round the accumulating GEMM differently: there the step is exact
to rounding, not to the bit. A fused ``[stencil; first layer]`` forward GEMM and a fused GEMM of
both weight gradients were tried and left out: at some shapes they round differently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from cellcube.models.lattice import Inverse, inverse_index, lattice_rows

if TYPE_CHECKING:
    from cellcube.models.cube import CellRule


MIN_CELLS = 8192
"""Cells a step must update for :func:`train_step` to take :class:`RuleStep`; smaller steps run
the readable rule (the same numbers either way). Its backward's per-offset passes and Python
overhead only pay off on large steps: forward + backward CPU time over the readable rule's, one
thread, on the loaded 2-core dev VM, was 0.95-1.11 at the default 4x4x4 (2,048 cells per step)
and 0.80-1.02 at 8x8x6 updating every cell (24,576 cells per step), three runs each."""


class RuleStep(torch.autograd.Function):
    """``x + stencil(h) + update(gelu(perceive(h)))`` for the rows that ``index`` lists.

    Inputs: the lattices ``x`` ``(B, X, Y, Z, C)`` and ``top`` (or None) as
    :func:`cellcube.models.lattice.lattice_rows` takes them, the neighbour table ``index`` and
    its :func:`~cellcube.models.lattice.inverse_index`, and the weights folded by
    :meth:`cellcube.models.cube.CellRule.fused_weights` (stencil with the identity, update bias,
    update weight) plus the first layer's weight and bias. Output: the new states of the listed
    cells, ``(cells, C)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        top: torch.Tensor | None,
        index: torch.Tensor,
        inverse: Inverse,
        ws: torch.Tensor,
        bs: torch.Tensor,
        wu: torch.Tensor,
        wp: torch.Tensor,
        bp: torch.Tensor,
    ) -> torch.Tensor:
        h = lattice_rows(x, top).index_select(0, index).view(-1, ws.shape[1])
        z = torch.addmm(bp, h, wp.t())
        g = torch.nn.functional.gelu(z)
        ctx.save_for_backward(h, z, g, ws, wu, wp)
        ctx.inverse = inverse
        ctx.sizes = x.shape, None if top is None else top.shape
        return torch.addmm(torch.addmm(bs, h, ws.t()), g, wu.t())

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h, z, g, ws, wu, wp = ctx.saved_tensors
        need = ctx.needs_input_grad
        gout = gout.contiguous()
        gz = torch.ops.aten.gelu_backward(gout.mm(wu), z) if any(need[:2] + need[7:]) else None
        grads: list[torch.Tensor | None] = [None] * 9
        if need[0] or need[1]:  # the gathered cells (and the top layers): as autograd would
            grads[0], grads[1] = _input_grads(ctx, gout, gz, h.shape[0], ctx.inverse, ws, wp)
        for i, (grad, inputs) in enumerate(
            ((gout, h), (gout, None), (gout, g), (gz, h), (gz, None)), 4
        ):
            if need[i]:  # stencil, update bias, update weight, first layer weight and bias
                grads[i] = grad.sum(0) if inputs is None else grad.t().mm(inputs)
        return tuple(grads)


def _input_grads(
    ctx: Any,
    gout: torch.Tensor,
    gz: torch.Tensor,
    rows: int,
    inverse: Inverse,
    ws: torch.Tensor,
    wp: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradients of :class:`RuleStep`'s ``x`` and ``top``: ``gz @ Wp + gout @ Ws`` written
    into a buffer that ends in a zero row, gathered back through the inverse table."""
    x_shape, top_shape = ctx.sizes
    c, kc = ws.shape
    buf = gout.new_empty(rows * kc + c)
    gh = torch.mm(gz, wp, out=buf[: rows * kc].view(rows, kc))
    torch.addmm(gh, gout, ws, out=gh)  # gh += gout @ Ws, in place
    buf[rows * kc :].zero_()
    grad_rows = gather_sum(buf.view(-1, c), inverse)
    n = x_shape.numel() // c
    grad_top = None
    if top_shape is not None and ctx.needs_input_grad[1]:
        grad_top = grad_rows[n : n + top_shape.numel() // c].view(top_shape)
    return grad_rows[:n].view(x_shape), grad_top


def gather_sum(src: torch.Tensor, inverse: Inverse) -> torch.Tensor:
    """``zeros(R, C).index_add_(0, index, src[:-1])`` as gathers: the backward of a gather.

    ``src`` ``(N + 1, C)`` ends in a zero row (where the table pads); ``inverse`` is
    :func:`~cellcube.models.lattice.inverse_index` of ``index``. Each row's reads are added in
    ascending position, as ``index_add_`` adds them. Returns ``(R, C)``.
    """
    reads = src.index_select(0, inverse.table.view(-1)).view(*inverse.table.shape, -1)
    out = reads[0]
    for j in range(1, len(reads)):
        out.add_(reads[j])
    if len(inverse.rows):  # rows read by every embedding (their table columns are padding)
        out.index_add_(0, inverse.rows, src.index_select(0, inverse.positions))
    return out


def train_step(
    rule: CellRule,
    x: torch.Tensor,
    start: int = 0,
    stop: int | None = None,
    top: torch.Tensor | None = None,
) -> torch.Tensor:
    """``rule(x, start, stop, top)`` through :class:`RuleStep` (where the residual is folded)
    when the step updates at least :data:`MIN_CELLS` cells, else through ``rule`` itself: the
    same values and gradients, with autograd recording one node for the step."""
    b, nx, ny, _, c = x.shape
    index = rule.index(x, start, stop, top)
    if index.numel() < MIN_CELLS * len(rule.offsets):
        return rule(x, start, stop, top)
    rows = (x.numel() + (0 if top is None else top.numel())) // c + 1
    ws, bs, wu = rule.fused_weights()
    p = rule.perceive
    inverse = inverse_index(index, rows, len(rule.offsets))
    out = RuleStep.apply(x, top, index, inverse, ws, bs, wu, p.weight, p.bias)
    return out.view(b, nx, ny, -1, c)
