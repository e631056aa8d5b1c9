"""Tests for cellcube.embed.cache: hits skip the teacher, misses are filled, bad rows recovered."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cellcube.config import CacheConfig, TeacherConfig
from cellcube.embed.cache import EmbeddingCache, embed_texts
from cellcube.embed.encode import embed
from cellcube.embed.teachers import Teacher, load_teacher
from cellcube.errors import CellcubeError

TEXTS = [
    "how do i reset my password",
    "what is the weather today",
    "hello",
    "how do i reset my password",  # duplicate on purpose
    "cats and dogs",
]
DISTINCT = list(dict.fromkeys(TEXTS))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture()
def bert_cfg(tiny_bert_dir: Path) -> TeacherConfig:
    return TeacherConfig(model=str(tiny_bert_dir), kind="transformers")


def _spy(teacher: Teacher, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the text lists passed to ``teacher.encode``."""
    calls: list[list[str]] = []
    real = teacher.encode

    def encode(texts, *, progress=False):  # type: ignore[no-untyped-def]
        calls.append(list(texts))
        return real(texts, progress=progress)

    monkeypatch.setattr(teacher, "encode", encode)
    return calls


def test_second_run_makes_zero_encode_calls(bert_cfg: TeacherConfig, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "emb.sqlite"
    first = load_teacher(bert_cfg)
    with EmbeddingCache(path) as cache:
        a = embed_texts(first, TEXTS, cache)
        assert len(cache) == len(DISTINCT)
    assert path.is_file()
    assert first.encode_calls == 1
    assert a.shape == (len(TEXTS), 32)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[3])
    np.testing.assert_allclose(a, first.encode(TEXTS), atol=1e-6)

    second = load_teacher(bert_cfg)
    with EmbeddingCache(path) as cache:
        b = embed_texts(second, TEXTS, cache)
    assert second.encode_calls == 0
    assert not second.loaded
    assert b.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_partially_cached_input_encodes_only_missing(
    bert_cfg: TeacherConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "emb.sqlite"
    with EmbeddingCache(path) as cache:
        cached = embed_texts(load_teacher(bert_cfg), TEXTS[:2], cache)

    teacher = load_teacher(bert_cfg)
    calls = _spy(teacher, monkeypatch)
    new = ["brand new text", "another one", "brand new text"]
    with EmbeddingCache(path) as cache:
        out = embed_texts(teacher, TEXTS[:2] + new, cache)
        assert len(cache) == 4
    assert calls == [["brand new text", "another one"]]
    assert teacher.encode_calls == 1
    np.testing.assert_array_equal(out[:2], cached)
    np.testing.assert_array_equal(out[2], out[4])
    np.testing.assert_allclose(out[2:4], load_teacher(bert_cfg).encode(new[:2]), atol=1e-6)


def test_different_teacher_identities_do_not_collide(
    bert_cfg: TeacherConfig, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    path = tmp_path / "emb.sqlite"
    bert = load_teacher(bert_cfg)
    llama = load_teacher(TeacherConfig(model=str(tiny_llama_dir), kind="transformers"))
    assert bert.identity != llama.identity
    with EmbeddingCache(path) as cache:
        from_bert = embed_texts(bert, DISTINCT, cache)
        from_llama = embed_texts(llama, DISTINCT, cache)
        assert llama.encode_calls == 1  # nothing reused from the BERT rows
        assert len(cache) == 2 * len(DISTINCT)
        assert not np.allclose(from_bert, from_llama)
        again = load_teacher(bert_cfg)
        np.testing.assert_array_equal(embed_texts(again, DISTINCT, cache), from_bert)
        assert again.encode_calls == 0


def test_corrupted_rows_are_recomputed_and_overwritten(
    bert_cfg: TeacherConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "emb.sqlite"
    first = load_teacher(bert_cfg)
    with EmbeddingCache(path) as cache:
        good = embed_texts(first, DISTINCT, cache)

    nan_row = np.full(32, np.nan, dtype="<f4").tobytes()
    with sqlite3.connect(path) as raw:
        n1 = raw.execute(
            "UPDATE embeddings SET vector = ? WHERE teacher = ? AND text_sha256 = ?",
            (b"\xde\xad\xbe\xef garbage", first.identity, _sha(DISTINCT[1])),
        ).rowcount
        n2 = raw.execute(
            "UPDATE embeddings SET vector = ? WHERE teacher = ? AND text_sha256 = ?",
            (nan_row, first.identity, _sha(DISTINCT[2])),
        ).rowcount
    raw.close()
    assert n1 == n2 == 1

    teacher = load_teacher(bert_cfg)
    calls = _spy(teacher, monkeypatch)
    with EmbeddingCache(path) as cache:
        hits = cache.get_many(teacher.identity, DISTINCT)
        assert [h is None for h in hits] == [False, True, True, False]
        out = embed_texts(teacher, DISTINCT, cache)
        assert all(h is not None for h in cache.get_many(teacher.identity, DISTINCT))
    assert calls == [[DISTINCT[1], DISTINCT[2]]]
    np.testing.assert_allclose(out, good, atol=1e-6)


def test_non_database_file_gives_cellcube_error(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    path.write_text("this is not a sqlite database, just some text. " * 20)
    with pytest.raises(CellcubeError) as info:
        EmbeddingCache(path)
    assert str(info.value) == (
        f"{path}: not a valid embedding cache (file is not a database); delete it or set "
        "cache.path to another file"
    )


def test_directory_path_gives_cellcube_error(tmp_path: Path) -> None:
    with pytest.raises(CellcubeError, match="is a directory"):
        EmbeddingCache(tmp_path)


def test_wal_mode_and_two_connections_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    vecs = np.eye(3, 4, dtype=np.float32)
    with EmbeddingCache(path) as writer, EmbeddingCache(path) as reader:
        writer.put_many("t", ["a", "b", "c"], vecs)
        got = reader.get_many("t", ["c", "x", "a"])
        assert got[1] is None
        np.testing.assert_array_equal(got[0], vecs[2])
        np.testing.assert_array_equal(got[2], vecs[0])
        assert len(reader) == 3
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


CONTENTION = """
import multiprocessing, sys
from cellcube.embed.cache import EmbeddingCache
from cellcube.errors import CellcubeError

def open_and_close(path, errors):
    try:
        EmbeddingCache(path).close()
    except CellcubeError as exc:
        errors.put(str(exc))

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(150):
        path = f"{sys.argv[1]}/c{round_}.sqlite"
        procs = [ctx.Process(target=open_and_close, args=(path, errors)) for _ in range(8)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        assert [proc.exitcode for proc in procs] == [0] * 8
    assert errors.empty(), errors.get()
"""


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    """Eight processes create the same file together, 150 times. SQLite answers "database is
    locked" without waiting when two of them switch a new file to WAL at once (without the retry
    about one round in twelve failed); every open must succeed and leave a usable cache. The
    processes fork from a small interpreter that imports the cache alone (forking the test
    process, torch loaded, costs seconds per round)."""
    proc = subprocess.run(
        [sys.executable, "-c", CONTENTION, str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with EmbeddingCache(tmp_path / "c0.sqlite") as cache:
        assert len(cache) == 0


def test_put_many_validates_and_is_atomic(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        with pytest.raises(ValueError, match="shape"):
            cache.put_many("t", ["a", "b"], np.zeros((3, 4), dtype=np.float32))
        bad = np.ones((2, 4), dtype=np.float32)
        bad[1, 2] = np.inf
        with pytest.raises(ValueError, match="NaN or inf"):
            cache.put_many("t", ["a", "b"], bad)
        assert len(cache) == 0
        cache.put_many("t", ["a"], np.ones((1, 4), dtype=np.float64))
        cache.put_many("t", ["a"], np.full((1, 4), 2.0))  # replace
        assert len(cache) == 1
        (row,) = cache.get_many("t", ["a"])
        assert row is not None
        assert row.dtype == np.float32
        np.testing.assert_array_equal(row, np.full(4, 2.0, dtype=np.float32))


def test_many_texts_cross_query_chunks(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(1234)]
    vecs = np.random.default_rng(0).standard_normal((len(texts), 8)).astype(np.float32)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        cache.put_many("t", texts, vecs)
        got = cache.get_many("t", texts[::-1])
        assert len(cache) == len(texts)
    np.testing.assert_array_equal(np.stack(got), vecs[::-1])  # type: ignore[arg-type]


def test_closed_cache_raises(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(CellcubeError, match="closed"):
        cache.get_many("t", ["a"])


def test_embed_texts_without_cache_and_empty_input(bert_cfg: TeacherConfig, tmp_path: Path) -> None:
    teacher = load_teacher(bert_cfg)
    out = embed_texts(teacher, TEXTS, None)
    assert out.shape == (len(TEXTS), 32)
    assert teacher.encode_calls == 1
    np.testing.assert_array_equal(out[0], out[3])
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        empty = embed_texts(teacher, [], cache)
        assert len(cache) == 0
    assert empty.shape == (0, 32)
    assert empty.dtype == np.float32


def test_embed_goes_through_the_configured_cache(bert_cfg: TeacherConfig, tmp_path: Path) -> None:
    """``embed(texts, teacher_cfg, cache_cfg)``: the first call fills the cache, a later one
    with a fresh teacher never loads it; a disabled cache sends every text to the teacher."""
    cache_cfg = CacheConfig(path=str(tmp_path / "emb.sqlite"))
    first = embed(TEXTS, bert_cfg, cache_cfg)
    np.testing.assert_allclose(first, load_teacher(bert_cfg).encode(TEXTS), atol=1e-6)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        assert len(cache) == len(DISTINCT)
    fresh = load_teacher(bert_cfg)
    np.testing.assert_array_equal(embed(TEXTS, fresh, cache_cfg), first)
    assert not fresh.loaded and fresh.encode_calls == 0
    off = CacheConfig(path=str(tmp_path / "unused.sqlite"), enabled=False)
    again = load_teacher(bert_cfg)
    np.testing.assert_allclose(embed(TEXTS, again, off), first, atol=1e-6)
    assert again.encode_calls == 1
    assert not (tmp_path / "unused.sqlite").exists()
