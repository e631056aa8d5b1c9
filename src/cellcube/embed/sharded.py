"""Embedding a corpus with every process of a ``torchrun`` job, each its shard of the texts.

The distinct texts are cut into fixed blocks of :data:`BLOCK` texts, in order; block ``b`` is
embedded by rank ``b % WORLD_SIZE`` through the shared SQLite cache
(:func:`cellcube.embed.cache.embed_texts`: each block's missing texts in one teacher call, stored
in one transaction), and every rank then receives every rank's rows as tensors
(:func:`cellcube.train.distributed.all_gather_rows`). A single process runs the same blocks one
after the other, so:

* the teacher sees the same batches whatever the number of processes or machines, and the
  embeddings are bit for bit those of one process (``tests/test_sharded_embed.py``);
* adding processes divides the teacher's work (the stage that dominates with a large teacher);
* an interrupted embedding resumes from its last stored block (the cache keeps them).

Processes on one machine share the cache file (SQLite in WAL mode with a busy timeout; every
text is written by exactly one rank, and the key ``(teacher, sha256(text))`` is the table's
primary key, so no row is lost or duplicated). Processes on different machines each fill their
own machine's cache with their shard: the rows travel between ranks, never through the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from cellcube.config import CacheConfig, TeacherConfig
from cellcube.embed.cache import embed_texts
from cellcube.embed.encode import embed, open_cache
from cellcube.embed.teachers import Teacher, load_teacher
from cellcube.train import distributed

__all__ = ["BLOCK", "embed_sharded", "shard_blocks"]

BLOCK = 1024
"""Texts per block: the unit of work of one rank, of one teacher call and of one cache write."""


def shard_blocks(n: int, world: int, rank: int, block: int = BLOCK) -> list[range]:
    """The blocks (ranges of text indices) that ``rank`` of ``world`` embeds out of ``n`` texts:
    ``[b*block, (b+1)*block)`` for every ``b`` with ``b % world == rank``.

    Example::

        >>> shard_blocks(5, world=2, rank=0, block=2)
        [range(0, 2), range(4, 5)]
        >>> shard_blocks(5, world=2, rank=1, block=2)
        [range(2, 4)]

    """
    starts = range(rank * block, n, world * block)
    return [range(s, min(s + block, n)) for s in starts]


def embed_sharded(
    texts: Sequence[str],
    teacher: TeacherConfig | Teacher,
    cache: CacheConfig,
    *,
    progress: bool = False,
    block: int = BLOCK,
) -> np.ndarray:
    """:func:`cellcube.embed.encode.embed` shared out over the processes of a ``torchrun`` job.

    Every rank calls it with the same ``texts`` and gets the same float32 ``(len(texts), dim)``
    unit rows in input order; each rank runs only its blocks of ``block`` distinct texts
    (:func:`shard_blocks`) through the teacher and the cache. Without a process group it embeds
    every block itself.

    Raises:
        CellcubeError: as :func:`~cellcube.embed.encode.embed` (on the rank where it happened;
            :class:`~cellcube.train.distributed.PeerFailed` on the others).
    """
    distinct = list(dict.fromkeys(texts))
    if not distinct:  # nothing to shard; the teacher still tells the dimension
        return embed(distinct, teacher, cache, progress=progress)
    world = distributed.world_size() if distributed.in_process_group() else 1
    me = distributed.rank() if world > 1 else 0
    blocks = [[distinct[i] for i in b] for b in shard_blocks(len(distinct), world, me, block)]
    local = distributed.on_every_rank(
        lambda: _embed_blocks(blocks, teacher, cache, progress and me == 0)
    )
    parts = [p.numpy() for p in distributed.all_gather_rows(torch.from_numpy(local))]
    # rank r's rows are its blocks in order; block b is the (b // world)-th block of rank b % world
    offsets = [0] * world
    rows = []
    for b in range(-(-len(distinct) // block)):
        r, size = b % world, min(block, len(distinct) - b * block)
        rows.append(parts[r][offsets[r] : offsets[r] + size])
        offsets[r] += size
    vectors = np.concatenate(rows)
    if len(distinct) == len(texts):
        return vectors
    row = {t: i for i, t in enumerate(distinct)}
    return vectors[[row[t] for t in texts]]


def _embed_blocks(
    blocks: list[list[str]], teacher: TeacherConfig | Teacher, cache: CacheConfig, progress: bool
) -> np.ndarray:
    """This rank's blocks through the teacher and the cache, one cache transaction per block:
    float32 rows, the blocks in order (``(0, 0)`` for no block)."""
    from tqdm.auto import tqdm

    if not blocks:
        return np.zeros((0, 0), dtype=np.float32)
    store = open_cache(cache)
    with contextlib.nullcontext() if store is None else store:
        model = teacher if isinstance(teacher, Teacher) else load_teacher(teacher)
        bar = tqdm(total=sum(map(len, blocks)), desc="embedding", unit="text", disable=not progress)
        out = []
        for block in blocks:
            out.append(embed_texts(model, block, store))
            bar.update(len(block))
        bar.close()
    return np.concatenate(out).astype(np.float32, copy=False)
