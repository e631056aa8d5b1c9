"""The run directory: its layout, the pairs round trip, and one clear error per bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cellcube.config import Config
from cellcube.data import QAPair, Split
from cellcube.errors import CheckpointError
from cellcube.models.baselines import Ridge
from cellcube.run.rundir import RunDir


def _split() -> Split:
    train = [
        QAPair("How do I apply?", "Online.", "f.jsonl:1", domain="permits"),
        QAPair("Tell me: how do I apply?", "Online.", "f.jsonl:2", variant_of="How do I apply?"),
    ]
    val = [QAPair("Who decides?", "The board.", "f.jsonl:3", domain="process")]
    test = [QAPair("When?", "In May.", "f.jsonl:4")]
    return Split(train, val, test)


def test_layout() -> None:
    run = RunDir(Path("/r"))
    assert run.config == Path("/r/config.yaml") and run.pairs == Path("/r/pairs.jsonl")
    assert run.model("cube").best == Path("/r/models/cube/checkpoints/best.ckpt")
    assert run.model("mlp").last == Path("/r/models/mlp/checkpoints/last.ckpt")
    assert run.model("cube").metrics_csv == Path("/r/models/cube/logs/metrics.csv")
    assert run.model("cube").done == Path("/r/models/cube/DONE")
    assert run.ridge == Path("/r/models/ridge.pt") and run.report == Path("/r/report.json")
    assert run.plot == Path("/r/plots/training.png")


def test_start_writes_pairs_with_every_field_and_the_config(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    split = _split()
    stale = run.model("cube").best
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    run.start(Config(), split, torch.tensor([0.25, 0.75]))
    assert not stale.exists()  # a fresh run drops the previous run's models
    assert run.holds_run() and run.read_config() == Config()
    got = run.read_pairs()
    for name in ("train", "val", "test"):
        want = getattr(split, name)
        assert getattr(got, name) == want
        assert [(p.domain, p.variant_of) for p in getattr(got, name)] == [
            (p.domain, p.variant_of) for p in want
        ]
    rows = [json.loads(line) for line in run.pairs.read_text().splitlines()]
    assert [r.get("difficulty") for r in rows] == [0.25, 0.75, None, None]


def test_done_markers(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert not run.is_done("cube")
    run.mark_done("cube")
    assert run.is_done("cube") and not run.is_done("mlp")


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.yaml: missing; is .* a cellcube run"):
        RunDir(tmp_path).read_config()
    with pytest.raises(CheckpointError, match=r"pairs\.jsonl: missing"):
        RunDir(tmp_path).read_pairs()


def test_corrupt_pairs_line_is_named(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_pairs(_split(), torch.zeros(2))
    with run.pairs.open("a") as fh:
        fh.write('{"split": "train", "question": "q"}\n')
    with pytest.raises(CheckpointError, match=r"pairs\.jsonl:5: corrupt run record"):
        run.read_pairs()


def test_ridge_round_trip(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    ridge = Ridge.fit(torch.randn(20, 4), torch.randn(20, 4), alpha=0.1)
    run.write_ridge(ridge)
    q = torch.randn(3, 4)
    torch.testing.assert_close(run.load_ridge()(q), ridge(q), rtol=0, atol=0)


class _Evil:
    """A pickle that creates a file when unpickled (a stand-in for arbitrary code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.target), "w"))


def test_a_malicious_ridge_file_is_refused_not_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    sentinel = tmp_path / "pwned"
    run.ridge.parent.mkdir(parents=True)
    torch.save({"weight": _Evil(sentinel)}, run.ridge)
    with pytest.raises(CheckpointError, match=r"ridge\.pt: refused") as info:
        run.load_ridge()
    assert "\n" not in str(info.value)
    assert not sentinel.exists()
