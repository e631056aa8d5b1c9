"""Stored phrase banks: written once, memory-mapped on load, checked, rebuilt when damaged; exact
search up to the threshold and a FAISS index above it (recall measured against exact search)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cellcube.config import CacheConfig, TeacherConfig
from cellcube.decode import bank as bank_mod
from cellcube.decode.bank import PhraseBank, bank_digest, open_bank, store_bank, stored_bank
from cellcube.decode.index import faiss_module, n_lists
from cellcube.embed.teachers import load_teacher
from cellcube.errors import CellcubeError


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 rows around 40 random centres: data with neighbours worth finding."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim))
    return x.astype(np.float32)


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_store_and_open_round_trip_memory_mapped(tmp_path: Path) -> None:
    phrases = [f"phrase {i}" for i in range(300)]
    vectors = clustered(300, 16, 0) * 3  # not unit: stored normalised
    store_bank(tmp_path / "b", phrases, vectors, "teacher-x")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    stored = tmp_path / "b" / "vectors.npy"
    assert manifest["teacher"] == "teacher-x" and manifest["count"] == 300
    assert manifest["dim"] == 16 and manifest["index"] is None
    assert manifest["vectors_sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert manifest["phrases_sha256"] == bank_digest(phrases, "teacher-x")

    bank = open_bank(tmp_path / "b", verify=True)
    assert str(stored) in mapped_files()  # the embeddings are a memory map, not a copy
    assert bank.phrases == phrases and bank.index is None and bank.dim == 16
    assert torch.allclose(bank.embeddings.norm(dim=1), torch.ones(300), atol=1e-6)
    queries = torch.from_numpy(clustered(20, 16, 1))
    in_memory = PhraseBank(phrases, torch.from_numpy(vectors))
    assert bank.search(queries, k=4) == in_memory.search(queries, k=4)
    assert bank.search(queries, k=4)[0][0][0] != bank.search(queries, k=4)[1][0][0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), "vectors.npy"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: not valid JSON"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
        (
            lambda d: np.save(d / "vectors.npy", np.zeros((5, 16), np.float32)),
            "vectors.npy: shape (5, 16)",
        ),
        (
            lambda d: np.save(d / "vectors.npy", np.zeros((30, 16), np.float64)),
            "vectors.npy: dtype float64",
        ),
    ],
    ids=["garbage npy", "bad manifest", "no manifest", "wrong shape", "wrong dtype"],
)
def test_damaged_bank_is_one_clear_error(tmp_path: Path, damage, message: str) -> None:
    phrases = [f"p{i}" for i in range(30)]
    store_bank(tmp_path, phrases, clustered(30, 16, 2), "t")
    damage(tmp_path)
    with pytest.raises(CellcubeError, match=re.escape(message)):
        open_bank(tmp_path, phrases, "t")


def test_bank_for_other_phrases_or_teacher_or_bytes_is_refused(tmp_path: Path) -> None:
    phrases = [f"p{i}" for i in range(30)]
    store_bank(tmp_path, phrases, clustered(30, 16, 3), "t")
    with pytest.raises(CellcubeError, match="for teacher 't'"):
        open_bank(tmp_path, phrases, "other")
    with pytest.raises(CellcubeError, match="other phrases"):
        open_bank(tmp_path, [*phrases[:-1], "changed"], "t")
    raw = bytearray((tmp_path / "vectors.npy").read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte: same shape, caught only by the checksum
    (tmp_path / "vectors.npy").write_bytes(bytes(raw))
    assert len(open_bank(tmp_path, phrases, "t").phrases) == 30
    with pytest.raises(CellcubeError, match="checksum differs"):
        open_bank(tmp_path, phrases, "t", verify=True)


def test_stored_bank_embeds_once_and_rebuilds_a_damaged_one(
    minilm_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    teacher = load_teacher(TeacherConfig(model=str(minilm_dir)))
    cache = CacheConfig(path=str(tmp_path / "cache.sqlite"))
    phrases = ["Paris is the capital of France.", "I like jazz.", "It rains a lot here."]
    first = stored_bank(tmp_path / "bank", phrases, teacher, cache)
    (directory,) = (tmp_path / "bank").iterdir()
    assert directory.name == bank_digest(phrases, teacher.identity)[:16]
    q = torch.from_numpy(teacher.encode(["Which city is France's capital?"]))
    assert first.search(q, 1)[0][0][0] == phrases[0]

    def no_embedding(*args, **kwargs):
        raise AssertionError("a stored bank was embedded again")

    monkeypatch.setattr(bank_mod, "embed", no_embedding)
    again = stored_bank(tmp_path / "bank", phrases, teacher, cache)
    assert again.search(q, 3) == first.search(q, 3)

    monkeypatch.undo()
    expected = first.search(q, 3)
    (directory / "vectors.npy").unlink()  # a new file: the open banks keep their mapping
    (directory / "vectors.npy").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="cellcube.decode.bank"):
        rebuilt = stored_bank(tmp_path / "bank", phrases, teacher, cache)
    assert "rebuilding the stored phrase bank" in caplog.text and "vectors.npy" in caplog.text
    assert rebuilt.search(q, 3) == expected
    assert open_bank(directory, phrases, teacher.identity, verify=True).phrases == phrases


def test_exact_below_the_threshold_and_faiss_above_with_high_recall(tmp_path: Path) -> None:
    n, k = 6000, 10
    phrases = [f"p{i}" for i in range(n)]
    vectors = clustered(n, 32, 4)
    store_bank(tmp_path / "small", phrases, vectors, "t", exact_max=n)
    store_bank(tmp_path / "large", phrases, vectors, "t", exact_max=n - 1)
    small, large = open_bank(tmp_path / "small"), open_bank(tmp_path / "large")
    assert small.index is None and not (tmp_path / "small" / "index.faiss").exists()
    assert large.index is not None and large.index.ntotal == n
    assert faiss_module().extract_index_ivf(large.index).nlist == n_lists(n) == 77

    queries = torch.from_numpy(clustered(200, 32, 5))
    exact = [{p for p, _ in row} for row in small.search(queries, k)]
    approx = [{p for p, _ in row} for row in large.search(queries, k)]
    recall = np.mean([len(a & e) / k for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    # the index is what answers: scanning one list of 77 loses neighbours
    faiss_module().extract_index_ivf(large.index).nprobe = 1
    one_list = [{p for p, _ in row} for row in large.search(queries, k)]
    assert np.mean([len(a & e) / k for a, e in zip(one_list, exact, strict=True)]) < recall


def test_damaged_index_is_one_clear_error(tmp_path: Path) -> None:
    phrases = [f"p{i}" for i in range(500)]
    store_bank(tmp_path, phrases, clustered(500, 8, 6), "t", exact_max=100)
    (tmp_path / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(CellcubeError, match=r"index\.faiss: not a FAISS index"):
        open_bank(tmp_path)


def test_missing_faiss_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(CellcubeError, match="pip install faiss-cpu"):
        faiss_module()
