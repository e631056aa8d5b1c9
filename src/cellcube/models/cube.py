"""The cube: a 3D neural cellular automaton over a lattice of cell states.

An embedding enters the lattice through a :class:`Reshaper`, ONE shared :class:`CellRule` updates
every cell from its own state and its neighbours' for ``steps`` iterations, and the reshaper maps
the final lattice back to an embedding::

    e (B, D) --reshaper.encode--> x0 (B, X, Y, Z, C) --rule x T--> xT --reshaper.decode--> (B, D)

The rule is the textbook residual neural-CA update (Growing NCA, Mordvintsev et al. 2020; 3D
artefact NCA, Sudhakaran et al. 2021), applied to every cell at once::

    h  = neighbourhood(x)                            # each cell's state, then its neighbours'
    x' = x + stencil(h) + update(gelu(perceive(h)))  # a linear stencil plus a small MLP

* States are channels-last ``(B, X, Y, Z, C)``; perception gathers each cell's neighbourhood
  (zero walls or periodic wrap-around) into one ``(cells, K*C)`` matrix with one ``index_select``
  (:mod:`cellcube.models.lattice`), and the rule runs on it as GEMMs: no Python loop over cells.
* The default ``faces`` reshaper writes a learned linear map of the embedding into the input face
  (z = 0) of an otherwise empty lattice and reads the output face (z = Z-1) back out through a
  zero-initialised linear map added to the embedding. Information must cross the lattice, one
  cell per step, to change the output: with fewer than Z-1 steps the cube can only add a constant.
  The stencil starts as a conveyor (each cell adds the state of the cell below it), so a fresh cube
  already carries the input face to the output face and training shapes what happens on the way.
  Cells that cannot influence the output, or that hold the same state for every embedding, are
  skipped or computed once per batch (:mod:`cellcube.models.cones`): same outputs and gradients.
* ``learned`` maps the embedding into (and out of) every cell; ``plain`` is an exact, invertible
  reshape of the embedding into the lattice (X*Y*Z*C must equal D). In both the rule starts as
  "do nothing". A fresh cube is the identity map under every reshaper (unless ``cube.skip`` is
  false: then the output is the read-out alone, zeros at the start).
* ``cube.clamp`` rewrites the input face after every step, and ``cube.steps_range`` trains with
  a loss at several steps (:meth:`Cube.trajectory`, :meth:`Cube.training_outputs`; the
  variants of ``docs/cube.md``).
* Without autograd (inference) :class:`Cube` runs the same update through the in-place, blocked
  kernels of :mod:`cellcube.models.kernels` (measured in ``benchmarks/bench_cube.py``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cellcube.config import CubeConfig
from cellcube.errors import ConfigError
from cellcube.models import kernels
from cellcube.models.cones import propagate, update_plan
from cellcube.models.lattice import gather_neighbourhoods, neighbour_index, neighbour_offsets
from cellcube.models.step import train_step


class RuleWeights(NamedTuple):
    """The weights of one step of :class:`CellRule`, folded by :meth:`CellRule.fused_weights`."""

    stencil: torch.Tensor
    """``(C, K*C)``: the stencil's weight, plus the identity on the cell's own state where the
    residual is folded in."""
    bias: torch.Tensor
    """``(C,)``: the update layer's bias."""
    update: torch.Tensor
    """``(C, H)``: the update layer's weight."""


class CellRule(nn.Module):
    """The small network shared by every cell: ``x <- x + stencil(h) + update(gelu(perceive(h)))``.

    ``h`` is the cell's state followed by its neighbours' (:meth:`neighbourhood`); ``stencil``
    is linear in ``h``; ``perceive`` and ``update`` are the two layers of the MLP.

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

    Example::

        >>> rule = CellRule(channels=4, hidden=8, neighbourhood=6, boundary="zero")
        >>> x = torch.randn(2, 3, 3, 3, 4)  # two lattices of 3x3x3 cells, 4 channels
        >>> torch.equal(rule(x), x)  # a fresh rule without conveyor does nothing
        True
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

    def forward(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        top: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One step of the rule: the new states ``(B, X, Y, Z, C)`` of the lattices ``x``.

        ``start``/``stop`` update only the ``z`` layers ``[start, stop)`` (the result holds just
        those), and ``top`` ``(1, X, Y, T, C)`` is stacked on every lattice as the layers above
        it: what :mod:`cellcube.models.cones` needs to skip cells.
        """
        b, nx, ny, _, c = x.shape
        h = self.neighbourhood(x, start, stop, top)
        stencil, bias, update = self.fused_weights()
        # x + stencil(h) + update(gelu(perceive(h))) as two chained GEMMs; where the residual is
        # folded, x = h[:, :C] is the identity block of `stencil` (see fused_weights)
        dx = torch.addmm(torch.addmm(bias, h, stencil.t()), F.gelu(self.perceive(h)), update.t())
        if not self.folds_residual(x.device):
            if self.stochastic():  # each cell fires independently (stochastic NCA update)
                dx = dx * (torch.rand_like(dx[:, :1]) < self.fire_rate)
            dx = h[:, :c] + dx
        return dx.view(b, nx, ny, -1, c)

    def neighbourhood(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        top: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Perception: each cell's state, then its neighbours' (zeros beyond a zero wall).

        Returns ``(cells, K*C)``, one row per cell of the layers ``[start, stop)`` of ``x``
        (``top`` as :meth:`forward` says), embedding after embedding in row-major order.
        """
        return gather_neighbourhoods(x, self.index(x, start, stop, top), len(self.offsets), top)

    def index(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        top: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cached :func:`~cellcube.models.lattice.neighbour_index` table of the batch ``x``."""
        return neighbour_index(
            tuple(x.shape[1:4]),
            tuple(self.offsets),
            self.boundary,
            x.device,
            start,
            stop,
            0 if top is None else top.shape[3],
            x.shape[0],
        )

    def stochastic(self) -> bool:
        """Whether cells fire at random (training with ``fire_rate < 1``)."""
        return self.training and self.fire_rate < 1.0

    def folds_residual(self, device: torch.device) -> bool:
        """Whether :meth:`fused_weights` folds the residual into the stencil: not under
        stochastic firing (the increment is masked per cell), nor under autocast (the state
        is carried in fp32, not rounded to bf16 through the GEMM)."""
        return not (self.stochastic() or torch.is_autocast_enabled(device.type))

    def fused_weights(self) -> RuleWeights:
        """The stencil and update weights of one step, folded so that a step is two GEMMs deep.

        ``x + stencil(h) + update(g) = h @ Ws.T + bu + g @ Wu.T`` with ``Ws`` the stencil plus
        the identity on the cell's own state (it comes first in ``h``) and ``bu`` the update's
        bias. At inference with ``fire_rate < 1`` the stencil, ``bu`` and ``Wu`` are scaled by
        it (the expected update). Where :meth:`folds_residual` says no, the identity is left out
        and the step adds the state itself. Built from the module's own parameters, so autograd
        flows back to them.
        """
        ws, bs, wu = self.stencil.weight, self.update.bias, self.update.weight
        if not self.stochastic() and self.fire_rate < 1.0:
            ws, bs, wu = self.fire_rate * ws, self.fire_rate * bs, self.fire_rate * wu
        if self.folds_residual(ws.device):
            c = ws.shape[0]
            ws = ws + F.pad(torch.eye(c, dtype=ws.dtype, device=ws.device), (0, ws.shape[1] - c))
        return RuleWeights(ws, bs, wu)


class Reshaper(nn.Module):
    """Maps a ``(B, D)`` embedding to ``(B, X, Y, Z, C)`` cell states and back.

    ``faces`` (default): a linear map into the input face z=0 (the other cells start at zero), and
    a zero-initialised linear read-out of the output face z=Z-1 added to the input embedding.
    ``learned``: the same, but into and out of every cell of the lattice.
    ``plain``: an exact, invertible reshape (requires ``X*Y*Z*C == D``); ``decode(encode(e)) == e``.
    The learned reshapers fit any lattice to any embedding dimension. ``cube.skip = false`` drops
    the embedding from the read-out (the output is the read-out alone).
    """

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        self.lattice = tuple(cfg.lattice)
        self.channels = cfg.channels
        self.mode = cfg.reshaper
        self.skip = cfg.skip
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
        out = self.proj_out(x.reshape(x.shape[0], -1))
        return e + out if self.skip else out

    def clamp(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``faces`` only: the lattices ``x`` with their input face rewritten from ``x0`` (the
        encoded input, ``(B, X, Y, Z, C)`` or its face alone)."""
        return torch.cat([x0[:, :, :, :1], x[:, :, :, 1:]], dim=3)


class Cube(nn.Module):
    """The trained core: reshaper in, ``steps`` applications of the shared cell rule, reshaper out.

    Args:
        dim: embedding dimension D of the teacher.
        cfg: lattice shape, channels, rule width, steps, neighbourhood, boundary, reshaper,
            firing rate and activation checkpointing (a validated
            :class:`~cellcube.config.CubeConfig`).

    ``forward(e, steps=None)`` returns the transformed embedding (not normalised); ``steps``
    overrides the configured number of propagation steps (0 skips the lattice dynamics).

    Example::

        >>> cube = Cube(384, CubeConfig())
        >>> e = torch.randn(8, 384)
        >>> torch.equal(cube(e), e)  # zero-initialised read-out: a fresh cube is the identity
        True

    Under the ``faces`` reshaper with zero walls the cells that cannot reach the output face, and
    those above the signal front, are skipped (:mod:`cellcube.models.cones`; ``light_cone =
    False`` turns this off). Without autograd the update runs through the in-place kernels of
    :mod:`cellcube.models.kernels`. Both give the outputs and gradients of the plain loop.
    """

    light_cone: bool = True

    def __init__(self, dim: int, cfg: CubeConfig) -> None:
        super().__init__()
        self.dim = dim
        self.steps = cfg.steps
        self.steps_range = cfg.steps_range
        self.clamp = cfg.clamp
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

    def forward(self, e: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.steps if steps is None else steps
        # under cube.clamp every cell runs every step (the rewritten input face changes them)
        if not (self.clamp or torch.is_grad_enabled()) and self.rule.folds_residual(e.device):
            return kernels.infer(self, e, steps)  # inference: same numbers, in place
        if self.follows_cones(steps):
            depth = self.reshaper.lattice[2]
            x = propagate(self.reshaper.encode_face(e), depth, steps, self.step)
            return self.reshaper.decode(x, e)
        return self.trajectory(e, [steps])[0]

    def trajectory(self, e: torch.Tensor, steps: list[int]) -> list[torch.Tensor]:
        """The outputs after each of ``steps`` (ascending) updates of one forward pass, by the
        plain loop over every cell; under ``cube.clamp`` the input face is rewritten after every
        step. ``trajectory(e, [T])[0]`` equals ``forward(e, T)``."""
        x0 = x = self.reshaper.encode(e)
        outs = [self.reshaper.decode(x, e)] if steps[0] == 0 else []
        for t in range(1, steps[-1] + 1):
            x = self.step(x)
            if self.clamp:
                x = self.reshaper.clamp(x, x0)
            if t in steps:
                outs.append(self.reshaper.decode(x, e))
        return outs

    def training_outputs(self, e: torch.Tensor) -> list[torch.Tensor]:
        """The predictions training supervises: ``[forward(e)]``; under ``cube.steps_range``
        ``[lo, hi]`` in training mode, the outputs at every step ``lo .. T`` of a ``T`` drawn
        uniformly from ``lo .. hi`` (torch's global RNG), each given a loss."""
        if self.steps_range is None or not self.training:
            return [self(e)]
        lo, hi = self.steps_range
        t = int(torch.randint(lo, hi + 1, ()).item())
        return self.trajectory(e, list(range(lo, t + 1)))

    def step(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        top: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One application of :attr:`rule` (arguments as :meth:`CellRule.forward`); under
        activation checkpointing in training only its input is kept and the step is recomputed
        in backward, so activation memory grows by one lattice per step. With autograd on and
        the residual folded, the step runs as one autograd node (:func:`.step.train_step`: the
        same values and gradients)."""
        rule = self.rule
        if torch.is_grad_enabled() and rule.folds_residual(x.device):
            rule = functools.partial(train_step, self.rule)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(rule, x, start, stop, top, use_reentrant=False)
        return rule(x, start, stop, top)

    def follows_cones(self, steps: int | None = None) -> bool:
        """Whether a forward pass of ``steps`` skips cells (:mod:`cellcube.models.cones`): the
        ``faces`` reshaper without ``clamp``, zero walls, the same rule for every embedding (no
        stochastic firing), and enough steps for the input to reach the output face."""
        depth = self.reshaper.lattice[2]
        return (
            self.light_cone
            and not self.clamp
            and self.reshaper.mode == "faces"
            and self.rule.boundary == "zero"
            and not self.rule.stochastic()
            and (self.steps if steps is None else steps) >= depth - 1
        )

    def plan(self, steps: int | None = None) -> list[tuple[range, range]]:
        """The layers each step of a forward pass updates (:func:`.cones.update_plan`)."""
        steps = self.steps if steps is None else steps
        return update_plan(self.reshaper.lattice[2], steps, self.follows_cones(steps))
