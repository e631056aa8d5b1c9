"""One way to turn texts into embeddings: the configured teacher, through the on-disk cache."""

from __future__ import annotations

from pathlib import Path

from cellcube.config import Config, TeacherConfig
from cellcube.embed.cache import EmbeddingCache
from cellcube.embed.teachers import Teacher, TeacherSpec, load_teacher


def make_teacher(cfg: Config | TeacherConfig) -> Teacher:
    """A configured teacher: the primary one of a config, or one teacher entry (weights load
    lazily, only if the cache misses)."""
    t = cfg.teacher if isinstance(cfg, Config) else cfg
    return load_teacher(
        TeacherSpec(
            model=t.model,
            kind=t.kind,
            dtype=t.dtype,
            device=t.device,
            max_length=t.max_length,
            batch_size=t.batch_size,
            pooling=t.pooling,
            layer=t.layer,
            gguf_file=t.gguf_file,
        )
    )


def open_cache(cfg: Config) -> EmbeddingCache | None:
    return EmbeddingCache(Path(cfg.cache.path).expanduser()) if cfg.cache.enabled else None
