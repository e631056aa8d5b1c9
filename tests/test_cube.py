"""The cube: shapes, identity at init, exact reshaper, locality of the rule, vectorisation."""

from __future__ import annotations

import pytest
import torch

from cellcube.config import CubeConfig
from cellcube.errors import ConfigError
from cellcube.models.cube import CellRule, Cube, Reshaper
from cellcube.models.lattice import neighbour_offsets


def _cfg(**kw) -> CubeConfig:
    return CubeConfig(**{"lattice": (3, 4, 5), "channels": 4, "hidden": 8, "steps": 4, **kw})


def _randomise(cube: Cube) -> Cube:
    """Give the zero-initialised layers non-zero weights so the dynamics actually act."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in cube.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return cube


def test_fresh_cube_is_identity_and_shapes_hold():
    cube = Cube(32, _cfg())
    e = torch.randn(5, 32)
    out = cube(e)
    assert out.shape == (5, 32)
    assert torch.equal(out, e)  # zero-initialised read-out and rule: "do nothing" at start


def test_plain_reshaper_is_exact_and_invertible():
    cfg = _cfg(lattice=(2, 3, 4), channels=2, reshaper="plain")
    r = Reshaper(48, cfg)
    e = torch.randn(7, 48)
    x = r.encode(e)
    assert x.shape == (7, 2, 3, 4, 2)
    assert torch.equal(r.decode(x, e), e)
    # element (b, i, j, k, c) holds embedding index ((i*3 + j)*4 + k)*2 + c
    assert x[3, 1, 2, 3, 1] == e[3, ((1 * 3 + 2) * 4 + 3) * 2 + 1]


def test_plain_cube_with_zero_steps_is_exact_identity_even_when_trained():
    cube = _randomise(Cube(48, _cfg(lattice=(2, 3, 4), channels=2, reshaper="plain")))
    e = torch.randn(4, 48)
    assert torch.equal(cube(e, steps=0), e)
    assert not torch.allclose(cube(e), e)


def test_plain_reshaper_rejects_a_lattice_that_does_not_fit():
    with pytest.raises(ConfigError, match=r"cube.lattice: 3x4x5 cells x 4 channels = 240.*384"):
        Cube(384, _cfg(reshaper="plain"))


@pytest.mark.parametrize("neighbourhood", [6, 26])
@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_neighbourhood_matches_explicit_neighbour_lookup(neighbourhood, boundary):
    """Perception: each cell's row holds its own state, then each neighbour's, in offset order."""
    x = torch.randn(2, 3, 4, 5, 3)
    rule = CellRule(3, 4, neighbourhood, boundary)
    offsets = rule.offsets
    assert offsets[0] == (0, 0, 0) and len(offsets) == neighbourhood + 1
    g = rule.neighbourhood(x).view(2, 3, 4, 5, -1)
    assert g.shape == (2, 3, 4, 5, 3 * len(offsets))
    shape = x.shape[1:4]
    for cell in [(0, 0, 0), (2, 3, 4), (1, 2, 0), (1, 1, 2)]:
        for n, off in enumerate(offsets):
            pos = [c + o for c, o in zip(cell, off, strict=True)]
            if boundary == "periodic":
                want = x[(slice(None), *[p % s for p, s in zip(pos, shape, strict=True)])]
            elif all(0 <= p < s for p, s in zip(pos, shape, strict=True)):
                want = x[(slice(None), *pos)]
            else:
                want = torch.zeros(2, 3)
            got = g[(slice(None), *cell)][:, 3 * n : 3 * (n + 1)]
            assert torch.equal(got, want), (cell, off)


def test_information_travels_one_cell_per_step():
    """A change in one cell reaches exactly the cells within `steps` hops (6-neighbourhood)."""
    cfg = _cfg(lattice=(7, 1, 1), channels=4, hidden=8, reshaper="plain")
    cube = _randomise(Cube(28, cfg))
    e = torch.randn(1, 28)
    e2 = e.clone()
    e2[0, 0:4] += torch.randn(4)  # perturb cell 0 (not uniformly: LayerNorm ignores a shift)
    for steps in (1, 2, 3):
        diff = (cube(e2, steps=steps) - cube(e, steps=steps)).abs().view(7, 4).sum(-1)
        assert (diff[: steps + 1] > 0).all()
        assert (diff[steps + 1 :] == 0).all()


def test_batch_rows_are_independent():
    cube = _randomise(Cube(32, _cfg()))
    e = torch.randn(6, 32)
    batched = cube(e)
    single = torch.cat([cube(e[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient_once_training_starts():
    cube = Cube(32, _cfg())
    opt = torch.optim.SGD(cube.parameters(), lr=0.1)
    e, target = torch.randn(8, 32), torch.randn(8, 32)
    # zero-initialised read-out, then rule output layer, then the rest start receiving gradient
    for _ in range(3):
        opt.zero_grad()
        ((cube(e) - target) ** 2).mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cube.parameters())


def test_a_neighbourhood_has_6_or_26_cells():
    assert len(set(neighbour_offsets(26))) == 27
    with pytest.raises(ValueError, match="6 or 26"):
        neighbour_offsets(8)


def test_faces_reshaper_needs_steps_to_cross_the_lattice():
    """Input enters at z=0 and leaves at z=Z-1: with fewer than Z-1 steps no information about
    the input arrives, so the cube adds the same (bias-driven) vector to every embedding."""
    cube = _randomise(Cube(32, _cfg(lattice=(2, 3, 4), reshaper="faces")))
    e = torch.randn(5, 32)
    for steps in range(3):  # Z - 1 = 3 hops are needed
        delta = cube(e, steps=steps) - e
        torch.testing.assert_close(delta, delta[:1].expand_as(delta), rtol=0, atol=1e-6)
    delta = cube(e, steps=3) - e
    assert (delta - delta[:1]).abs().max() > 1e-3


def test_faces_reshaper_sizes_its_projections_to_one_face():
    cube = Cube(384, _cfg(lattice=(4, 4, 8), channels=16, steps=7, reshaper="faces"))
    assert cube.reshaper.proj_in.weight.shape == (4 * 4 * 16, 384)
    assert cube.reshaper.proj_out.weight.shape == (384, 4 * 4 * 16)


def test_fresh_conveyor_rule_carries_the_input_face_to_the_output_face():
    """x[z] <- x[z] + x[z-1]: after Z-1 steps the output face holds exactly the input face."""
    cube = Cube(32, _cfg(lattice=(2, 3, 4), reshaper="faces"))
    with torch.no_grad():
        cube.rule.update.weight.zero_()
        cube.rule.update.bias.zero_()
    x0 = cube.reshaper.encode(torch.randn(5, 32))
    x = x0
    for _ in range(3):
        x_in = x
        x = cube.rule(x)
        torch.testing.assert_close(x[:, :, :, 1:], x_in[:, :, :, 1:] + x_in[:, :, :, :-1])
    torch.testing.assert_close(x[:, :, :, -1], x0[:, :, :, 0])
