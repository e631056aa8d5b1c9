"""The cube: a 3D neural cellular automaton over a lattice of cell states.

An embedding enters the lattice through a :class:`Reshaper`, ONE shared :class:`CellRule` updates
every cell from its own state and its neighbours' for ``steps`` iterations, and the reshaper maps
the final lattice back to an embedding::

    e (B, D) --reshaper.encode--> x0 (B, X, Y, Z, C) --rule x T--> xT --reshaper.decode--> (B, D)

Design, following neural-CA practice (Growing NCA, Mordvintsev et al. 2020; 3D artefact NCA,
Sudhakaran et al. 2021; latent NCA) and measured on validation (see the README, "The cube"):

* States are channels-last ``(B, X, Y, Z, C)``. Perception gathers the cell and its 6 face (or 26)
  neighbours (zero walls or periodic wrap-around) into one ``(B*X*Y*Z, K*C)`` matrix; the update
  is computed for blocks of thousands of cells at once as GEMMs. There is no Python loop over
  cells, only over steps and blocks.
* Fast path (measured in ``benchmarks/bench_cube.py``, README "Benchmark"): the lattice is a
  ``(cells, C)`` matrix with one zero row appended (the walls); a step gathers every updated
  cell's neighbourhood with ONE ``index_select`` through a cached neighbour table, runs the MLP's
  first layer and the stencil as GEMMs, and accumulates the second layer onto the stencil term.
  The cell's own state (the residual) and, at inference, the expected firing rate are folded into
  the stencil's weights, so nothing else touches the states. Without autograd the step runs in
  blocks of about :data:`CHUNK_ROWS` cells (across embeddings) that stay in cache between the
  GEMMs, writes each block in place, and steps take turns between two workspace lattices.
  Parameters and ``state_dict`` keys are those of the textbook rule;
  ``benchmarks/reference_cube.py`` is the per-cell oracle the tests compare against.
* The rule is residual, ``x <- x + stencil(h) + mlp(h)``: a linear stencil over the neighbourhood
  plus a small nonlinear MLP, both shared by every cell.
* The default ``faces`` reshaper writes a learned linear map of the embedding into the input face
  (z = 0) of an otherwise empty lattice and reads the output face (z = Z-1) back out through a
  zero-initialised linear map added to the embedding. Information must cross the lattice, one
  cell per step, to change the output: with fewer than Z-1 steps the cube can only add a constant.
  The stencil starts as a conveyor (each cell adds the state of the cell below it), so a fresh cube
  already carries the input face to the output face and training shapes what happens on the way.
* ``learned`` maps the embedding into (and out of) every cell; ``plain`` is an exact, invertible
  reshape of the embedding into the lattice (X*Y*Z*C must equal D). In both the rule starts as
  "do nothing". A fresh cube is the identity map under every reshaper.
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cellcube.config import CubeConfig
from cellcube.errors import ConfigError


def neighbour_offsets(neighbourhood: int) -> list[tuple[int, int, int]]:
    """Offsets of the cell itself (first) and its neighbours: 6 faces or all 26 around it."""
    if neighbourhood == 6:
        faces = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
        return [(0, 0, 0), *faces]
    if neighbourhood == 26:
        around = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
        return [(0, 0, 0), *around]
    raise ConfigError(f"cube.neighbourhood: must be 6 or 26, got {neighbourhood}")


def pad_lattice(x: torch.Tensor, boundary: str) -> torch.Tensor:
    """Pad the three lattice axes of ``(B, X, Y, Z, C)`` by one cell: zeros or periodic wrap."""
    if boundary == "zero":
        return F.pad(x, (0, 0, 1, 1, 1, 1, 1, 1))
    if boundary == "periodic":
        for dim in (1, 2, 3):
            x = torch.cat([x.narrow(dim, x.shape[dim] - 1, 1), x, x.narrow(dim, 0, 1)], dim=dim)
        return x
    raise ConfigError(f"cube.boundary: must be 'zero' or 'periodic', got {boundary!r}")


def gather_neighbours(
    x: torch.Tensor, offsets: list[tuple[int, int, int]], boundary: str
) -> torch.Tensor:
    """Stack each cell's state with its neighbours' along channels: ``(B,X,Y,Z,C) -> (...,K*C)``."""
    _, nx, ny, nz, _ = x.shape
    p = pad_lattice(x, boundary)
    views = [
        p[:, 1 + i : 1 + i + nx, 1 + j : 1 + j + ny, 1 + k : 1 + k + nz] for i, j, k in offsets
    ]
    return torch.cat(views, dim=-1)


CHUNK_ROWS = 4096
"""Cells per block of an in-place :meth:`CellRule.step` (a block may span embeddings or split
one). Against blocks of 256-8,192 cells on the 2-core dev CPU, 2,048-4,096 were the fastest from
8x8x6x16 to 16x16x16x32 lattices: the block's neighbourhoods and hidden layer stay in cache
between the GEMMs. The differentiable step is one block: there, per-block gradients of the whole
lattice (``index_select``'s backward) cost more than the cache saves."""


@functools.lru_cache(maxsize=64)
def neighbour_index(
    lattice: tuple[int, int, int],
    offsets: tuple[tuple[int, int, int], ...],
    boundary: str,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    top: int = 0,
    batch: int = 1,
) -> torch.Tensor:
    """Flat neighbour table of ``batch`` lattices: entry ``row*K + k`` indexes neighbour ``k``.

    It indexes the rows of :func:`lattice_rows` of a ``(batch, X, Y, Z, C)`` state ``lattice``
    ``(X, Y, Z)`` with, optionally, ``top`` more layers shared by the batch stacked on it (depth
    ``Z + top`` in all). The table's rows are, embedding after embedding, the cells ``(i, j, z)``
    with ``start <= z < stop`` (default: to the top) in row-major order. Cell ``(i, j, z)`` of
    embedding ``b`` is source row ``b*X*Y*Z + (i*Y + j)*Z + z``; the top piece follows the batch,
    row ``batch*X*Y*Z + (i*Y + j)*top + (z - Z)``; a neighbour beyond a zero wall points at the
    all-zero row after both. Cached per lattice, neighbourhood, boundary, device, rows, top and
    batch.
    """
    with torch.inference_mode(False):  # a cached table must stay usable by autograd later
        table = _neighbour_table(lattice, offsets, boundary, start, stop, top)
        if batch > 1:  # embedding b reads its own cells, and the shared top and zero rows
            cells = lattice[0] * lattice[1] * lattice[2]
            shift = torch.arange(batch).repeat_interleave(table.numel()) * cells
            table = table.repeat(batch)
            table = torch.where(table < cells, table + shift, table + (batch - 1) * cells)
        return table.to(device)


def _neighbour_table(
    lattice: tuple[int, int, int],
    offsets: tuple[tuple[int, int, int], ...],
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
    lattice (see :class:`Cube`, "signal front"), stored once after the batch. The last row is
    zero: the wall that :func:`neighbour_index` points at. ``into``: write the rows at the start
    of this buffer instead of a new tensor; the cells of ``x`` are not copied when they already
    are its first rows (where the previous in-place step wrote them).
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


def gather_flat(
    x: torch.Tensor, index: torch.Tensor, k: int, top: torch.Tensor | None = None
) -> torch.Tensor:
    """Same values as :func:`gather_neighbours`, as a ``(cells, K*C)`` matrix, in one gather.

    ``index`` is the :func:`neighbour_index` table of ``x``'s batch (``top`` as
    :func:`lattice_rows` says). One ``index_select`` over the rows with a zero row appended
    replaces padding, K strided slices and a K-way concatenation.
    """
    return lattice_rows(x, top).index_select(0, index).view(-1, k * x.shape[-1])


FusedWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(stencil W, stencil b, perceive W, perceive b, update W)``: :meth:`CellRule.fused_weights`."""


class CellRule(nn.Module):
    """The one small network shared by every cell: ``x <- x + stencil(h) + mlp(h)``.

    ``h`` is the cell's state concatenated with its neighbours' (:func:`gather_neighbours`);
    ``stencil`` is linear in ``h`` and ``mlp`` is ``Linear -> GELU -> Linear``.

    Args:
        channels: state size C of each cell.
        hidden: width of the MLP's hidden layer.
        neighbourhood: 6 (faces) or 26 (faces, edges, corners).
        boundary: ``"zero"`` walls or ``"periodic"`` wrap-around.
        fire_rate: probability that a cell applies its update at a training step (stochastic
            updates, as in Growing NCA); inference applies the expected update.
        conveyor: start the stencil as "add the state of the cell below" (z-1) and the MLP at
            its default init, so signals flow up the lattice from the start; otherwise stencil
            and MLP output start at zero (the identity rule).
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        neighbourhood: int,
        boundary: str,
        fire_rate: float = 1.0,
        conveyor: bool = False,
    ) -> None:
        super().__init__()
        self.fire_rate = fire_rate
        self.offsets = neighbour_offsets(neighbourhood)
        pad_lattice(torch.zeros(1, 1, 1, 1, 1), boundary)  # validate early
        self.boundary = boundary
        k = len(self.offsets) * channels
        self.stencil = nn.Linear(k, channels, bias=False)
        self.perceive = nn.Linear(k, hidden)
        self.update = nn.Linear(hidden, channels)
        nn.init.zeros_(self.stencil.weight)
        if conveyor:
            below = self.offsets.index((0, 0, -1))
            with torch.no_grad():
                self.stencil.weight[:, below * channels : (below + 1) * channels] = torch.eye(
                    channels
                )
        else:
            nn.init.zeros_(self.update.weight)
            nn.init.zeros_(self.update.bias)

    def stochastic(self) -> bool:
        """Whether cells fire at random (training with ``fire_rate < 1``)."""
        return self.training and self.fire_rate < 1.0

    def folds_residual(self, device: torch.device) -> bool:
        """Whether :meth:`fused_weights` folds the residual into the stencil: not under
        stochastic firing (the increment is masked per cell), nor under autocast (the state
        is carried in fp32, not rounded to bf16 through the GEMM)."""
        return not (self.stochastic() or torch.is_autocast_enabled(device.type))

    def fused_weights(self) -> FusedWeights:
        """The rule's weights, folded so that one block update is three GEMMs and a GELU.

        ``new = h @ Ws.T + bs + gelu(h @ Wp.T + bp) @ Wu.T`` with ``Ws`` the stencil plus the
        identity on the cell's own state (the residual; offset ``(0, 0, 0)`` comes first) and
        ``bs`` the update's bias; at inference with ``fire_rate < 1``, the stencil, ``bs`` and
        ``Wu`` are scaled by it (the expected update). Where :meth:`folds_residual` says no, the
        identity is left out and the block computes the increment, added to the state after.
        Built from the module's own parameters, so autograd flows back to them.
        """
        ws, bs, wu = self.stencil.weight, self.update.bias, self.update.weight
        if not self.stochastic() and self.fire_rate < 1.0:
            ws, bs, wu = self.fire_rate * ws, self.fire_rate * bs, self.fire_rate * wu
        if self.folds_residual(ws.device):
            c = ws.shape[0]
            ws = ws + F.pad(torch.eye(c, dtype=ws.dtype, device=ws.device), (0, ws.shape[1] - c))
        return ws, bs, self.perceive.weight, self.perceive.bias, wu

    def index(
        self, x: torch.Tensor, start: int = 0, stop: int | None = None, top: int = 0
    ) -> torch.Tensor:
        """The :func:`neighbour_index` table of the batch of lattices ``x`` ``(B, X, Y, Z, C)``."""
        lattice = tuple(x.shape[1:4])
        return neighbour_index(
            lattice, tuple(self.offsets), self.boundary, x.device, start, stop, top, x.shape[0]
        )

    def in_place(self, device: torch.device) -> bool:
        """Whether :meth:`step` updates in place: no autograd, and the residual folded."""
        return not torch.is_grad_enabled() and self.folds_residual(device)

    def step(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        ws: torch.Tensor,
        bs: torch.Tensor,
        wp: torch.Tensor,
        bp: torch.Tensor,
        wu: torch.Tensor,
        top: torch.Tensor | None = None,
        workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One update of the cells that ``index`` lists, given :meth:`fused_weights`.

        ``index`` is the :meth:`index` table of the rows to update (whole ``z`` layers, by
        default all of them); the result holds exactly those layers, ``(B, X, Y, rows, C)``.
        ``top`` is stacked on ``x`` as :func:`lattice_rows` says. Where :meth:`in_place` holds,
        the cells are updated in blocks of :data:`CHUNK_ROWS`, each written in place, and
        ``workspace`` (two ``(rows, C)`` buffers, as :class:`Cube` passes them) lets
        successive steps take turns between the same two buffers instead of allocating (and
        first touching) a new lattice each time. Everything else it needs comes in as
        arguments (no Python-side caches inside), so it is also the unit to hand to
        ``torch.compile`` (``benchmarks/bench_cube.py --compile``).
        """
        b, nx, ny, _, c = x.shape
        k = len(self.offsets)
        weights = (ws, bs, wp, bp, wu)
        if not self.in_place(x.device):  # one block: autograd would add a gradient of the
            # whole lattice per block (index_select's backward), costing more than the cache
            return self._differentiable(x, index, weights, top).view(b, nx, ny, -1, c)
        n = index.numel() // k  # cells to update, whole batch
        if workspace is not None and x.data_ptr() == workspace[1].data_ptr():
            workspace = workspace[1], workspace[0]  # x is in the second: read there
        if workspace is None:
            workspace = None, x.new_empty(n, c)
        else:
            rows = (x.numel() + (0 if top is None else top.numel())) // c + 1
            if min(len(workspace[0]), len(workspace[1])) < max(rows, n):
                raise ValueError(f"workspace: buffers of {max(rows, n)} rows needed")
        src = lattice_rows(x, top, into=workspace[0])
        new = workspace[1][:n]
        blocks = [(i, min(i + CHUNK_ROWS, n)) for i in range(0, n, CHUNK_ROWS)]
        size = blocks[0][1]
        gathered, hidden = src.new_empty(size * k, c), src.new_empty(size, wp.shape[0])
        for i, j in blocks:
            h = torch.index_select(src, 0, index[i * k : j * k], out=gathered[: (j - i) * k])
            z = torch.addmm(bp, h.view(j - i, k * c), wp.t(), out=hidden[: j - i])
            torch.ops.aten.gelu_(z)
            torch.addmm(bs, h.view(j - i, k * c), ws.t(), out=new[i:j]).addmm_(z, wu.t())
        return new.view(b, nx, ny, -1, c)

    def _differentiable(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        weights: FusedWeights,
        top: torch.Tensor | None,
    ) -> torch.Tensor:
        """New states ``(cells, C)`` of the cells ``index`` lists (differentiable, out of place)."""
        ws, bs, wp, bp, wu = weights
        c = x.shape[-1]
        h = gather_flat(x, index, len(self.offsets), top)
        out = torch.addmm(torch.addmm(bs, h, ws.t()), F.gelu(F.linear(h, wp, bp)), wu.t())
        if self.folds_residual(x.device):
            return out
        if self.stochastic():  # each cell fires independently (stochastic NCA update)
            out = out * (torch.rand_like(out[:, :1]) < self.fire_rate)
        return h[:, :c] + out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x, self.index(x), *self.fused_weights())


class Reshaper(nn.Module):
    """Maps a ``(B, D)`` embedding to ``(B, X, Y, Z, C)`` cell states and back.

    ``faces`` (default): a linear map into the input face z=0 (the other cells start at zero), and
    a zero-initialised linear read-out of the output face z=Z-1 added to the input embedding.
    ``learned``: the same, but into and out of every cell of the lattice.
    ``plain``: an exact, invertible reshape (requires ``X*Y*Z*C == D``); ``decode(encode(e)) == e``.
    The learned reshapers fit any lattice to any embedding dimension.
    """

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        self.lattice = tuple(cfg.lattice)
        self.channels = cfg.channels
        self.mode = cfg.reshaper
        x, y, z = self.lattice
        size = (x * y if self.mode == "faces" else cfg.n_cells) * cfg.channels
        if self.mode == "plain":
            if size != dim:
                raise ConfigError(
                    f"cube.lattice: {x}x{y}x{z} cells x {cfg.channels} channels = {size} values "
                    f"cannot hold a {dim}-d embedding with cube.reshaper=plain "
                    f"(make X*Y*Z*channels = {dim}, or set cube.reshaper=learned)"
                )
            self.proj_in = self.proj_out = None
        else:
            self.proj_in = nn.Linear(dim, size)
            self.proj_out = nn.Linear(size, dim)
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        """Embedding ``(B, D)`` -> cell states ``(B, X, Y, Z, C)``."""
        b, (nx, ny, nz), c = e.shape[0], self.lattice, self.channels
        if self.proj_in is None:
            return e.reshape(b, nx, ny, nz, c)
        if self.mode == "faces":  # the input face z=0; the rest of the lattice starts empty
            face = self.encode_face(e)
            return torch.cat([face, face.new_zeros(b, nx, ny, nz - 1, c)], dim=3)
        return self.proj_in(e).reshape(b, nx, ny, nz, c)

    def encode_face(self, e: torch.Tensor) -> torch.Tensor:
        """``faces`` only: the input face ``(B, X, Y, 1, C)``, without the empty layers above."""
        nx, ny, _ = self.lattice
        return self.proj_in(e).reshape(e.shape[0], nx, ny, 1, self.channels)

    def decode(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Cell states (and the input embedding ``e``) -> embedding ``(B, D)``."""
        if self.proj_out is None:
            return x.reshape(x.shape[0], -1)
        if self.mode == "faces":  # read the output face z=Z-1 only
            x = x[:, :, :, -1]
        return e + self.proj_out(x.reshape(x.shape[0], -1))


def update_plan(depth: int, steps: int, cones: bool) -> list[tuple[range, range]]:
    """The ``z`` layers each step updates: ``(per embedding, once for the whole batch)``.

    Without ``cones`` every step updates every layer for every embedding. With them (see
    :class:`Cube`) a step updates, for each embedding, the layers the input signal has reached
    that can still reach the output face, and once for the batch the layers above the signal
    front that can. Layers absent from both are never computed again.
    """
    if not cones:
        return [(range(depth), range(depth, depth))] * steps
    dep, shared = range(0, 1), range(1, depth)  # the input face; the empty layers above it
    plan = []
    for t in range(steps):
        first = max(0, depth - (steps - t))  # the lowest layer that can still reach the output
        # the signal front moves up one layer per step: the first shared layer joins `dep`
        new_dep = range(max(dep.start, first), min(dep.stop + 1, depth)) if dep else dep
        new_shared = range(max(shared.start + bool(dep), first), depth) if shared else shared
        plan.append((new_dep, new_shared))
        dep, shared = new_dep, new_shared
    return plan


class Cube(nn.Module):
    """The trained core: reshaper in, ``steps`` applications of the shared cell rule, reshaper out.

    Args:
        dim: embedding dimension D of the teacher.
        cfg: lattice shape, channels, rule width, steps, neighbourhood, boundary and reshaper.

    ``forward(e, steps=None)`` returns the transformed embedding (not normalised); ``steps``
    overrides the configured number of propagation steps (0 skips the lattice dynamics).

    Two cones (faces reshaper, zero walls; :func:`update_plan`), which leave the output and the
    gradients those of the full update of every cell (tested against the per-cell reference):

    * Light cone: only the output face is read, and a cell influences the cell above it one step
      later, so at step ``t`` of ``T`` the layers ``z < Z - (T - t)`` can no longer reach the
      output face. They are skipped and dropped (the lattice shrinks from the bottom).
    * Signal front: only the input face depends on the embedding, and the layers above it start
      empty, so after ``t`` steps the layers ``z > t`` hold the same states for every embedding
      (the rule applied to zeros). They are computed once per batch (batch size 1, broadcast),
      and only the layers below the front per embedding.

    Neither applies under stochastic firing in training, where every embedding draws its own
    random firing pattern. ``light_cone = False`` turns both off.
    """

    light_cone: bool = True

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        self.dim = dim
        self.steps = cfg.steps
        self.checkpointing = cfg.checkpointing
        self.reshaper = Reshaper(dim, cfg)
        self.rule = CellRule(
            cfg.channels,
            cfg.hidden,
            cfg.neighbourhood,
            cfg.boundary,
            cfg.fire_rate,
            conveyor=cfg.reshaper == "faces",
        )

    def plan(self, steps: int | None = None) -> list[tuple[range, range]]:
        """:func:`update_plan` of a forward pass in the current mode."""
        depth = self.reshaper.lattice[2]
        return update_plan(depth, self.steps if steps is None else steps, self._prunes())

    def forward(self, e: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        plan = self.plan(steps)
        weights = self.rule.fused_weights() if plan else ()
        depth = self.reshaper.lattice[2]
        if self._prunes():  # per embedding: the input face; shared: the empty layers above it
            x = face = self.reshaper.encode_face(e)
            dep, shared = range(0, 1), range(1, depth)
            above = x.new_zeros(1, *x.shape[1:3], depth - 1, x.shape[4]) if shared else None
        else:
            x, dep, shared, above = self.reshaper.encode(e), range(depth), range(0), None
        workspace = None
        if plan and self.rule.in_place(e.device):  # two lattices the steps take turns in
            nx, ny, _ = self.reshaper.lattice
            layers = max([x.shape[3]] + [len(d) for d, _ in plan])  # the deepest per-embedding
            rows = (e.shape[0] * layers + 2) * nx * ny + 1  # the batch, 2 top layers, the wall
            workspace = x.new_empty(rows, x.shape[4]), x.new_empty(rows, x.shape[4])
        for new_dep, new_shared in plan:
            new_x = new_above = None
            if new_dep:  # the rows may include the first shared layer, stacked on top of x
                top = above[:, :, :, :2] if new_dep.stop > dep.stop else None
                start, stop = new_dep.start - dep.start, new_dep.stop - dep.start
                new_x = self._step(x, start, stop, top, weights, workspace)
            if new_shared:
                new_above = self._step(above, new_shared.start - shared.start, None, None, weights)
            x, above, dep, shared = new_x, new_above, new_dep, new_shared
        if shared:  # the output face is above the signal front: the same for every embedding
            # (the input face stays in the graph with a zero gradient, as in the full update,
            # so that optimisers and DDP see the same parameters take part)
            x = above.expand(e.shape[0], -1, -1, -1, -1) + 0.0 * face.sum()
        return self.reshaper.decode(x, e)

    def _step(
        self,
        x: torch.Tensor,
        start: int,
        stop: int | None,
        top: torch.Tensor | None,
        weights: tuple[torch.Tensor, ...],
        workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Update the layers ``[start, stop)`` of ``x`` (with ``top`` stacked on it)."""
        index = self.rule.index(x, start, stop, 0 if top is None else top.shape[3])
        if self.checkpointing and self.training and torch.is_grad_enabled():
            # keep only each step's input; recompute the step in backward: activation
            # memory grows with one lattice per step instead of the rule's intermediates
            return checkpoint(self.rule.step, x, index, *weights, top, use_reentrant=False)
        return self.rule.step(x, index, *weights, top, workspace)

    def _prunes(self) -> bool:
        return (
            self.light_cone
            and self.reshaper.mode == "faces"
            and self.rule.boundary == "zero"
            and (self.rule.fire_rate == 1.0 or not self.training)
        )
