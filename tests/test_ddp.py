"""Data-parallel training under torchrun: 2 CPU processes (gloo) equal one process, same batch.

The end-to-end test launches ``torchrun --nproc_per_node=2 -m cellcube train`` as a subprocess
and compares it with a single-process ``cellcube train`` of the same config (global batch 16,
8 rows per rank): the trained weights, the per-epoch validation MRR and the test report agree to
float rounding. Its config turns on everything that looks across the batch or uses row indices
(InfoNCE in-batch negatives, triplet, diversity, mined + random negatives, curriculum), each of
which would differ if a rank saw only its own 8 rows. A second 2-process check compares raw
gradients, which the end-to-end test cannot see through AdamW (it is nearly invariant to the
scale of the gradient).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from _reports import assert_same_model_metrics
from cellcube.cli.main import main
from cellcube.data import load_builtin
from cellcube.errors import ConfigError, DataError
from cellcube.train import distributed
from cellcube.train.checkpoints import load_checkpoint
from cellcube.train.datamodule import EpochSeededSampler

pytestmark = pytest.mark.slow


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port; killed if pytest-timeout
    stops the test)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# --- the sampler: each rank's slices of the single-process batches ----------------------------


@pytest.mark.parametrize(("n", "batch", "world"), [(37, 8, 2), (40, 8, 4), (16, 16, 2)])
def test_rank_slices_gathered_in_rank_order_are_the_single_process_batches(
    n: int, batch: int, world: int
) -> None:
    data = TensorDataset(torch.arange(n))
    for epoch in (0, 3):
        single = EpochSeededSampler(n, seed=5)
        single.set_epoch(epoch)
        want = [b[0].tolist() for b in DataLoader(data, batch, sampler=single, drop_last=n > batch)]
        per_rank = []
        for r in range(world):
            s = EpochSeededSampler(n, seed=5, batch_size=batch, rank=r, world_size=world)
            s.set_epoch(epoch)
            assert len(s) == n // batch * (batch // world)
            per_rank.append([b[0].tolist() for b in DataLoader(data, batch // world, sampler=s)])
        got = [[i for part in slices for i in part] for slices in zip(*per_rank, strict=True)]
        assert got == want
        assert len(got) == n // batch
    # a different epoch is a different order
    s0, s1 = EpochSeededSampler(n, 5), EpochSeededSampler(n, 5)
    s1.set_epoch(1)
    assert list(s0) != list(s1)


def test_sampler_refuses_a_batch_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        EpochSeededSampler(20, 0, batch_size=9, rank=0, world_size=2)
    with pytest.raises(ValueError, match="outside"):
        EpochSeededSampler(20, 0, batch_size=8, rank=2, world_size=2)


# --- config checks under torchrun's environment (no process group needed) -------------------


def test_global_batch_must_split_evenly_and_fit_the_train_split(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    assert distributed.world_size() == 4 and distributed.rank() == 1
    assert distributed.check_batch_size(64, 100) == 16
    with pytest.raises(ConfigError, match=r"train.batch_size: 30 is not divisible by the 4"):
        distributed.check_batch_size(30)
    with pytest.raises(DataError, match=r"train split: 40 pairs, fewer than one global batch"):
        distributed.check_batch_size(64, 40)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.check_batch_size(30, 10) == 30  # one process: unchanged behaviour


def test_cli_reports_an_indivisible_batch_on_one_line(monkeypatch, capsys, tmp_path) -> None:
    """Checked before joining the process group, so every rank fails at once (no hang)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["train", "--out", str(tmp_path / "run"), "--set", "train.batch_size=15"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: train.batch_size: 15 is not divisible by the 2 torchrun")
    assert "\n" not in err
    assert not (tmp_path / "run").exists()


def test_nccl_without_cuda_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert distributed.resolve_backend("auto", "cpu") == "gloo"
    with pytest.raises(ConfigError, match=r"train\.ddp_backend: nccl needs CUDA"):
        distributed.resolve_backend("nccl", "cpu")


# --- gradients: gathered DDP step == single-process step on the global batch ------------------

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_process_gathered_gradient_equals_the_single_process_gradient(tmp_path) -> None:
    """Two gloo processes started directly (no torchrun launcher: one torch import less), each
    running ``tests/ddp_worker.py``; they also check
    :func:`cellcube.train.distributed.on_rank_zero`."""
    result = tmp_path / "grad.json"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / "store"), str(result), str(rank)],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        errors = [p.communicate()[1] for p in procs]  # pytest-timeout bounds the wait
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    diff = json.loads(result.read_text())
    assert diff["ref_max"] > 0.05
    assert diff["gathered"] < 1e-5  # the global-batch gradient, to float32 rounding
    assert diff["local"] > 0.1  # per-rank losses: fewer negatives, a different gradient
    assert diff["naive"] > 0.1  # not summing the ranks' contributions: too small by world
    assert diff["naive_times_world"] < 1e-5
    # on_rank_zero: rank 0's result on every rank; its error raised everywhere (quiet elsewhere)
    err = "pairs.jsonl:7: field 'answer' is empty"
    rows = list(range(8))  # the gathered row indices: the global batch, in rank order
    assert diff["seen"] == [
        [f"DataError: {err}", {"from rank": 0}, rows],
        [f"PeerFailed: rank 0 failed (DataError): {err}", {"from rank": 0}, rows],
    ]


# --- end to end: torchrun -m cellcube train ---------------------------------------------------


@pytest.fixture(scope="module")
def ddp_and_single(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path
) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """The same tiny config trained by one process (in-process) and by 2 torchrun processes."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "faq.jsonl"
    pairs = load_builtin("zaragoza")[:150]
    data.write_text(
        "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pairs)
    )
    sets = [
        f"data.path={data}",
        f"cache.path={root / 'cache.sqlite'}",
        f"teacher.model={tiny_bert_dir}",
        "teacher.kind=transformers",
        "cube.lattice=[2,2,2]",
        "cube.channels=4",
        "cube.hidden=8",
        "cube.steps=2",
        "train.epochs=3",
        "train.batch_size=16",
        "train.progress=false",
        "loss.triplet=0.5",
        "loss.diversity=0.5",
        "loss.hard_negatives=2",
        "loss.random_negatives=2",
        "loss.curriculum=true",
        "eval.baselines=false",
    ]
    args = [arg for s in sets for arg in ("--set", s)]
    # one process first: it also fills the embedding cache, which the 2-process run then reads
    assert main(["train", "--out", str(root / "single"), *args]) == 0
    proc = _torchrun("-m", "cellcube", "train", "--out", str(root / "ddp"), *args, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "single", root / "ddp", proc


def _weights(run: Path, which: str) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run / "models" / "cube" / "checkpoints" / f"{which}.ckpt")
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _val_mrr(run: Path) -> list[float]:
    with (run / "models" / "cube" / "logs" / "metrics.csv").open() as fh:
        return [float(r["val_mrr"]) for r in csv.DictReader(fh) if r.get("val_mrr")]


def test_two_processes_train_the_same_weights_as_one(ddp_and_single) -> None:
    single, ddp, _ = ddp_and_single
    for which in ("best", "last"):
        a, b = _weights(single, which), _weights(ddp, which)
        assert a.keys() == b.keys() and len(a) > 4
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-5, msg=key)
    # the weights did move: the comparison is not between two untrained models
    last = ddp / "models" / "cube" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == 3 * (len(_pairs(ddp, "train")) // 16)  # 3 epochs of full batches


def _pairs(run: Path, split: str) -> list[dict]:
    lines = (run / "pairs.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_two_processes_agree_on_validation_and_test_metrics(ddp_and_single) -> None:
    single, ddp, _ = ddp_and_single
    mrr_single, mrr_ddp = _val_mrr(single), _val_mrr(ddp)
    assert len(mrr_single) == len(mrr_ddp) == 3  # one validation per epoch, logged once
    assert mrr_ddp == pytest.approx(mrr_single, abs=1e-6)
    rep_single = json.loads((single / "report.json").read_text())
    rep_ddp = json.loads((ddp / "report.json").read_text())
    assert rep_ddp["n_train"] == rep_single["n_train"] >= 16
    assert "ci" in rep_single["models"]["cube"]
    assert_same_model_metrics(rep_ddp["models"]["cube"], rep_single["models"]["cube"], 1e-5)


def test_only_rank_zero_writes_and_prints(ddp_and_single) -> None:
    single, ddp, proc = ddp_and_single
    assert (ddp / "pairs.jsonl").read_text() == (single / "pairs.jsonl").read_text()
    names = sorted(p.relative_to(ddp).as_posix() for p in ddp.rglob("*") if p.is_file())
    assert "models/cube/checkpoints/best.ckpt" in names and "report.json" in names
    assert not [n for n in names if n.endswith(".tmp") or "version_" in n]
    assert proc.stdout.count("run saved to") == 1
    assert proc.stdout.count("training cube") == 1
    assert "error" not in proc.stderr.lower()
