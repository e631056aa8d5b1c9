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


BLOCK_BYTES = 2**20
"""Bytes of gathered neighbourhoods per block of :class:`RuleStep` (half the dev CPU's 1 MiB
L2 per core): a block's neighbourhoods, hidden layer and gradients stay in cache from one GEMM
to the next, where whole-step GEMMs stream them from memory. Forward + backward of a 16x16x16
lattice of 32 channels (4 steps, batch 16), interleaved runs on the dev VM: 1,024-row blocks
788 ms, 2,048 rows 842 ms, one block per step 898 ms; at 8x8x6 x 16 channels blocks gained
nothing measurable. Every row-wise result is the same at any block size (tested); the weight
gradients, sums over every row, run as whole-step GEMMs."""


MIN_BLOCK_ROWS = 64
"""The fewest rows of a block, and the multiple its size is rounded to: a GEMM of a handful of
rows (1-3 here) takes another code path in the BLAS and rounds differently."""


def blocks(n: int, row_bytes: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of rows of ``row_bytes`` each covering ``range(n)``: about
    :data:`BLOCK_BYTES` per range, a multiple of :data:`MIN_BLOCK_ROWS` rows, the last range
    taking a remainder shorter than that."""
    size = max(MIN_BLOCK_ROWS, BLOCK_BYTES // row_bytes // MIN_BLOCK_ROWS * MIN_BLOCK_ROWS)
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < MIN_BLOCK_ROWS:
        starts.pop()
    return list(zip(starts, [*starts[1:], n], strict=True))


class RuleStep(torch.autograd.Function):
    """``x + stencil(h) + update(gelu(perceive(h)))`` for the rows that ``index`` lists.

    Inputs: the lattices ``x`` ``(B, X, Y, Z, C)`` and ``top`` (or None) as
    :func:`cellcube.models.lattice.lattice_rows` takes them, the neighbour table ``index`` and
    its :func:`~cellcube.models.lattice.inverse_index`, and the weights folded by
    :meth:`cellcube.models.cube.CellRule.fused_weights` (stencil with the identity, update bias,
    update weight) plus the first layer's weight and bias. Output: the new states of the listed
    cells, ``(cells, C)``. Forward and backward run block by block (:func:`blocks`), each
    block's rows computed as the whole step's GEMMs would compute them.
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
        src = lattice_rows(x, top)
        c, kc = ws.shape
        k = kc // c
        n = index.numel() // k
        h, out = src.new_empty(n, kc), src.new_empty(n, c)
        z, g = src.new_empty(n, wp.shape[0]), src.new_empty(n, wp.shape[0])
        for i, j in blocks(
            n, h.stride(0) * h.element_size()
        ):  # gather, perceive, GELU, stencil + update, in cache
            torch.index_select(src, 0, index[i * k : j * k], out=h[i:j].view(-1, c))
            torch.addmm(bp, h[i:j], wp.t(), out=z[i:j])
            torch.ops.aten.gelu.out(z[i:j], out=g[i:j])
            torch.addmm(torch.addmm(bs, h[i:j], ws.t()), g[i:j], wu.t(), out=out[i:j])
        ctx.save_for_backward(h, z, g, ws, wu, wp)
        ctx.inverse = inverse
        ctx.sizes = x.shape, None if top is None else top.shape
        return out

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h, z, g, ws, wu, wp = ctx.saved_tensors
        need = ctx.needs_input_grad
        gout = gout.contiguous()
        grads: list[torch.Tensor | None] = [None] * 9
        gz = None
        if any(need[:2] + need[7:]):  # the hidden layer's gradient (and the cells'), in blocks
            gz = torch.empty_like(z)
            grads[0], grads[1] = _block_grads(ctx, gout, gz, z, ws, wu, wp, need[0] or need[1])
        for i, (grad, inputs) in enumerate(
            ((gout, h), (gout, None), (gout, g), (gz, h), (gz, None)), 4
        ):
            if need[i]:  # stencil, update bias, update weight, first layer weight and bias
                assert grad is not None
                grads[i] = grad.sum(0) if inputs is None else grad.t().mm(inputs)
        return tuple(grads)


def _block_grads(
    ctx: Any,
    gout: torch.Tensor,
    gz: torch.Tensor,
    z: torch.Tensor,
    ws: torch.Tensor,
    wu: torch.Tensor,
    wp: torch.Tensor,
    cells: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fills ``gz`` (the gradient before the GELU) block by block and, where ``cells``, returns
    the gradients of :class:`RuleStep`'s ``x`` and ``top``: per block ``gz @ Wp + gout @ Ws``
    written into a buffer that ends in a zero row, then gathered back through the inverse
    table."""
    rows, (c, kc) = z.shape[0], ws.shape
    buf = gout.new_empty(rows * kc + c) if cells else None
    for i, j in blocks(rows, kc * gout.element_size()):
        torch.ops.aten.gelu_backward.grad_input(gout[i:j].mm(wu), z[i:j], grad_input=gz[i:j])
        if buf is not None:
            gh = torch.mm(gz[i:j], wp, out=buf[i * kc : j * kc].view(j - i, kc))
            torch.addmm(gh, gout[i:j], ws, out=gh)  # gh += gout @ Ws, in place
    if buf is None:
        return None, None
    buf[rows * kc :].zero_()
    grad_rows = gather_sum(buf.view(-1, c), ctx.inverse)
    x_shape, top_shape = ctx.sizes
    n = x_shape.numel() // c
    grad_top = None
    if top_shape is not None and ctx.needs_input_grad[1]:
        grad_top = grad_rows[n : n + top_shape.numel() // c].view(top_shape)
    return grad_rows[:n].view(x_shape), grad_top


def gather_sum(src: torch.Tensor, inverse: Inverse) -> torch.Tensor:
    """``zeros(R, C).index_add_(0, index, src[:-1])`` as gathers: the backward of a gather.

    ``src`` ``(N + 1, C)`` ends in a zero row (where the table pads); ``inverse`` is
    :func:`~cellcube.models.lattice.inverse_index` of ``index``. Each row's reads are added in
    ascending position, as ``index_add_`` adds them, block by block of rows (:func:`blocks`).
    Returns ``(R, C)``.
    """
    table = inverse.table
    out = src.new_empty(table.shape[1], src.shape[1])
    for i, j in blocks(table.shape[1], table.shape[0] * src.stride(0) * src.element_size()):
        torch.index_select(src, 0, table[0, i:j], out=out[i:j])
        for read in table[1:, i:j]:
            out[i:j].add_(src.index_select(0, read))
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
