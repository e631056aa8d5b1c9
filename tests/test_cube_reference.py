"""The cube as it trains equals a per-cell loop of the rule: values and gradients.

The per-cell reference is :func:`benchmarks.cube_workloads.per_cell_forward` (one embedding at a
time, each cell gathering its neighbours one by one: also the benchmark's baseline). The weights
are drawn at ``gain=1`` (:func:`benchmarks.cube_workloads.make_cube`), where the part of each
output that depends on its own input is of order 1, so a tolerance of 1e-4 of it sees any mix-up.
"""

from __future__ import annotations

import pytest
import torch
from benchmarks.cube_workloads import input_signal, make_cube, per_cell_forward, signal_error

from cellcube.config import CubeConfig
from cellcube.models.cube import Cube

SMALL = {"lattice": (3, 2, 4), "channels": 4, "hidden": 8, "steps": 3}


def _cube(cones: bool = True, **overrides) -> Cube:
    cfg = CubeConfig(**{**SMALL, **overrides})
    return make_cube(cfg, torch.device("cpu"), cones=cones, gain=1.0, dim=24)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, marks=pytest.mark.slow),
        pytest.param({"steps": 5}, marks=pytest.mark.slow),
        pytest.param({"neighbourhood": 26}, marks=pytest.mark.slow),
        pytest.param({"boundary": "periodic"}, marks=pytest.mark.slow),
        pytest.param({"reshaper": "learned"}, marks=pytest.mark.slow),
        {"reshaper": "plain", "lattice": (2, 3, 2), "channels": 2},
    ],
)
def test_training_path_equals_per_cell_reference_values_and_gradients(overrides):
    cube, ref = _cube(**overrides).train(), _cube(**overrides).train()
    e = torch.randn(2, 24)
    out, want = cube(e), per_cell_forward(ref, e)
    with torch.no_grad():
        signal = input_signal(lambda q: per_cell_forward(ref, q), e)
    assert signal.norm(dim=-1).min() > 0.05  # every row's input really drives its output
    assert signal_error(out, want, signal).max() < 1e-4
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g)
    for (name, a), b in zip(cube.named_parameters(), ref.parameters(), strict=True):
        assert b.grad.norm() > 0, name
        assert _relative(a.grad, b.grad) < 1e-4, name


@pytest.mark.slow
def test_inference_applies_the_expected_update_of_fire_rate():
    cube = _cube(reshaper="learned", fire_rate=0.5).eval()
    e = torch.randn(3, 24)
    with torch.no_grad():
        want = per_cell_forward(cube, e)
        signal = input_signal(lambda q: per_cell_forward(cube, q), e)
        out = cube(e)
    assert signal_error(out, want, signal).max() < 1e-4


def test_stochastic_firing_keeps_or_updates_every_cell():
    """Training with fire_rate < 1: each cell either keeps its state or takes the full update."""
    rule = _cube(reshaper="learned", fire_rate=0.5).rule.train()
    x = torch.randn(2, 3, 3, 3, 4)
    torch.manual_seed(3)
    out = rule(x)
    rule.fire_rate = 1.0
    full = rule(x)
    kept = (out - x).abs().amax(-1) == 0
    assert 0.2 < kept.float().mean() < 0.8
    torch.testing.assert_close(out[~kept], full[~kept], rtol=1e-6, atol=1e-6)


def test_activation_checkpointing_gives_identical_values_and_gradients():
    plain, ckpt = _cube().train(), _cube(checkpointing=True).train()
    e = torch.randn(5, 24)
    out_p, out_c = plain(e), ckpt(e)
    assert torch.equal(out_p, out_c)
    out_p.square().sum().backward()
    out_c.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name
