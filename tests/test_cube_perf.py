"""The cube's fast paths compute the readable rule: kernels, training step, cones, accounting.

Three fast paths run the update of :class:`cellcube.models.cube.CellRule` differently: the
in-place blocked kernels of inference (:mod:`cellcube.models.kernels`), the one-node training
step (:mod:`cellcube.models.step`, equal to the rule bit for bit, gradients included) and the
cones, which skip cells (:mod:`cellcube.models.cones`). Each is compared with the readable rule
at weights drawn with ``gain=1`` (:func:`benchmarks.cube_workloads.make_cube`), where the part
of every output that depends on its own input (:func:`benchmarks.cube_workloads.input_signal`)
is of order 1, and the error is measured relative to that part: a path that mixed up rows, or
scaled its input, would be off by about 1 where float rounding is about 1e-6. The benchmark's
FLOP and memory accounting is checked against torch's own counters.
"""

from __future__ import annotations

import pytest
import torch
from benchmarks.cube_workloads import (
    activation_bytes,
    cube_config,
    forward_flops,
    input_signal,
    make_cube,
    peak_train_memory,
    signal_error,
    updated_cells,
)
from torch.utils.flop_counter import FlopCounterMode

from cellcube.config import CubeConfig
from cellcube.models import kernels, step
from cellcube.models.cube import Cube
from cellcube.models.lattice import inverse_index, neighbour_index
from cellcube.models.step import gather_sum

SMALL = {"lattice": (3, 2, 4), "channels": 4, "hidden": 8, "steps": 3}
CPU = torch.device("cpu")
TOLERANCE = 1e-5  # of the input-dependent part of each row; float rounding is about 1e-7


def _cube(cones: bool = True, **overrides) -> Cube:
    cfg = CubeConfig(**{**SMALL, **overrides})
    return make_cube(cfg, CPU, cones=cones, gain=1.0, dim=24).eval()


def _fast(cube: Cube, steps: int | None = None):
    """``cube`` through the in-place kernels: inference, no autograd."""

    def run(e: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return cube(e, steps=steps).clone()

    return run


def _readable(cube: Cube, steps: int | None = None):
    """``cube`` through the readable rule (autograd on, as in training)."""
    return lambda e: cube(e, steps=steps).detach()


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


CONFIGS = [
    pytest.param({}, id="faces-cones"),
    pytest.param({"steps": 5}, id="faces-cones-5-steps"),
    pytest.param({"neighbourhood": 26}, id="26-neighbours"),
    pytest.param({"boundary": "periodic"}, id="periodic"),
    pytest.param({"reshaper": "learned", "fire_rate": 0.5}, id="learned-expected-update"),
    pytest.param({"reshaper": "plain", "lattice": (2, 3, 2), "channels": 2}, id="plain"),
]


@pytest.mark.parametrize("overrides", CONFIGS)
@pytest.mark.parametrize("rows", [10, 48, 4096])
def test_in_place_kernels_equal_the_readable_rule(monkeypatch, overrides, rows):
    """Whether a block splits an embedding (10 cells), spans several (48) or holds the whole
    batch, every row equals the readable rule to 1e-5 of what depends on its input."""
    monkeypatch.setattr(kernels, "CHUNK_ROWS", rows)
    cube = _cube(**overrides)
    e = torch.randn(5, 24)
    want, signal = _readable(cube)(e), input_signal(_readable(cube), e)
    assert signal.norm(dim=-1).min() > 0.05  # every row's input really drives its output
    assert signal_error(_fast(cube)(e), want, signal).max() < TOLERANCE


@pytest.mark.parametrize("overrides", CONFIGS[:2] + CONFIGS[4:5])
def test_in_place_kernels_keep_rows_apart(overrides):
    """Permuting the batch permutes the outputs; changing one row's input changes only it."""
    fast = _fast(_cube(**overrides))
    e = torch.randn(6, 24)
    out, signal = fast(e), input_signal(fast, e)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert signal_error(fast(e[perm]), out[perm], signal[perm]).max() < TOLERANCE
    changed = e.clone()
    changed[2] = torch.randn(24)
    err = signal_error(fast(changed), out, signal)
    assert err[2] > 0.1
    assert torch.cat([err[:2], err[3:]]).max() < TOLERANCE


def _assert_same_gradients(full: Cube, cone: Cube) -> None:
    for (name, a), b in zip(full.named_parameters(), cone.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name  # the same parameters take part
        if a.grad is None or a.grad.norm() == 0:  # the rule / input face at 0 steps
            assert b.grad is None or b.grad.norm() == 0, name
        else:
            assert _relative(b.grad, a.grad) < TOLERANCE, name


@pytest.mark.parametrize("steps", [3, 5])
def test_cones_skip_cells_without_changing_values_or_gradients(steps):
    """faces reshaper, zero walls: layers that cannot reach the output face in the steps left,
    and those above the signal front, are skipped or computed once; outputs and every gradient
    equal those of updating every cell."""
    full, cone = _cube(cones=False).train(), _cube().train()
    e = torch.randn(5, 24)
    out_full, out_cone = full(e, steps=steps), cone(e, steps=steps)
    signal = input_signal(_readable(full, steps), e)
    assert signal_error(out_cone, out_full, signal).max() < TOLERANCE
    out_full.square().sum().backward()
    out_cone.square().sum().backward()
    _assert_same_gradients(full, cone)
    with FlopCounterMode(display=False) as counted:
        cone(e, steps=steps)
    assert counted.get_total_flops() == forward_flops(CubeConfig(**SMALL), 5, steps, dim=24)


def _graph(t: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind ``t``."""
    seen, todo = {}, [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = node.name()
            todo.extend(next_fn for next_fn, _ in node.next_functions)
    return set(seen.values())


DEFAULT_SIZE = {"lattice": (4, 4, 4), "channels": 16, "hidden": 64, "steps": 4}
STEP_CONFIGS = [
    *CONFIGS[:4],
    CONFIGS[5],
    pytest.param({"checkpointing": True}, id="checkpointed"),
    pytest.param(DEFAULT_SIZE, id="default-size"),
    pytest.param({**DEFAULT_SIZE, "neighbourhood": 26, "steps": 5}, id="default-size-26-5-steps"),
]


def _same(a: torch.Tensor, b: torch.Tensor, exact: bool, name: str) -> None:
    if exact:
        assert torch.equal(a, b), name
    else:  # several threads may split a GEMM's reduction differently for the two layouts
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()), msg=name)


@pytest.mark.parametrize("block_bytes", [step.BLOCK_BYTES, 1], ids=["blocks", "64-rows"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("overrides", STEP_CONFIGS)
def test_training_step_equals_the_readable_rule_bit_for_bit(
    monkeypatch, overrides, threads, block_bytes
):
    """The one-node training step (:mod:`cellcube.models.step`, here for steps of any size)
    gives the outputs and every gradient (weights and input embeddings) of the readable rule
    exactly on one thread: the same GEMMs, and the same additions in the same order. Cones, 26
    neighbours, periodic walls, the plain reshaper, checkpointing, and the default lattice
    (4x4x4, 16 channels, hidden 64, 4 steps); in the step's own blocks and in the smallest
    (64 rows), which split the steps of more than 127 cells, with a ragged last block.
    On two threads a weight
    gradient's GEMM may round differently (26 neighbours): equal within 1e-5 relative."""
    monkeypatch.setattr(step, "MIN_CELLS", 0)
    monkeypatch.setattr(step, "BLOCK_BYTES", block_bytes)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_step_against_rule(monkeypatch, overrides, exact=threads == 1)
    finally:
        torch.set_num_threads(before)


def _check_step_against_rule(monkeypatch, overrides, exact: bool) -> None:
    runs = {}
    for name in ("fast", "readable"):
        with monkeypatch.context() as patch:
            if name == "readable":  # every op of the rule recorded by autograd
                patch.setattr(
                    Cube, "step", lambda self, x, a=0, b=None, top=None: self.rule(x, a, b, top)
                )
            cube = _cube(**overrides).train()
            e = torch.randn(5, 24, generator=torch.Generator().manual_seed(3)).requires_grad_()
            out = cube(e)
            out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(4)))
        runs[name] = out, e.grad, cube, _graph(out)
    (out, e_grad, fast, nodes), (want, want_e_grad, readable, readable_nodes) = runs.values()
    assert "RuleStepBackward" in nodes and "RuleStepBackward" not in readable_nodes
    assert input_signal(lambda q: readable(q).detach(), e.detach()).norm(dim=-1).min() > 0.05
    _same(out, want, exact, "output")
    _same(e_grad, want_e_grad, exact, "input gradient")
    for (name, a), b in zip(fast.named_parameters(), readable.parameters(), strict=True):
        assert b.grad is not None and b.grad.norm() > 0, name
        _same(a.grad, b.grad, exact, name)


@pytest.mark.parametrize("threads", [1, 2])
def test_gather_through_the_inverse_table_equals_index_add(threads):
    """The backward of the neighbour gather: summing each row's gathered gradients through
    :func:`inverse_index` equals ``index_add_`` (the scatter that ``index_select``'s backward
    runs) bit for bit, rows read 0 to 9 times, and rows never read get zeros; the last row (the
    zero wall, read most often) is left out."""
    g = torch.Generator().manual_seed(0)
    index = torch.cat([torch.randint(0, 140, (900,), generator=g), torch.full((9,), 141)])
    index = torch.cat([index, torch.full((30,), 142)])  # the wall
    index = index[torch.randperm(len(index), generator=g)]
    grads = torch.randn(len(index), 5, generator=g) * 10.0 ** torch.randint(
        -3, 4, (len(index), 1), generator=g
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        want = torch.zeros(143, 5).index_add_(0, index, grads)[:142]
        inverse = inverse_index(index, 143, 7)  # rows read 8 or 9 times: listed apart
        got = gather_sum(torch.cat([grads, torch.zeros(1, 5)]), inverse)
        step.BLOCK_BYTES, default = 1, step.BLOCK_BYTES  # blocks of 64 rows
        try:
            in_blocks = gather_sum(torch.cat([grads, torch.zeros(1, 5)]), inverse)
        finally:
            step.BLOCK_BYTES = default
    finally:
        torch.set_num_threads(before)
    assert inverse.table.shape == (7, 142) and len(inverse.rows) >= 9
    assert torch.equal(got, want) and torch.equal(in_blocks, want)
    assert got[140].abs().sum() == 0 and got[141].abs().sum() > 0


def test_update_plan_counts_the_cells_the_cones_leave():
    """Per embedding, the layers between the signal front (2, 3 ... high) and the light cone
    (cutting from below: ..., 2, 1 in the last steps); once for the batch, the empty layers above
    the front (2, 1). With fewer than Z-1 steps the input cannot reach the output: every cell is
    updated."""
    cfg = CubeConfig(**SMALL)
    for steps, per_embedding, shared in ((3, 1 + 1 + 1, 2 + 1), (5, 2 + 3 + 3 + 2 + 1, 2 + 1)):
        assert updated_cells(cfg, steps, 5) == 6 * (5 * per_embedding + shared)
    assert updated_cells(cfg, 2, 5) == updated_cells(cfg, 2, 5, cones=False) == 5 * 24 * 2
    assert _cube().plan(2) == _cube(cones=False).plan(2)


@pytest.mark.parametrize("steps", [0, 4, 7])
def test_cones_with_26_neighbours_and_checkpointing_equal_the_full_update(steps):
    full = _cube(cones=False, lattice=(3, 2, 5), steps=4, neighbourhood=26).train()
    cone = _cube(lattice=(3, 2, 5), steps=4, neighbourhood=26, checkpointing=True).train()
    e = torch.randn(3, 24)
    out_full, out_cone = full(e, steps=steps), cone(e, steps=steps)
    if steps:
        signal = input_signal(_readable(full, steps), e)
        assert signal_error(out_cone, out_full, signal).max() < TOLERANCE
    else:  # the lattice is skipped: e plus the read-out of the empty output face
        assert torch.equal(out_cone, out_full)
    out_full.square().sum().backward()
    out_cone.square().sum().backward()
    _assert_same_gradients(full, cone)


def test_in_place_steps_take_turns_between_two_buffers():
    """Given a workspace, successive in-place steps write into its two buffers in turn (no new
    lattice per step) and compute the readable rule's states."""
    rule = _cube(reshaper="learned").rule
    x = torch.randn(2, 3, 2, 4, 4)
    workspace = torch.empty(2 * 24 + 1, 4), torch.empty(2 * 24 + 1, 4)
    want = rule(rule(x)).detach()
    with torch.inference_mode():
        weights = (*rule.fused_weights(), rule.perceive.weight, rule.perceive.bias)
        index = rule.index(x)
        x1 = kernels.step_in_place(x, index, weights, workspace=workspace)
        x2 = kernels.step_in_place(x1, index, weights, workspace=workspace)
    assert x1.data_ptr() == workspace[1].data_ptr()
    assert x2.data_ptr() == workspace[0].data_ptr()
    assert _relative(x2 - x, want - x) < TOLERANCE
    with torch.inference_mode(), pytest.raises(ValueError, match="49 rows needed"):
        kernels.step_in_place(x, index, weights, workspace=(torch.empty(48, 4),) * 2)


def test_parameters_and_checkpoint_keys_unchanged():
    cube = Cube(24, CubeConfig(lattice=(2, 2, 3), channels=4, hidden=8, steps=2))
    assert sorted(cube.state_dict()) == [
        "reshaper.proj_in.bias",
        "reshaper.proj_in.weight",
        "reshaper.proj_out.bias",
        "reshaper.proj_out.weight",
        "rule.perceive.bias",
        "rule.perceive.weight",
        "rule.stencil.weight",
        "rule.update.bias",
        "rule.update.weight",
    ]


def test_neighbour_table_cached_in_inference_mode_still_trains():
    """The cached table must not be an inference tensor, or the next training step would fail."""
    neighbour_index.cache_clear()
    cube = Cube(24, CubeConfig(lattice=(3, 2, 3), channels=4, hidden=8, steps=2))
    e = torch.randn(4, 24)
    with torch.inference_mode():
        cube(e)
    cube(e).square().sum().backward()
    assert cube.rule.perceive.weight.grad is not None


def test_counted_flops_are_the_multiply_adds_torch_performs():
    """forward_flops equals torch's own FLOP counter; a training step counts 3x the forward
    except the input gradient of the first projection, which nothing needs."""
    cfg = cube_config((3, 4, 5), 4, 8)
    cube = make_cube(cfg, CPU)
    e = torch.randn(6, 384)
    with FlopCounterMode(display=False) as fwd:
        cube(e, steps=6)
    assert fwd.get_total_flops() == forward_flops(cfg, 6, 6) == 1_237_248
    with FlopCounterMode(display=False) as train:
        cube(e, steps=6).sum().backward()
    face_in = 2 * 6 * 384 * (3 * 4 * 4)
    # the first update of the shared layers above the signal front acts on zeros: no input
    # gradient either (3 layers of 3x4 cells, once per batch, K*C x (C+H) multiply-adds)
    shared_in = 2 * (3 * 3 * 4) * (7 * 4) * (4 + 8)
    assert train.get_total_flops() == 3 * forward_flops(cfg, 6, 6) - face_in - shared_in


@pytest.mark.slow
def test_checkpointing_flattens_the_memory_of_a_training_step():
    """Without checkpointing each step keeps the gathered neighbourhood and the hidden layer
    before and after the GELU (the measured slope equals that count); with it, one lattice per
    step. The ``learned`` reshaper updates the whole lattice every step, so every step costs the
    same."""
    cfg = cube_config((4, 4, 6), 4, 16).model_copy(update={"reshaper": "learned"})
    q = torch.randn(8, 384)
    cube = make_cube(cfg, CPU)
    plain = {s: peak_train_memory(cube, q, s) for s in (6, 12)}
    ckpt_cube = make_cube(cfg.model_copy(update={"checkpointing": True}), CPU)
    ckpt = {s: peak_train_memory(ckpt_cube, q, s) for s in (6, 12)}
    per_step = activation_bytes(cfg, 8, 12) - activation_bytes(cfg, 8, 11)
    assert per_step == 4 * 8 * 96 * (7 * 4 + 16 + 16)
    slope_plain = (plain[12] - plain[6]) / 6
    slope_ckpt = (ckpt[12] - ckpt[6]) / 6
    assert 0.9 * per_step <= slope_plain <= 1.2 * per_step
    lattice_bytes = 4 * 8 * 96 * 4
    assert slope_ckpt <= 1.5 * lattice_bytes
    assert slope_ckpt < slope_plain / 8
