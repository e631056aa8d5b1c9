"""Workloads and accounting of the cube's performance suite (:mod:`benchmarks.bench_cube`).

What the benchmark runs and how it counts, kept apart from the driver that times and reports:
the cubes it builds (:func:`make_cube`, :func:`cube_config`), the input batch
(:func:`random_batch`), the inference and training steps it times (:func:`infer_fn`,
:func:`train_step_fn`), the timers (:func:`best_time`, :func:`paired_time`,
:func:`gemm_flops_per_s`), the FLOP and memory accounting (:func:`updated_cells`,
:func:`forward_flops`, :func:`activation_bytes`, :func:`peak_train_memory`), and the per-cell
reference of the rule with the error measure it is compared by (:func:`per_cell_forward`,
:func:`input_signal`, :func:`signal_error`). The tests use the same helpers as oracles.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cellcube.config import Config, CubeConfig
from cellcube.models.cones import update_plan
from cellcube.models.cube import Cube
from cellcube.objectives.losses import build_loss

DIM = 384  # MiniLM's embedding size


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a timer sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, min_time: float, reps: int) -> float:
    """Fastest wall time of ``fn`` over repeats (after one warm-up call)."""
    fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < min_time):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def paired_time(
    fn: Callable[[], object], flops: float, device: torch.device, min_time: float, reps: int
) -> tuple[float, float]:
    """``(fastest time of fn, median FLOP efficiency over paired repeats)``.

    The VM's speed drifts from second to second, so each timed repeat of ``fn`` is paired with
    a GEMM timed just before it (one timed GEMM after a warm-up one): the efficiency of a
    pair, ``flops / t_i / gemm_i``, compares the cube with the machine as it was at that
    moment, and the median over pairs is reported."""
    fn()
    sync(device)
    times: list[float] = []
    effs: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < min_time):
        gemm = gemm_flops_per_s(device, min_time=0.0, reps=3)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        effs.append(flops / times[-1] / gemm)
    return min(times), statistics.median(effs)


def gemm_flops_per_s(device: torch.device, min_time: float = 1.0, reps: int = 10) -> float:
    """The machine's practical fp32 peak: FLOP/s of a large square matmul (fastest of repeats)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 / best_time(lambda: a @ b, device, min_time=min_time, reps=reps)


def cube_config(lattice: tuple[int, int, int], channels: int, hidden: int) -> CubeConfig:
    """The default cube (faces reshaper, 6-neighbourhood) on ``lattice``; steps are per call."""
    return CubeConfig(lattice=lattice, channels=channels, hidden=hidden, steps=lattice[2] - 1)


def updated_cells(cfg: CubeConfig, steps: int, batch: int, cones: bool = True) -> int:
    """Cell updates one forward pass of a batch performs: :meth:`Cube.plan` (light cone and
    signal front under the faces reshaper with zero walls; every cell every step otherwise)."""
    cones = cones and cfg.reshaper == "faces" and cfg.boundary == "zero"
    plan = update_plan(cfg.lattice[2], steps, cones)
    return cfg.lattice[0] * cfg.lattice[1] * sum(batch * len(d) + len(s) for d, s in plan)


def forward_flops(
    cfg: CubeConfig, batch: int, steps: int, dim: int = DIM, cones: bool = True
) -> int:
    """Multiply-adds x 2 of one forward pass (what is counted: :mod:`benchmarks.bench_cube`)."""
    k = 7 if cfg.neighbourhood == 6 else 27
    c, h = cfg.channels, cfg.hidden
    per_cell_step = k * c * (c + h) + h * c
    face = cfg.lattice[0] * cfg.lattice[1] if cfg.reshaper == "faces" else cfg.n_cells
    reshaper = 2 * dim * face * c
    return 2 * (updated_cells(cfg, steps, batch, cones) * per_cell_step + batch * reshaper)


def activation_bytes(cfg: CubeConfig, batch: int, steps: int, cones: bool = True) -> int:
    """Tensors a training step keeps per cell update without checkpointing: the gathered
    neighbourhood, the hidden layer before and after the GELU (fp32)."""
    k = 7 if cfg.neighbourhood == 6 else 27
    c, h = cfg.channels, cfg.hidden
    return 4 * updated_cells(cfg, steps, batch, cones) * (k * c + 2 * h)


def make_cube(
    cfg: CubeConfig,
    device: torch.device,
    seed: int = 0,
    cones: bool = True,
    gain: float | None = None,
    dim: int = DIM,
) -> Cube:
    """A cube with random weights everywhere (the zero-initialised read-out included).

    By default every weight is drawn from N(0, 0.02): enough for timing and memory, but the part
    of the output that depends on the input is then about 1e-6, below any float tolerance.
    ``gain``: draw each weight matrix from N(0, gain^2 / fan_in) and each bias from N(0, 0.01)
    instead; at ``gain=1`` every embedding's own input visibly drives its output (what the
    equivalence checks need). ``cones=False`` updates every cell at every step (no light cone,
    no signal front).
    """
    torch.manual_seed(seed)
    cube = Cube(dim, cfg)
    cube.light_cone = cones
    with torch.no_grad():
        for p in cube.parameters():
            if gain is None:
                p.normal_(0, 0.02)
            else:
                p.normal_(0, gain / math.sqrt(p.shape[1]) if p.dim() == 2 else 0.1)
    return cube.to(device)


def input_signal(model: Callable[[torch.Tensor], torch.Tensor], e: torch.Tensor) -> torch.Tensor:
    """The part of ``model(e)`` that depends on the input through the model: the output minus
    the embedding itself (the reshaper's identity residual) minus the output for a zero input."""
    return model(e) - e - model(torch.zeros_like(e[:1]))


def signal_error(got: torch.Tensor, want: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Per row, ``|got - want|`` relative to ``signal``, the :func:`input_signal` of ``want``:
    a row that ignored its own input would show an error of about 1, float rounding about 1e-6."""
    return (got - want).norm(dim=-1) / signal.norm(dim=-1)


def per_cell_forward(cube: Cube, e: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """``cube(e, steps)`` computed the way the earlier prototype did: one embedding at a time, a
    Python loop over every cell, each cell gathering its neighbours one by one and applying
    ``x + stencil(h) + update(gelu(perceive(h)))`` on its own (no firing mask: the rule of
    ``fire_rate == 1``, or the expected update at inference). Differentiable; slow."""
    rule = cube.rule
    rate = 1.0 if rule.training else rule.fire_rate
    outputs = []
    for row in e:
        state = cube.reshaper.encode(row[None])[0]  # (X, Y, Z, C)
        for _ in range(cube.steps if steps is None else steps):
            new = []
            for cell in itertools.product(*(range(n) for n in state.shape[:3])):
                around = [[p + o for p, o in zip(cell, off, strict=True)] for off in rule.offsets]
                h = torch.cat([_state_at(state, pos, rule.boundary) for pos in around])
                dx = rule.stencil(h) + rule.update(F.gelu(rule.perceive(h)))
                new.append(state[cell] + rate * dx)
            state = torch.stack(new).view(state.shape)
        outputs.append(cube.reshaper.decode(state[None], row[None])[0])
    return torch.stack(outputs)


def _state_at(state: torch.Tensor, pos: list[int], boundary: str) -> torch.Tensor:
    """The state at ``pos`` of an ``(X, Y, Z, C)`` lattice: zero beyond a wall, or wrapped."""
    shape = state.shape[:3]
    if boundary == "periodic":
        return state[tuple(p % n for p, n in zip(pos, shape, strict=True))]
    if all(0 <= p < n for p, n in zip(pos, shape, strict=True)):
        return state[tuple(pos)]
    return state.new_zeros(state.shape[3])


def random_batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random unit-norm question and answer embeddings (fixed seed) on ``device``."""
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(batch, DIM, generator=g), dim=-1).to(device)
    a = F.normalize(torch.randn(batch, DIM, generator=g), dim=-1).to(device)
    return q, a


def train_step_fn(
    model: torch.nn.Module, q: torch.Tensor, a: torch.Tensor, steps: int | None, autocast: bool
) -> Callable[[], None]:
    """One optimisation step: forward, InfoNCE + cosine, backward, AdamW (fp32 master weights)."""
    loss = build_loss(Config().loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.arange(q.shape[0], device=q.device)
    kw = {} if steps is None else {"steps": steps}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(q.device.type, torch.bfloat16, enabled=autocast):
            out = model(q, **kw)
        total, _ = loss(out.float(), a, ids)
        total.backward()
        opt.step()

    return step


def infer_fn(
    model: torch.nn.Module, q: torch.Tensor, steps: int | None, autocast: bool
) -> Callable[[], torch.Tensor]:
    kw = {} if steps is None else {"steps": steps}

    def run() -> torch.Tensor:
        bf16 = torch.autocast(q.device.type, torch.bfloat16, enabled=autocast)
        with torch.inference_mode(), bf16:
            return model(q, **kw)

    return run


def peak_train_memory(cube: Cube, q: torch.Tensor, steps: int) -> int:
    """Peak bytes of live tensors during one forward + backward of ``cube`` (training mode).

    CUDA: ``torch.cuda.max_memory_allocated`` around the step. CPU: torch's profiler with
    ``profile_memory=True`` records every allocation (attributed to the op that made it, its
    ``self_cpu_memory_usage``) and every release (``[memory]`` events); the running sum of these
    in time order is the bytes held by tensors, and its maximum is the peak. Parameters, the
    input and the gradients' final storage count only in so far as they are allocated inside.
    """
    cube.train()
    for p in cube.parameters():
        p.grad = None
    if q.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        cube(q, steps=steps).square().sum().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        cube(q, steps=steps).square().sum().backward()
    deltas = []
    for ev in prof.events():
        used = ev.cpu_memory_usage if ev.name == "[memory]" else ev.self_cpu_memory_usage
        if used:
            deltas.append((ev.time_range.start, used))
    deltas.sort()
    live = peak = 0
    for _, used in deltas:
        live += used
        peak = max(peak, live)
    return peak
