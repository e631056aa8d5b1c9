"""The vectorised cube equals a per-cell loop reference; checkpointing changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cellcube.config import CubeConfig
from cellcube.models.cube import Cube

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_cube import reference_forward


def _trained_like(cfg: CubeConfig, dim: int = 24) -> Cube:
    torch.manual_seed(0)
    cube = Cube(dim, cfg)
    with torch.no_grad():
        for p in cube.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return cube.eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"neighbourhood": 26},
        {"boundary": "periodic"},
        {"reshaper": "learned", "fire_rate": 0.5},
        {"reshaper": "plain", "lattice": (2, 3, 2), "channels": 2},
    ],
)
def test_vectorised_cube_matches_per_cell_reference(overrides):
    cfg = CubeConfig(**{"lattice": (3, 2, 3), "channels": 4, "hidden": 8, "steps": 3, **overrides})
    cube = _trained_like(cfg)
    e = torch.randn(3, 24)
    with torch.no_grad():
        fast = cube(e)
    torch.testing.assert_close(fast, reference_forward(cube, e), rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_identical_values_and_gradients():
    cfg = CubeConfig(lattice=(3, 3, 3), channels=4, hidden=8, steps=4)
    plain, ckpt = _trained_like(cfg), _trained_like(cfg.model_copy(update={"checkpointing": True}))
    plain.train()
    ckpt.train()
    e = torch.randn(5, 24)
    out_p, out_c = plain(e), ckpt(e)
    torch.testing.assert_close(out_p, out_c)
    out_p.square().sum().backward()
    out_c.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
