"""Sharded embedding under torchrun: 2 processes, and 2 "nodes" on localhost, equal one process.

Each torchrun process executes ``tests/sharded_embed_worker.py``: the first 300 distinct zaragoza
texts through the real MiniLM teacher and a real SQLite cache, in blocks of 64 (5 blocks: ranks 0
and 1 of two embed 3 and 2 of them). The embeddings every rank ends with must be bit for bit those
of one process, each rank must have run only its own blocks through the teacher, and the caches
must hold every text exactly once.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cellcube.config import CacheConfig, TeacherConfig
from cellcube.embed.cache import EmbeddingCache
from cellcube.embed.sharded import embed_sharded, shard_blocks
from cellcube.embed.teachers import load_teacher
from sharded_embed_worker import texts

WORKER = Path(__file__).with_name("sharded_embed_worker.py")
REPO = Path(__file__).resolve().parent.parent
N, BLOCK = 300, 64
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _run(cmd: list[str], out: Path, cache: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` followed by the worker's arguments."""
    out.mkdir(parents=True, exist_ok=True)
    args = [str(WORKER), str(out), str(cache), str(N), str(BLOCK)]
    pipe, merged = subprocess.PIPE, subprocess.STDOUT
    return subprocess.Popen([*cmd, *args], cwd=REPO, env=ENV, stdout=pipe, stderr=merged, text=True)


def _wait(*procs: subprocess.Popen[str]) -> None:
    """Wait for every process; fail with its output if one did not exit 0."""
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output[-3000:]


def _rows(cache: Path) -> int:
    """Rows stored in a cache file."""
    with sqlite3.connect(cache) as conn:
        return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The embeddings of one process (this one, one thread like every worker), checked against
    its own cache rows."""
    cache = tmp_path_factory.mktemp("single") / "cache.sqlite"
    teacher = load_teacher(TeacherConfig())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vectors = embed_sharded(texts(N), teacher, CacheConfig(path=str(cache)), block=BLOCK)
    finally:
        torch.set_num_threads(threads)
    assert vectors.shape == (N, 384)
    assert teacher.encode_calls == 5  # one teacher batch per block
    # row i is text i's embedding: the cache (keyed by text) holds the same rows
    with EmbeddingCache(cache) as store:
        stored = np.stack(store.get_many(teacher.identity, texts(N)))
    assert np.array_equal(stored, vectors)
    assert _rows(cache) == N
    return vectors


def test_blocks_alternate_over_ranks_and_cover_every_text_once() -> None:
    shards = [shard_blocks(N, 2, r, BLOCK) for r in range(2)]
    assert [len(b) for b in shards[0]] == [64, 64, 44] and [len(b) for b in shards[1]] == [64, 64]
    covered = sorted(i for shard in shards for b in shard for i in b)
    assert covered == list(range(N))
    assert shard_blocks(N, 1, 0, BLOCK) == [range(s, min(s + 64, N)) for s in range(0, N, 64)]


@pytest.mark.slow  # three processes start torch and MiniLM (~20 s of CPU)
@pytest.mark.timeout(600)  # with the single-process fixture, on a loaded machine
def test_two_processes_embed_bit_for_bit_what_one_process_embeds(
    single: np.ndarray, tmp_path: Path
) -> None:
    cache = tmp_path / "shared.sqlite"  # both processes write the same file
    _wait(_run([*TORCHRUN, "--standalone", "--nproc_per_node=2"], tmp_path, cache))
    calls = []
    for rank in range(2):
        assert np.array_equal(np.load(tmp_path / f"rank{rank}.npy"), single)
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert info["world"] == 2
        calls.append(info["encode_calls"])
    assert calls == [3, 2]  # each rank ran only its own blocks (one teacher batch per block)
    assert _rows(cache) == N  # concurrent writers: no row lost, none twice
    # the collectives behind it: uneven row counts (rank 0 none), a failure on one rank only
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["gathered"] == ranks[1]["gathered"] == [[], [[1.0] * 3, [1.0] * 3]]
    assert ranks[1]["error"] == "TeacherError: teacher all-MiniLM-L6-v2: out of memory"
    assert ranks[0]["error"] == (
        "PeerFailed: rank 1 failed (TeacherError): teacher all-MiniLM-L6-v2: out of memory"
    )


@pytest.mark.slow  # four processes start torch, two of them MiniLM (~25 s of CPU)
@pytest.mark.timeout(600)
def test_two_nodes_through_c10d_rendezvous_embed_what_one_process_embeds(
    single: np.ndarray, tmp_path: Path
) -> None:
    endpoint = f"localhost:{_free_port()}"
    nodes = []
    for node in range(2):
        cmd = [
            *TORCHRUN,
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={node}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            "--rdzv-id=sharded-embed-test",
        ]
        nodes.append(_run(cmd, tmp_path, tmp_path / f"node{node}.sqlite"))  # a cache per machine
    _wait(*nodes)
    for rank in range(2):
        assert np.array_equal(np.load(tmp_path / f"rank{rank}.npy"), single)
    # each machine's cache holds its own shard only: the rows travelled between the processes
    assert sorted(_rows(tmp_path / f"node{n}.sqlite") for n in range(2)) == [128, 172]
