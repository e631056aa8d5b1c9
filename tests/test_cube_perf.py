"""The fast formulation of the cell rule, and the benchmark's FLOP and memory accounting.

The rule's fast path (one ``index_select`` gather, the residual folded into the stencil's GEMM,
the second layer accumulating onto it; in place, in blocks, without autograd) must be the same
function as the textbook formulation ``x + stencil(h) + update(gelu(perceive(h)))`` on
``gather_neighbours``, with the same gradients, and must leave the parameters and ``state_dict``
keys as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cellcube.config import CubeConfig
from cellcube.models.cube import CellRule, Cube, gather_flat, gather_neighbours, neighbour_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_cube import (
    activation_bytes,
    cube_config,
    forward_flops,
    make_cube,
    peak_train_memory,
    updated_cells,
)


def _textbook(rule: CellRule, x: torch.Tensor) -> torch.Tensor:
    """The rule as first written: K-way concatenation, three separate linear layers."""
    h = gather_neighbours(x, rule.offsets, rule.boundary)
    dx = rule.stencil(h) + rule.update(F.gelu(rule.perceive(h)))
    return x + dx * (rule.fire_rate if not rule.training else 1.0)


def _rule(neighbourhood: int, boundary: str, fire_rate: float = 1.0) -> CellRule:
    torch.manual_seed(0)
    rule = CellRule(5, 12, neighbourhood, boundary, fire_rate)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return rule


@pytest.mark.parametrize("neighbourhood", [6, 26])
@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_one_gather_equals_pad_slice_concatenate(neighbourhood, boundary):
    x = torch.randn(3, 4, 2, 5, 6)
    offsets = _rule(neighbourhood, boundary).offsets
    index = neighbour_index((4, 2, 5), tuple(offsets), boundary, x.device, batch=3)
    assert index.shape == (3 * 4 * 2 * 5 * len(offsets),)
    want = gather_neighbours(x, offsets, boundary).reshape(3 * 40, -1)
    assert torch.equal(gather_flat(x, index, len(offsets)), want)


@pytest.mark.parametrize("neighbourhood", [6, 26])
@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_fused_rule_equals_textbook_rule_values_and_gradients(neighbourhood, boundary):
    fast, slow = _rule(neighbourhood, boundary), _rule(neighbourhood, boundary)
    x = torch.randn(2, 3, 4, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_fast, out_slow = fast(x), _textbook(slow, x2)
    torch.testing.assert_close(out_fast, out_slow, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out_fast)
    out_fast.backward(g)
    out_slow.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_expected_update_at_inference_with_fire_rate():
    fast, slow = _rule(6, "zero", 0.5).eval(), _rule(6, "zero", 0.5).eval()
    x = torch.randn(2, 3, 3, 3, 5)
    torch.testing.assert_close(fast(x), _textbook(slow, x), rtol=1e-5, atol=1e-5)
    fast.train()
    torch.manual_seed(3)  # stochastic firing: every cell either keeps its state or updates fully
    out = fast(x)
    updated = _textbook(slow.train(), x)
    kept = (out - x).abs().amax(-1) == 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(out[~kept], updated[~kept], rtol=1e-5, atol=1e-5)


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
    cube = make_cube(cfg, torch.device("cpu"))
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


def test_checkpointing_flattens_the_memory_of_a_training_step():
    """Without checkpointing each step keeps the gathered neighbourhood and the hidden layer
    before and after the GELU (the measured slope equals that count); with it, one lattice per
    step. The ``learned`` reshaper updates the whole lattice every step, so every step costs the
    same."""
    cfg = cube_config((4, 4, 6), 4, 16).model_copy(update={"reshaper": "learned"})
    q = torch.randn(8, 384)
    cube = make_cube(cfg, torch.device("cpu"))
    plain = {s: peak_train_memory(cube, q, s) for s in (6, 12)}
    ckpt_cube = make_cube(cfg.model_copy(update={"checkpointing": True}), torch.device("cpu"))
    ckpt = {s: peak_train_memory(ckpt_cube, q, s) for s in (6, 12)}
    per_step = activation_bytes(cfg, 8, 12) - activation_bytes(cfg, 8, 11)
    assert per_step == 4 * 8 * 96 * (7 * 4 + 16 + 16)
    slope_plain = (plain[12] - plain[6]) / 6
    slope_ckpt = (ckpt[12] - ckpt[6]) / 6
    assert 0.9 * per_step <= slope_plain <= 1.2 * per_step
    lattice_bytes = 4 * 8 * 96 * 4
    assert slope_ckpt <= 1.5 * lattice_bytes
    assert slope_ckpt < slope_plain / 8


def _assert_same_outputs_and_gradients(full: Cube, cone: Cube, e: torch.Tensor, steps: int) -> None:
    """``cone`` computes what ``full`` does: outputs, and a gradient for the same parameters."""
    out_full, out_cone = full(e, steps=steps), cone(e, steps=steps)
    torch.testing.assert_close(out_cone, out_full, rtol=1e-5, atol=1e-6)
    out_full.square().sum().backward()
    out_cone.square().sum().backward()
    for (name, a), b in zip(full.named_parameters(), cone.parameters(), strict=True):
        assert (b.grad is None) == (a.grad is None), name  # the same parameters take part
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_light_cone_skips_cells_without_changing_values_or_gradients(steps):
    """faces reshaper, zero walls: layers that cannot reach the output face in the steps left are
    skipped; outputs and every gradient equal the full update of all cells."""
    cfg = CubeConfig(lattice=(3, 2, 4), channels=4, hidden=8, steps=3)
    full, cone = make_cube(cfg, torch.device("cpu")), make_cube(cfg, torch.device("cpu"))
    full.light_cone = False
    e = torch.randn(5, 384)
    _assert_same_outputs_and_gradients(full, cone, e, steps)
    # layers updated per embedding (signal front: 2, 3, 4, ... high; light cone: 4, ..., 2, 1
    # in the last steps) and once for the batch (empty layers above the front, 2, 1, ...)
    per_embedding = {2: 0, 3: 1 + 1 + 1, 5: 2 + 3 + 3 + 2 + 1}[steps]
    shared = {2: 2 + 1, 3: 2 + 1, 5: 2 + 1}[steps]
    assert updated_cells(cfg, steps, 5) == 6 * (5 * per_embedding + shared)
    assert updated_cells(cfg.model_copy(update={"reshaper": "learned"}), steps, 5) == 5 * 24 * steps
    with FlopCounterMode(display=False) as counted:
        cone(e, steps=steps)
    assert counted.get_total_flops() == forward_flops(cfg, 5, steps)


@pytest.mark.parametrize("steps", [0, 4, 7])
def test_cones_with_26_neighbours_and_checkpointing_equal_the_full_update(steps):
    """The signal front and light cone under the 26-neighbourhood and activation checkpointing:
    same outputs and gradients as updating every cell (no cones, no checkpointing)."""
    cfg = CubeConfig(lattice=(3, 2, 5), channels=4, hidden=8, steps=4, neighbourhood=26)
    full = make_cube(cfg, torch.device("cpu"), cones=False)
    cone = make_cube(cfg.model_copy(update={"checkpointing": True}), torch.device("cpu"))
    e = torch.randn(3, 384)
    _assert_same_outputs_and_gradients(full, cone, e, steps)
    assert cone.reshaper.proj_in.weight.grad is not None  # zero at 0 steps, as in the full


@pytest.mark.parametrize("rows", [10, 48, 4096])
def test_in_place_inference_equals_the_differentiable_path(monkeypatch, rows):
    """Without autograd, blocks are gathered and updated in place in reused buffers: same values
    as the differentiable path updating every cell, whether a block splits an embedding (10
    cells), spans several (48) or holds the whole batch; with the signal front's shared top
    piece, the light cone and the expected update of ``fire_rate < 1`` folded into the weights."""
    import cellcube.models.cube as cube_mod

    cfg = CubeConfig(lattice=(3, 2, 4), channels=4, hidden=8, steps=3, fire_rate=0.5)
    full = make_cube(cfg, torch.device("cpu"), cones=False).eval()
    cone = make_cube(cfg, torch.device("cpu")).eval()
    e = torch.randn(5, 384)
    want = full(e, steps=5)
    assert want.requires_grad  # the differentiable path
    monkeypatch.setattr(cube_mod, "CHUNK_ROWS", rows)
    with torch.inference_mode():
        got = cone(e, steps=5)
        got_full = full(e, steps=5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_full, want, rtol=1e-5, atol=1e-6)


def test_in_place_steps_take_turns_between_two_buffers():
    """Given a workspace, successive in-place steps write into its two buffers in turn (no new
    lattice per step) and compute the same states as the textbook rule."""
    rule = _rule(6, "zero").eval()
    x = torch.randn(2, 3, 2, 4, 5)
    workspace = torch.empty(2 * 24 + 1, 5), torch.empty(2 * 24 + 1, 5)
    with torch.inference_mode():
        weights, index = rule.fused_weights(), rule.index(x)
        x1 = rule.step(x, index, *weights, workspace=workspace)
        x2 = rule.step(x1, index, *weights, workspace=workspace)
    assert x1.data_ptr() == workspace[1].data_ptr()
    assert x2.data_ptr() == workspace[0].data_ptr()
    torch.testing.assert_close(x2, _textbook(rule, _textbook(rule, x)), rtol=1e-5, atol=1e-5)
    with torch.inference_mode(), pytest.raises(ValueError, match="49 rows needed"):
        rule.step(x, index, *weights, workspace=(torch.empty(48, 5), torch.empty(48, 5)))
