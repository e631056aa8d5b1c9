"""Config loading: defaults, overrides, and one clear error per bad key or value."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellcube.config import Config, dump_config, load_config
from cellcube.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_default_matches_builtin_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_train_without_config_uses_the_builtin_defaults_whatever_the_cwd(
    tmp_path, monkeypatch
) -> None:
    """No config is read relative to the current directory: a ``configs/default.yaml`` there is
    ignored, and ``--set`` applies to the built-in defaults."""
    import cellcube.run.pipeline
    from cellcube.cli.main import main

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("cube:\n  steps: 9\n")
    monkeypatch.chdir(tmp_path)
    seen = []

    def capture(cfg, run_dir, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(cfg)
        raise ConfigError("stop here")

    monkeypatch.setattr(cellcube.run.pipeline, "train_run", capture)
    assert main(["train", "--out", str(tmp_path / "run"), "--set", "seed=3"]) == 2
    assert seen == [Config().model_copy(update={"seed": 3})]


def test_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "cube.steps=8",
            "cube.lattice=[2,2,2]",
            "data.path=x.jsonl",
            "train.lr=3e-4",
            "eval.baselines=false",
        ],
    )
    assert cfg.cube.steps == 8
    assert cfg.cube.lattice == (2, 2, 2)
    assert cfg.data.path == "x.jsonl"
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.eval.baselines is False


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["cube.steps=5", "mode=autoencoder"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("cube:\n  stepz: 3\n", r"c.yaml: unknown key 'cube.stepz'"),
        ("cube:\n  steps: -1\n", r"c.yaml: cube.steps: .*greater than or equal to 0"),
        ("cube:\n  lattice: [4, 4]\n", r"c.yaml: cube.lattice"),
        ("cube:\n  lattice: [4, 0, 4]\n", r"c.yaml: cube.lattice.*>= 1"),
        ("cube:\n  boundary: mirror\n", r"c.yaml: cube.boundary"),
        ("train:\n  lr: fast\n", r"c.yaml: train.lr"),
        (
            "data:\n  test_fraction: 0.5\n  val_fraction: 0.45\n",
            r"c.yaml: data: val_fraction \+ test_fraction .*10%",
        ),
        ("mode: chat\n", r"c.yaml: mode"),
        ("cube:\n  lattice: [4, 4, 8]\n  steps: 3\n", r"c.yaml: cube: steps=3 .*steps >= 7"),
        ("- a\n- b\n", r"c.yaml: top level must be a mapping"),
        ("cube: [\n", r"c.yaml:\d+: "),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(tmp_path, text, pattern):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_bad_override_and_missing_file():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["cube.steps"])
    with pytest.raises(ConfigError, match=r"unknown key 'cube.nope'"):
        load_config(None, ["cube.nope=1"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("does/not/exist.yaml")


def test_every_config_key_is_documented():
    """Every key appears (in backticks) in the configuration reference, docs/configuration.md."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    keys = []
    for section, body in Config().to_dict().items():
        keys += [f"{section}.{key}" for key in body] if isinstance(body, dict) else [section]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert len(keys) > 40
    assert not missing, f"config keys missing from the configuration reference: {missing}"
