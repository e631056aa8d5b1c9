"""Fault injection without kill -9: concurrent cache writers, unwritable output, corrupt files,
NaN/inf in losses and embeddings, and exact RNG-state resume.

Every failure must be one ``error: ...`` line (exit status 2) naming the file or the epoch/batch,
leave no partial file behind, and be recoverable where the data allows it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import _reliability
from cellcube.cli.main import main
from cellcube.config import TeacherConfig, load_config
from cellcube.data import load_builtin
from cellcube.embed.cache import EmbeddingCache, embed_texts
from cellcube.embed.splits import EmbeddedSplit
from cellcube.embed.teachers import load_teacher
from cellcube.errors import TeacherError, TrainingError
from cellcube.models.baselines import build_model
from cellcube.train.checkpoints import load_checkpoint
from cellcube.train.fit import fit

# Tests that train a real model (Lightning fit or `cellcube train`, also through `ws`) are `slow`.
pytestmark = pytest.mark.fault

TINY = [
    "cube.lattice=[2,2,2]",
    "cube.channels=4",
    "cube.hidden=8",
    "cube.steps=2",
    "train.epochs=3",
    "train.batch_size=16",
    "train.progress=false",
    "train.patience=100",
    "eval.baselines=false",
]


def _sets(*items: str) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


def _one_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for frag in fragments:
        assert frag in err, (frag, err)
    return err


def _no_temps(root: Path) -> None:
    assert not [p for p in root.rglob("*.tmp")], list(root.rglob("*.tmp"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real pairs, a filled cache (MiniLM) and one finished tiny run to break copies of."""
    root = tmp_path_factory.mktemp("faults")
    with (root / "pairs.jsonl").open("w") as fh:
        for p in load_builtin("zaragoza")[:120]:
            fh.write(json.dumps({"question": p.question, "answer": p.answer}) + "\n")
    args = ["train", "--out", str(root / "run"), *_sets(*TINY, *_data(root))]
    assert main(args) == 0
    return root


def _data(root: Path) -> list[str]:
    return [f"data.path={root / 'pairs.jsonl'}", f"cache.path={root / 'cache.sqlite'}"]


# ---------------------------------------------------------------------------------------------
# Concurrent writers of one embedding cache
# ---------------------------------------------------------------------------------------------

WRITER = Path(__file__).parent / "faultkit" / "cache_writer.py"


def test_two_processes_fill_one_cache(tmp_path: Path, tiny_bert_dir: Path) -> None:
    cache_path = tmp_path / "shared.sqlite"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ranges = [(0, 150), (75, 225)]  # 75 texts written by both
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), *map(str, (tiny_bert_dir, cache_path, a, b))],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a, b in ranges
    ]
    for p in procs:  # both loaded and warmed up: their writes will interleave
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    results = [p.communicate("go\n") for p in procs]  # pytest-timeout bounds the wait
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    with sqlite3.connect(cache_path) as raw:
        rows = raw.execute("SELECT teacher, text_sha256, COUNT(*) FROM embeddings GROUP BY 1, 2")
        counts = [n for _, _, n in rows.fetchall()]
    raw.close()
    assert len(counts) == 225 and set(counts) == {1}
    teacher = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers"))
    texts = [f"text {i} about cats and dogs" for i in range(225)]
    with EmbeddingCache(cache_path) as cache:
        cached = embed_texts(teacher, texts, cache)
    assert teacher.encode_calls == 0  # every row present and valid
    np.testing.assert_allclose(cached, teacher.encode(texts), atol=1e-5)
    _reliability.record("concurrent_cache_writers", processes=2, rows=225, duplicates=0)


# ---------------------------------------------------------------------------------------------
# Unwritable output
# ---------------------------------------------------------------------------------------------


def test_unwritable_output_directory(tmp_path: Path, capsys) -> None:
    if os.geteuid() == 0:  # root ignores permission bits: put the run under a regular file
        blocker = tmp_path / "not_a_dir"
        blocker.write_text("x")
        out = blocker / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "run"
    assert main(["train", "--out", str(out), *_sets(*TINY)]) == 2
    _one_line(capsys, str(out), "cannot use as run directory")
    assert not out.exists()
    _no_temps(tmp_path)


def test_atomic_write_failure_leaves_old_file(tmp_path: Path) -> None:
    from cellcube.errors import CellcubeError
    from cellcube.io import atomic_open

    target = tmp_path / "report.json"
    target.write_text("old")
    full = pytest.raises(CellcubeError, match=r"report\.json: cannot write")
    with full, atomic_open(target) as fh:
        fh.write("partial")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "old"
    _no_temps(tmp_path)


# ---------------------------------------------------------------------------------------------
# Corrupt checkpoints and cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_truncated_last_checkpoint_on_resume(ws: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(ws / "run", run)
    (run / "models" / "cube" / "DONE").unlink()
    last = run / "models" / "cube" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = (run / "report.json").read_bytes()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_line(capsys, str(last), "corrupt or truncated checkpoint")
    assert (run / "report.json").read_bytes() == before
    _no_temps(run)


@pytest.mark.slow
def test_corrupt_cache_rows_are_recomputed_through_the_pipeline(ws: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    shutil.copy(ws / "cache.sqlite", cache)
    with sqlite3.connect(cache) as raw:
        n = raw.execute(
            "UPDATE embeddings SET vector = x'deadbeef' WHERE text_sha256 IN "
            "(SELECT text_sha256 FROM embeddings LIMIT 7)"
        ).rowcount
    raw.close()
    assert n == 7
    sets = [*TINY, f"data.path={ws / 'pairs.jsonl'}", f"cache.path={cache}"]
    assert main(["train", "--out", str(tmp_path / "run"), *_sets(*sets)]) == 0
    with EmbeddingCache(cache) as c, sqlite3.connect(cache) as raw:
        rows = raw.execute("SELECT teacher, text_sha256, dim, vector FROM embeddings").fetchall()
        assert all(len(blob) == dim * 4 for _, _, dim, blob in rows)
        assert len(c) == len(rows)
    raw.close()
    got = json.loads((tmp_path / "run" / "report.json").read_text())["models"]
    ref = json.loads((ws / "run" / "report.json").read_text())["models"]
    assert got["cube"]["mrr"] == pytest.approx(ref["cube"]["mrr"], abs=1e-6)
    _reliability.record("corrupt_cache_rows", corrupted=7, recomputed=7)


@pytest.mark.slow
def test_truncated_cache_file_is_one_clear_error(ws: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes((ws / "cache.sqlite").read_bytes()[:3000])
    sets = [*TINY, f"data.path={ws / 'pairs.jsonl'}", f"cache.path={cache}"]
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *_sets(*sets)]) == 2
    _one_line(capsys, str(cache), "not a valid embedding cache")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# NaN / inf
# ---------------------------------------------------------------------------------------------


def _toy(n: int, seed: int = 0) -> EmbeddedSplit:
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
    a = torch.nn.functional.normalize(q + 0.5 * torch.randn(n, 16, generator=g), dim=-1)
    return EmbeddedSplit(q, a, torch.arange(n), a, [""] * n, [""] * n)


class NanAfter(torch.nn.Module):
    """Wraps a model; its training forward passes return NaN from the ``n``-th call on."""

    def __init__(self, inner: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = self.inner(q)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                return out * float("nan")
        return out


@pytest.mark.slow
def test_nan_stops_training_naming_epoch_batch_and_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "train.epochs=5"])
    train, val = _toy(96), _toy(32, seed=1)
    steps_per_epoch = 96 // 16
    model = NanAfter(build_model("mlp", 16, cfg), n=2 * steps_per_epoch + 3)  # epoch 2, batch 2
    with pytest.raises(TrainingError) as info:
        fit(model, "mlp", cfg, train, val, tmp_path)
    msg = str(info.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "\n" not in msg
    assert "training mlp: NaN/inf in the model's predictions at epoch 2" in msg
    assert "(batch 2 of the epoch)" in msg and f"last good checkpoint: {last}" in msg
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.slow
def test_absurd_learning_rate_is_one_line_from_the_cli(ws: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *_sets(*TINY, *_data(ws), "train.lr=1e30")]
    assert main(args) == 2
    err = _one_line(capsys, "training cube: NaN/inf", "at epoch 0, step", "batch")
    assert "no good checkpoint yet" in err
    _no_temps(out)


@pytest.mark.slow
def test_nan_training_embeddings_are_named(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    train = _toy(96)
    train.a[40, 3] = float("inf")
    with pytest.raises(TrainingError, match="NaN/inf in the answer embeddings at epoch 0"):
        fit(build_model("cube", 16, cfg), "cube", cfg, train, _toy(32, 1), tmp_path)


class NanTeacher:
    """A teacher stand-in whose second text embeds to NaN (e.g. an fp16 overflow)."""

    identity = "nan-teacher"
    encode_calls = 0

    def encode(self, texts, *, progress=False):  # type: ignore[no-untyped-def]
        out = np.ones((len(texts), 4), dtype=np.float32)
        if len(texts) > 1:
            out[1, 2] = np.nan
        return out


def test_nan_teacher_embeddings_are_a_clear_error_and_not_cached(tmp_path: Path) -> None:
    texts = ["fine", "overflows", "also fine"]
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(TeacherError, match=r"1 of 3 embedding\(s\) contain NaN.*'overflows'"):
            embed_texts(NanTeacher(), texts, cache)  # type: ignore[arg-type]
        assert len(cache) == 0
    with pytest.raises(TeacherError, match="NaN or inf"):
        embed_texts(NanTeacher(), texts, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# RNG state in checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_restores_rng_state_with_stochastic_updates(tmp_path: Path) -> None:
    """fire_rate < 1 draws random masks: resume is exact only if the RNG state is restored."""
    cfg = load_config(None, [*TINY, "train.epochs=4", "cube.fire_rate=0.5"])
    train, val = _toy(96), _toy(32, 1)
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, tmp_path / "straight")
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    cut = tmp_path / "cut"
    fit(build_model("cube", 16, cfg), "cube", short, train, val, cut)
    assert "rng" in load_checkpoint(cut / "checkpoints" / "last.ckpt")["cellcube"]
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, cut, resume=True)
    ref = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")["state_dict"]
    got = load_checkpoint(cut / "checkpoints" / "last.ckpt")["state_dict"]
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


def test_guard_rejects_a_non_finite_loss_before_backward(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cellcube.train.guards import FiniteGuard

    guard = FiniteGuard("cube", tmp_path / "last.ckpt")
    trainer = SimpleNamespace(current_epoch=3, global_step=40)
    guard.on_before_backward(trainer, None, torch.tensor(0.5))  # type: ignore[arg-type]
    with pytest.raises(TrainingError) as info:
        guard.on_before_backward(trainer, None, torch.tensor(float("inf")))  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "training cube: non-finite loss (inf) at epoch 3, step 40 (batch 0 of the epoch); "
        "no good checkpoint yet"
    )


def test_os_error_escaping_a_command_is_one_line(monkeypatch, capsys) -> None:
    """Writes outside atomic_open (Lightning's CSV/TensorBoard logs) can fail too."""
    import errno

    import cellcube.run.pipeline

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/logs/metrics.csv")

    monkeypatch.setattr(cellcube.run.pipeline, "train_run", full)
    assert main(["train", "--out", "/runs/x", "--set", "train.progress=false"]) == 2
    assert capsys.readouterr().err == ("error: /runs/x/logs/metrics.csv: No space left on device\n")


def test_second_train_on_a_busy_run_directory_fails_at_once(tmp_path: Path, capsys):
    from cellcube.io import run_lock

    out = tmp_path / "run"
    with run_lock(out):  # another process training into `out` (flock is per open file)
        assert main(["train", "--out", str(out), *_sets(*TINY)]) == 2
    _one_line(capsys, str(out), "in use by another cellcube process")
    assert not out.exists()


def test_stale_temp_files_are_removed_but_nothing_else(tmp_path: Path) -> None:
    from cellcube.io import remove_stale_temps

    ckpts = tmp_path / "models" / "cube" / "checkpoints"
    ckpts.mkdir(parents=True)
    stale = [ckpts / ".last.ckpt.k3j_9xab.tmp", tmp_path / ".report.json.a1b2c3d4.tmp"]
    keep = [ckpts / "last.ckpt", tmp_path / "notes.tmp", tmp_path / ".my.notes.tmp"]
    for f in stale + keep:
        f.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(f.exists() for f in keep) and not any(f.exists() for f in stale)
