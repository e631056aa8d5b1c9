"""One way to turn texts into embeddings: the configured teacher, through the on-disk cache.

:func:`embed` is what every stage calls (the run's splits, the decoder's phrase bank, data
expansion and inspection, benchmarks): it looks every text up in the SQLite cache
(:mod:`cellcube.embed.cache`) and runs only the missing ones through the teacher
(:mod:`cellcube.embed.teachers`), whose weights load only on a cache miss.

Example::

    from cellcube.config import load_config
    from cellcube.embed.encode import embed

    cfg = load_config("configs/default.yaml")
    vectors = embed(["How do I reset my password?"], cfg.teacher, cfg.cache)  # (1, 384) float32
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellcube.config import CacheConfig, Config, TeacherConfig
from cellcube.embed.cache import EmbeddingCache, embed_texts
from cellcube.embed.teachers import Teacher, load_teacher

__all__ = ["embed", "open_cache"]


def embed(
    texts: Sequence[str],
    teacher: TeacherConfig | Teacher,
    cache: CacheConfig,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with ``teacher``, reusing and filling the cache that ``cache`` configures.

    Args:
        texts: the texts; duplicates are embedded once.
        teacher: a validated teacher configuration, or an already built :class:`Teacher` (to
            keep its loaded weights across calls).
        cache: the ``cache`` section; with ``enabled: false`` every text goes to the teacher.
        progress: show progress bars for loading and embedding.

    Returns:
        float32 ``(len(texts), dim)`` unit-norm rows in input order.

    Raises:
        CellcubeError: the cache file cannot be opened or is not a cache.
        TeacherError: the teacher cannot be found or loaded, or gives NaN/inf.
    """
    store = open_cache(cache)  # an empty cache is falsy (it has a length): test for None
    with contextlib.nullcontext() if store is None else store:
        model = teacher if isinstance(teacher, Teacher) else load_teacher(teacher)
        return embed_texts(model, texts, store, progress=progress)


def open_cache(cfg: Config | CacheConfig) -> EmbeddingCache | None:
    """The embedding cache a config (or its ``cache`` section) points at; None when disabled.

    The caller closes it (it is a context manager).
    """
    cache = cfg.cache if isinstance(cfg, Config) else cfg
    return EmbeddingCache(Path(cache.path).expanduser()) if cache.enabled else None
