"""The cube's variants: refinement of a linear map, clamped input, no skip path, anytime
training (a loss at several steps), and the low-rank linear baseline."""

from __future__ import annotations

import pytest
import torch

from cellcube.config import load_config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.errors import ConfigError
from cellcube.models.baselines import build_model, n_params
from cellcube.models.cube import Cube
from cellcube.models.params import effective_params
from cellcube.models.refine import Refined, ResidualLinear
from cellcube.objectives.objective import Objective, supervised_predictions

DIM = 384
TINY = ["cube.lattice=[2,2,3]", "cube.channels=4", "cube.hidden=8", "cube.steps=3"]


def _randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Give every parameter a random value, so that no zero initialisation hides a path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _cfg(*sets: str):
    return load_config(None, [*TINY, *sets])


def test_refined_at_zero_steps_is_exactly_the_linear_adapter():
    cfg = _cfg("cube.base=linear")
    zero = build_model("cube_0_steps", DIM, cfg)
    assert isinstance(zero, Refined) and zero.steps == 0
    _randomise(zero)
    linear = ResidualLinear(DIM)
    linear.load_state_dict(zero.base.state_dict())
    e = torch.randn(6, DIM)
    assert torch.equal(zero(e), linear(e))
    assert torch.equal(zero.training_outputs(e)[0], linear(e))
    assert effective_params(zero, DIM) == n_params(linear) == DIM * DIM + DIM
    # with steps the lattice adds far more than any tolerance (the equality is not vacuous)
    cube = build_model("cube", DIM, cfg)
    cube.load_state_dict(zero.state_dict())
    assert (cube(e) - linear(e)).abs().max() > 0.1


@pytest.mark.parametrize("reads", ["input", "base"])
def test_refined_adds_the_cubes_change_to_the_base_map(reads):
    model = build_model("cube", DIM, _cfg("cube.base=linear", f"cube.reads={reads}"))
    e = torch.randn(5, DIM)
    assert torch.equal(model(e), e)  # both parts start as the identity
    _randomise(model, seed=1)
    b = model.base(e)
    x = e if reads == "input" else b
    expected = b + model.cube(x) - x
    torch.testing.assert_close(model(e), expected)
    if reads == "base":  # the cube's residual is the base map's output itself
        torch.testing.assert_close(model(e), model.cube(b))
    # the cube starts with the default cube's weights (built first under the same seed)
    plain = build_model("cube", DIM, _cfg())
    assert torch.equal(
        build_model("cube", DIM, _cfg("cube.base=linear")).cube.reshaper.proj_in.weight,
        plain.reshaper.proj_in.weight,
    )


def test_mlp_is_sized_by_the_refined_cube():
    cfg = _cfg("cube.base=linear")
    cube, mlp = build_model("cube", DIM, cfg), build_model("mlp", DIM, cfg)
    assert abs(n_params(mlp) - n_params(cube)) < 2 * DIM + 1  # one hidden unit


def test_clamped_cube_rewrites_the_input_face_after_every_step():
    cfg = _cfg("cube.clamp=true")
    cube = build_model("cube", DIM, cfg)
    _randomise(cube, seed=2, scale=0.3)
    e = torch.randn(4, DIM)
    x0 = x = cube.reshaper.encode(e)
    for _ in range(cfg.cube.steps):  # the loop by hand
        x = cube.rule(x)
        x = torch.cat([x0[:, :, :, :1], x[:, :, :, 1:]], dim=3)
    expected = cube.reshaper.decode(x, e)
    torch.testing.assert_close(cube(e), expected)
    with torch.no_grad():  # inference takes the same path
        torch.testing.assert_close(cube(e), expected)
    # seeding once (no clamp) gives another function
    free = build_model("cube", DIM, _cfg())
    free.load_state_dict(cube.state_dict())
    assert (free(e) - expected).abs().max() > 0.1
    assert not cube.follows_cones()


def test_cube_without_skip_outputs_the_read_out_alone():
    cube = build_model("cube", DIM, _cfg("cube.skip=false"))
    e = torch.randn(3, DIM)
    assert torch.equal(cube(e), torch.zeros_like(e))  # zero read-out, no path around it
    _randomise(cube, seed=3)
    with_skip = build_model("cube", DIM, _cfg())
    with_skip.load_state_dict(cube.state_dict())
    torch.testing.assert_close(with_skip(e) - e, cube(e))


def test_anytime_training_supervises_every_step_from_lo_to_a_drawn_t():
    cube = build_model("cube", DIM, _cfg("cube.steps_range=[2,5]"))
    _randomise(cube, seed=4)
    e = torch.randn(3, DIM)
    cube.train()
    drawn = set()
    for seed in range(40):
        torch.manual_seed(seed)
        outs = supervised_predictions(cube, e)
        t = 2 + len(outs) - 1
        drawn.add(t)
        for i, out in enumerate(outs):
            torch.testing.assert_close(out, cube(e, 2 + i))
    assert drawn == {2, 3, 4, 5}
    cube.eval()  # inference: cube.steps, one output
    assert len(supervised_predictions(cube, e)) == 1
    # cube_0_steps does not draw steps
    zero = build_model("cube_0_steps", DIM, _cfg("cube.steps_range=[2,5]"))
    assert zero.train().training_outputs(e)[0].shape == e.shape
    assert len(zero.training_outputs(e)) == 1


def test_refined_anytime_outputs_add_the_base_map():
    model = build_model("cube", DIM, _cfg("cube.base=linear", "cube.steps_range=[2,4]"))
    _randomise(model, seed=5)
    e = torch.randn(3, DIM)
    model.train()
    torch.manual_seed(0)
    outs = supervised_predictions(model, e)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, model(e, 2 + i))


def test_loss_over_steps_is_the_mean_of_each_steps_loss():
    g = torch.Generator().manual_seed(0)
    n = 8
    q, a = torch.randn(n, DIM, generator=g), torch.randn(n, DIM, generator=g)
    train = EmbeddedSplit(q, a, torch.arange(n), a, [""] * n, [""] * n)
    objective = Objective(_cfg(), train)
    preds = [torch.randn(n, DIM, generator=g) for _ in range(3)]
    rows = ids = torch.arange(n)
    each = [objective(p, a, ids, rows, 0, 0)[0] for p in preds]
    total, _, _ = objective.over_steps(preds, a, ids, rows, 0, 0)
    torch.testing.assert_close(total, torch.stack(each).mean())
    assert len({round(x.item(), 4) for x in each}) == 3  # distinct losses: the mean is not vacuous
    one = objective.over_steps(preds[:1], a, ids, rows, 0, 0)[0]
    assert torch.equal(one, each[0])


def test_low_rank_linear_baseline():
    lin = build_model("linear", DIM, _cfg("eval.linear_rank=8"))
    e = torch.randn(3, DIM)
    assert torch.equal(lin(e), e)  # identity at the start
    assert n_params(lin) == effective_params(lin, DIM) == 2 * DIM * 8 + DIM
    assert n_params(build_model("linear", DIM, _cfg())) == DIM * DIM + DIM


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["cube.reads=base"], "reads=base needs a base map"),
        (["cube.base=linear", "cube.skip=false"], "keep skip=true"),
        (["cube.clamp=true", "cube.reshaper=learned"], "clamp rewrites the input face"),
        (["cube.steps_range=[1,4]"], r"steps_range=\[1, 4\]: need 2 <= lo <= hi"),
        (["cube.steps_range=[4,3]"], r"need 2 <= lo <= hi"),
        (["eval.passes=4"], "cube.fire_rate < 1"),
        (["eval.steps_curve=[-1]"], "must be >= 0"),
        (["eval.linear_rank=0"], "linear_rank"),
    ],
)
def test_variant_config_errors_are_one_line(sets, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(*sets)


def test_default_cube_is_unchanged_by_the_new_keys():
    cfg = load_config()
    assert (cfg.cube.base, cfg.cube.reads, cfg.cube.clamp, cfg.cube.skip) == (
        "none",
        "input",
        False,
        True,
    )
    assert cfg.cube.steps_range is None and cfg.eval.passes == 0 and cfg.eval.steps_curve == []
    assert type(build_model("cube", DIM, cfg)) is Cube


@pytest.mark.slow
def test_a_refined_anytime_run_end_to_end(tmp_path):
    """A real (tiny) run on the tech corpus: the refined cube's 0-step ablation trains exactly as
    the linear adapter (same optimiser settings), and the report holds the confidence section."""
    from cellcube.run.pipeline import train_run

    cfg = load_config(
        None,
        [
            *TINY,
            "data.corpus=tech",
            f"cache.path={tmp_path / 'cache.sqlite'}",
            "cube.base=linear",
            "cube.steps_range=[2,3]",
            "cube.fire_rate=0.5",
            "eval.passes=2",
            "eval.steps_curve=[0,2,5]",
            "eval.bootstrap=50",
            "train.epochs=2",
            "train.progress=false",
            "train.models.cube_0_steps.weight_decay=3.0",
            "train.models.linear.weight_decay=3.0",
        ],
    )
    report = train_run(cfg, tmp_path / "run", log=lambda _: None)
    models = report["models"]
    assert models["cube_0_steps"]["mrr"] == models["linear"]["mrr"]
    assert models["cube_0_steps"]["params"] == models["linear"]["params"] == DIM * DIM + DIM
    conf = report["confidence"]
    assert [row["steps"] for row in conf["steps"]] == [0, 2, 5]
    assert conf["passes"]["k"] == 2 and 0 < conf["passes"]["mrr"] <= 1
    assert set(conf["margin"]) == set(models)
