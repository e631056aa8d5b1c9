"""One process of the sharded-embedding tests in ``tests/test_sharded_embed.py`` (a script).

``python tests/sharded_embed_worker.py OUT CACHE N BLOCK`` embeds the first ``N`` distinct texts
of the zaragoza corpus with the real MiniLM teacher through the cache file ``CACHE`` with
:func:`cellcube.embed.sharded.embed_sharded` (blocks of ``BLOCK`` texts). Alone it embeds every
block; under ``torchrun`` it first joins the process group (gloo), and every rank embeds its
shard. Each rank writes ``OUT/rank<R>.npy`` (the embeddings it ended with) and
``OUT/rank<R>.json`` (world size, the teacher batches this rank ran; under torchrun also what
:func:`~cellcube.train.distributed.all_gather_rows` gathers when rank 0 has no rows, and what
:func:`~cellcube.train.distributed.on_every_rank` raises on each rank when rank 1 alone fails).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cellcube.config import CacheConfig, TeacherConfig
from cellcube.data import load_builtin
from cellcube.embed.sharded import embed_sharded
from cellcube.embed.teachers import load_teacher
from cellcube.errors import TeacherError
from cellcube.train import distributed


def texts(n: int) -> list[str]:
    """The first ``n`` distinct question/answer texts of the zaragoza corpus."""
    pairs = load_builtin("zaragoza")
    return list(dict.fromkeys(t for p in pairs for t in (p.question, p.answer)))[:n]


def fail_on_rank_one(me: int) -> str:
    if me == 1:
        raise TeacherError("teacher all-MiniLM-L6-v2: out of memory")
    return "ok"


def collectives(me: int) -> dict[str, object]:
    """Rank 0 gathers no rows, rank 1 two; then a step that fails on rank 1 only."""
    local = torch.full((2, 3), float(me)) if me else torch.zeros(0)
    gathered = [rows.tolist() for rows in distributed.all_gather_rows(local)]
    try:
        distributed.on_every_rank(lambda: fail_on_rank_one(me))
    except Exception as exc:
        return {"gathered": gathered, "error": f"{exc.__class__.__name__}: {exc}"}
    return {"gathered": gathered, "error": None}


def main(out: str, cache: str, n: int, block: int) -> None:
    torch.set_num_threads(1)  # the same kernels, hence the same bits, in every process
    if distributed.is_distributed():
        dist.init_process_group("gloo")
    teacher = load_teacher(TeacherConfig())
    vectors = embed_sharded(texts(n), teacher, CacheConfig(path=cache), block=block)
    me = distributed.rank()
    np.save(Path(out) / f"rank{me}.npy", vectors)
    info = {"world": distributed.world_size(), "encode_calls": teacher.encode_calls}
    if dist.is_initialized():
        info.update(collectives(me))
    (Path(out) / f"rank{me}.json").write_text(json.dumps(info))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
