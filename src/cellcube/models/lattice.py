"""Where a cell's neighbours are: neighbourhood offsets, neighbour tables, the rows they index.

The cube's states are ``(B, X, Y, Z, C)`` lattices. To perceive, every cell reads its own state
and its neighbours' (:func:`neighbour_offsets`). Rather than padding the lattice and slicing it K
times, the states are laid out as a ``(cells, C)`` matrix with one all-zero row appended (the
walls; :func:`lattice_rows`), and a cached table (:func:`neighbour_index`) lists, for every cell
and every offset, the row to read. One ``index_select`` then gathers every neighbourhood at once
(:func:`gather_neighbourhoods`), in training and at inference alike. Training's backward pass
sends each gathered row's gradient back to the row it came from through the inverse table
(:func:`inverse_index`): a gather per offset instead of a scatter-add.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import torch

Offset = tuple[int, int, int]


def neighbour_offsets(neighbourhood: int) -> list[Offset]:
    """Offsets of the cell itself (first) and its neighbours: 6 faces or all 26 around it.

    Example::

        >>> neighbour_offsets(6)
        [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
    """
    if neighbourhood == 6:
        faces = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
        return [(0, 0, 0), *faces]
    if neighbourhood == 26:
        around = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
        return [(0, 0, 0), *around]
    raise ValueError(f"a neighbourhood has 6 or 26 cells, not {neighbourhood}")


@functools.lru_cache(maxsize=64)
def neighbour_index(
    lattice: Offset,
    offsets: tuple[Offset, ...],
    boundary: str,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    top: int = 0,
    batch: int = 1,
) -> torch.Tensor:
    """Flat neighbour table of ``batch`` lattices: entry ``row*K + k`` indexes neighbour ``k``.

    It indexes the rows of :func:`lattice_rows` of a ``(batch, X, Y, Z, C)`` state of shape
    ``lattice = (X, Y, Z)`` with, optionally, ``top`` more layers shared by the batch stacked on
    it (depth ``Z + top`` in all). The table's rows are, embedding after embedding, the cells
    ``(i, j, z)`` with ``start <= z < stop`` (default: to the top) in row-major order. Cell
    ``(i, j, z)`` of embedding ``b`` is source row ``b*X*Y*Z + (i*Y + j)*Z + z``; the top piece
    follows the batch, row ``batch*X*Y*Z + (i*Y + j)*top + (z - Z)``; a neighbour beyond a zero
    wall points at the all-zero row after both. Cached per argument tuple.

    Args:
        lattice: ``(X, Y, Z)`` of one embedding's state.
        offsets: :func:`neighbour_offsets`, as a tuple (the cache key).
        boundary: ``"zero"`` walls or ``"periodic"`` wrap-around (no ``top`` then).
        device: where the table lives.
        start, stop: the ``z`` layers whose cells the table lists.
        top: layers shared by the batch, stacked above each lattice.
        batch: number of embeddings.
    """
    with torch.inference_mode(False):  # a cached table must stay usable by autograd later
        table = _one_lattice_table(lattice, offsets, boundary, start, stop, top)
        if batch > 1:  # embedding b reads its own cells, and the shared top and zero rows
            cells = lattice[0] * lattice[1] * lattice[2]
            shift = torch.arange(batch).repeat_interleave(table.numel()) * cells
            table = table.repeat(batch)
            table = torch.where(table < cells, table + shift, table + (batch - 1) * cells)
        return table.to(device)


class Inverse(NamedTuple):
    """The neighbour table read backwards (:func:`inverse_index`)."""

    table: torch.Tensor
    """``(M, R)``: column ``r`` lists the positions that read row ``r``, ascending, padded."""
    rows: torch.Tensor
    """The rows read more than ``M`` times (the top layers every embedding shares), repeated
    once per read, in ascending position."""
    positions: torch.Tensor
    """The positions that read them."""


@functools.lru_cache(maxsize=64)
def inverse_index(index: torch.Tensor, rows: int, most: int) -> Inverse:
    """Where each source row but the last (the zero wall) was read by the neighbour table
    ``index`` into ``rows`` rows.

    ``table`` ``(most, rows - 1)``: column ``r`` lists, in ascending order, the positions ``i``
    with ``index[i] == r``, padded with ``index.numel()``, which points one past the gathered
    rows (where a zero row is kept). A row read more than ``most`` times (a top layer shared by
    the batch; ``most`` = the neighbourhood's K bounds every cell of one lattice) has only
    padding there, and its reads are listed in ``rows`` / ``positions`` instead. Summing
    ``grads[table[j]]`` over ``j`` in order, then ``index_add_`` of the listed reads, gives the
    first ``rows - 1`` rows of ``zeros(rows).index_add_(0, index, grads)`` with the same
    additions in the same order (index_add on the CPU adds each row's contributions in
    ascending position); the wall's gradient is never used. Cached per table (the cached tables
    of :func:`neighbour_index` are the same objects from call to call).
    """
    with torch.inference_mode(False):
        n, device = index.numel(), index.device
        positions = torch.arange(n, device=device)[index < rows - 1]
        read = index[positions]
        counts = torch.bincount(read, minlength=rows - 1)
        heavy = counts[read] > most
        light, light_rows = positions[~heavy], read[~heavy]
        order = torch.argsort(light_rows, stable=True)
        counts = torch.bincount(light_rows, minlength=rows - 1)
        slot = (
            torch.arange(len(order), device=device)
            - (torch.cumsum(counts, 0) - counts)[light_rows[order]]
        )
        table = torch.full((most, rows - 1), n, dtype=torch.long, device=device)
        table[slot, light_rows[order]] = light[order]
        return Inverse(table, read[heavy], positions[heavy])


def _one_lattice_table(
    lattice: Offset,
    offsets: tuple[Offset, ...],
    boundary: str,
    start: int,
    stop: int | None,
    top: int,
) -> torch.Tensor:
    nx, ny, nz = lattice
    depth = nz + top
    if boundary == "periodic" and top:
        raise ValueError("a stacked top piece needs zero walls")
    i, j, k = torch.meshgrid(
        torch.arange(nx),
        torch.arange(ny),
        torch.arange(start, depth if stop is None else stop),
        indexing="ij",
    )
    cols = []
    for a, b, c in offsets:
        p, q, r = i + a, j + b, k + c
        if boundary == "periodic":
            cols.append(((p % nx) * ny + q % ny) * nz + r % nz)
        else:
            inside = (p >= 0) & (p < nx) & (q >= 0) & (q < ny) & (r >= 0) & (r < depth)
            main = (p * ny + q) * nz + r
            upper = nx * ny * nz + (p * ny + q) * top + (r - nz)
            flat = torch.where(r < nz, main, upper)
            cols.append(torch.where(inside, flat, nx * ny * depth))
    return torch.stack(cols, dim=-1).reshape(-1)


def lattice_rows(
    x: torch.Tensor, top: torch.Tensor | None = None, into: torch.Tensor | None = None
) -> torch.Tensor:
    """The states of ``x`` ``(B, X, Y, Z, C)`` as rows ``(B*X*Y*Z [+ top cells] + 1, C)``.

    ``top`` ``(1, X, Y, T, C)``: layers shared by every embedding, stacked on top of each
    lattice, stored once after the batch. The last row is zero: the wall that
    :func:`neighbour_index` points at. ``into``: write the rows at the start of this buffer
    instead of a new tensor; the cells of ``x`` are not copied when they already are its first
    rows (where the previous in-place step wrote them).
    """
    c = x.shape[-1]
    if into is None:
        parts = [x.reshape(-1, c)]
        if top is not None:
            parts.append(top.reshape(-1, c))
        parts.append(x.new_zeros(1, c))
        return torch.cat(parts)
    n, t = x.numel() // c, 0 if top is None else top.numel() // c
    rows = into[: n + t + 1]
    if not (x.is_contiguous() and x.data_ptr() == into.data_ptr()):
        rows[:n].copy_(x.reshape(n, c))
    if top is not None:
        rows[n : n + t].copy_(top.reshape(t, c))
    rows[n + t].zero_()
    return rows


def gather_neighbourhoods(
    x: torch.Tensor, index: torch.Tensor, k: int, top: torch.Tensor | None = None
) -> torch.Tensor:
    """Every listed cell's neighbourhood as one row ``(cells, K*C)``: its own state first.

    ``index`` is the :func:`neighbour_index` table of ``x``'s batch (``top`` as
    :func:`lattice_rows` says); ``k`` the number of offsets. Row ``n`` holds the states of cell
    ``n``'s K neighbourhood cells in offset order, zeros beyond a zero wall.
    """
    return lattice_rows(x, top).index_select(0, index).view(-1, k * x.shape[-1])
