"""The baselines that isolate the lattice, honest parameter counts, per-model optimiser settings."""

from __future__ import annotations

import pytest
import torch

from cellcube.config import TRAINED_MODELS, load_config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.errors import ConfigError
from cellcube.models.baselines import (
    NoLattice,
    ResidualLinear,
    Ridge,
    build_model,
    fit_ridge,
    n_params,
    trained_models,
)
from cellcube.models.params import effective_params
from cellcube.objectives.objective import Objective
from cellcube.run.rundir import RunDir
from cellcube.train.module import MapperModule

DIM = 384
TINY = ["cube.lattice=[2,2,2]", "cube.channels=4", "cube.hidden=8", "cube.steps=2"]


def test_trained_models_in_order():
    assert TRAINED_MODELS == ("cube", "no_lattice", "linear", "mlp", "cube_0_steps")
    assert trained_models(load_config()) == TRAINED_MODELS
    # under the plain reshaper no_lattice has no maps (it is the identity): left out
    plain = load_config(None, ["cube.reshaper=plain", "cube.channels=48", "cube.lattice=[2,2,2]"])
    assert "no_lattice" not in trained_models(plain)
    with pytest.raises(ConfigError, match=r"no_lattice: cube\.reshaper=plain"):
        build_model("no_lattice", DIM, plain)


@pytest.mark.parametrize("name", ["linear", "no_lattice"])
def test_new_baselines_start_at_identity(name):
    model = build_model(name, DIM, load_config())
    e = torch.randn(5, DIM)
    with torch.no_grad():
        assert torch.equal(model(e), e)


def test_no_lattice_starts_from_the_cubes_reshaper():
    for sets in ([], ["seed=3"], ["cube.reshaper=learned", "cube.steps=1"]):
        cfg = load_config(None, sets)
        cube, flat = build_model("cube", DIM, cfg), build_model("no_lattice", DIM, cfg)
        assert isinstance(flat, NoLattice)
        for key, value in flat.reshaper.state_dict().items():
            assert torch.equal(value, cube.reshaper.state_dict()[key]), (sets, key)
    # a different seed gives a different projection (the equality above is not vacuous)
    seed0, seed1 = (
        build_model("no_lattice", DIM, load_config(None, [f"seed={s}"])) for s in (0, 1)
    )
    assert not torch.equal(seed0.reshaper.proj_in.weight, seed1.reshaper.proj_in.weight)


def test_no_lattice_is_the_face_projections_composed():
    cfg = load_config()
    flat = build_model("no_lattice", DIM, cfg)
    with torch.no_grad():
        flat.reshaper.proj_out.weight.normal_()
    e = torch.randn(3, DIM)
    r = flat.reshaper
    assert r.proj_in.out_features == r.proj_out.in_features == 4 * 4 * 16  # one face, X*Y*C
    torch.testing.assert_close(flat(e), e + r.proj_out(r.proj_in(e)))


def test_linear_is_full_rank_residual():
    lin = build_model("linear", DIM, load_config())
    assert isinstance(lin, ResidualLinear)
    assert lin.linear.weight.shape == (DIM, DIM)
    assert n_params(lin) == DIM * DIM + DIM


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        # default: faces, 4x4x4, 16 channels: every stored parameter reaches the output ...
        (
            [],
            {
                "cube": 207_312,
                "no_lattice": 197_248,
                "linear": 147_840,
                "mlp": 207_245,
                # ... except with 0 steps: the empty output face leaves only proj_out.bias
                "cube_0_steps": 384,
            },
        ),
        # 2x2x2, 2 steps: the weights on the neighbour above (z+1) only ever see zeros (a wall,
        # or the empty layer above the signal front): 4*4 stencil + 4*8 perceive = 48 fewer
        (TINY, {"cube": 13_068 - 48, "cube_0_steps": 384, "no_lattice": 12_688}),
        # learned reshaper at 0 steps: the maps into and out of the whole lattice, no rule
        (["cube.reshaper=learned", "cube.steps=2"], {"cube_0_steps": 787_840}),
        # plain reshaper at 0 steps: the exact reshape and back, no parameter used
        (["cube.reshaper=plain", "cube.channels=48", "cube.lattice=[2,2,2]"], {"cube_0_steps": 0}),
    ],
)
def test_effective_params_are_exact(sets, expected):
    cfg = load_config(None, sets)
    for name, count in expected.items():
        assert effective_params(build_model(name, DIM, cfg), DIM) == count, (sets, name)


def test_stored_counts_are_unchanged_and_the_probe_leaves_the_model_alone():
    cfg = load_config()
    cube0 = build_model("cube_0_steps", DIM, cfg)
    before = {k: v.clone() for k, v in cube0.state_dict().items()}
    effective_params(cube0, DIM)
    assert all(torch.equal(v, before[k]) for k, v in cube0.state_dict().items())
    assert n_params(cube0) == 207_312  # what the mlp is sized by: its numbers stay the same
    assert build_model("mlp", DIM, cfg).fc1.out_features == 269


def test_ridge_counts_and_times_itself(tmp_path):
    q, a = torch.randn(40, 8), torch.randn(40, 8)
    ridge = fit_ridge(q, a, q[:10], torch.arange(10), a[:10], [0.1, 10.0])
    assert ridge.n_params == 8 * 8 + 8
    assert 0 < ridge.fit_seconds < 60
    run = RunDir(tmp_path)
    run.write_ridge(ridge)
    assert run.load_ridge().fit_seconds == ridge.fit_seconds
    # a ridge.pt from before fit_seconds was recorded still loads
    assert Ridge(ridge.weight, ridge.q_mean, ridge.a_mean, 0.1).fit_seconds == 0.0


def test_done_marker_records_train_seconds(tmp_path):
    run = RunDir(tmp_path)
    assert run.train_seconds("cube") is None
    run.mark_done("cube", 12.5)
    assert run.is_done("cube") and run.train_seconds("cube") == 12.5
    run.model("mlp").done.parent.mkdir(parents=True)
    run.model("mlp").done.write_text("")  # a marker of an older run
    assert run.is_done("mlp") and run.train_seconds("mlp") is None


def test_per_model_optimiser_settings(tmp_path):
    cfg = load_config(
        None,
        ["train.models.linear.lr=0.003", "train.models.mlp.weight_decay=0.1", "train.lr=0.002"],
    )
    t = cfg.train
    assert t.optimiser("linear") == (0.003, 3.0)
    assert t.optimiser("mlp") == (0.002, 0.1)
    assert t.optimiser("cube") == (0.002, 3.0)
    assert t.optimiser("no_lattice") == (0.002, 0.3)  # the tuned default entry stays
    assert set(load_config().train.models) == {"no_lattice", "cube_0_steps"}
    # --set changes one field of one entry; a config file's own `models` replaces the defaults
    merged = load_config(None, ["train.models.no_lattice.lr=0.003"]).train
    assert merged.optimiser("no_lattice") == (0.003, 0.3)
    reset = load_config(None, ["train.models.no_lattice.weight_decay=null"]).train
    assert reset.optimiser("no_lattice") == (0.001, 3.0)
    own = tmp_path / "own.yaml"
    own.write_text("train:\n  models: {linear: {lr: 0.003}}\n")
    assert load_config(own).train.optimiser("no_lattice") == (0.001, 3.0)
    # the optimiser Lightning gets is the model's own
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1)
    split = EmbeddedSplit(q, q, torch.arange(16), q, [""] * 16, [""] * 16)
    for name, want in (("linear", (0.003, 3.0)), ("mlp", (0.002, 0.1))):
        module = MapperModule(build_model(name, 8, cfg), Objective(cfg, split), cfg, name, split)
        group = module.configure_optimizers().param_groups[0]
        assert (group["lr"], group["weight_decay"]) == want


def test_unknown_model_in_train_models_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.models: unknown model 'cubee'") as info:
        load_config(None, ["train.models.cubee.lr=0.01"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'train\.models\.cube\.lrr'"):
        load_config(None, ["train.models.cube.lrr=0.01"])
    with pytest.raises(ConfigError, match=r"train\.models\.cube\.lr"):
        load_config(None, ["train.models.cube.lr=0"])
