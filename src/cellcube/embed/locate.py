"""Where a teacher's model lives, and the identity under which its embeddings are cached.

Everything here is cheap: it reads file names, sizes and a few samples of the model files, never
the weights as tensors. :func:`locate_model` turns ``teacher.model`` (a packaged-model alias, a
local directory or a Hugging Face hub id) into a :class:`ModelLocation`, raising one
:class:`~cellcube.errors.TeacherError` line for a missing directory, a file, or a directory that
holds no model of the configured kind. :func:`teacher_identity` is the embedding cache's key for
a teacher: equal for configurations that produce the same embeddings, different when the model
files, backend, pooling, layer, dtype or max length differ.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cellcube.config import TeacherConfig
from cellcube.embed.packaged import packaged_model
from cellcube.errors import TeacherError

__all__ = [
    "ModelLocation",
    "fingerprint",
    "locate_model",
    "resolve_device",
    "resolve_model_path",
    "teacher_identity",
]

# "org/name" or "name": the shape of a Hugging Face hub id (never treated as a filesystem path).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files below this size are hashed in full for the fingerprint.
_SMALL_FILE_BYTES = 1 << 20
# Larger files (weights) are fingerprinted by size plus a few evenly spaced samples.
_SAMPLE_COUNT = 16
_SAMPLE_BYTES = 1 << 16
_IGNORED_DIRS = frozenset({".git", ".cache", "__pycache__"})


@dataclass(frozen=True)
class ModelLocation:
    """A teacher model found on disk or named on the hub.

    Attributes:
        path: the absolute model directory, or the hub id when ``is_local`` is False.
        gguf_file: the GGUF weights file inside ``path`` (set automatically for packaged GGUF
            models), or None.
        is_local: whether ``path`` is a local directory (then nothing is downloaded).
        fingerprint: :func:`fingerprint` of the directory, or ``"hub"`` for a hub id.
    """

    path: str
    gguf_file: str | None
    is_local: bool
    fingerprint: str


def resolve_model_path(model: str) -> str:
    """Map a model name to what ``from_pretrained`` should load.

    A packaged-model alias (e.g. ``"all-MiniLM-L6-v2"``) becomes its local directory; an
    existing directory becomes its absolute path (``~`` is expanded); anything else is returned
    unchanged and treated as a hub id.
    """
    packaged = packaged_model(model)
    if packaged is not None:
        return str(packaged.path)
    expanded = os.path.expanduser(model)
    if model and os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return model


def _looks_like_path(model: str) -> bool:
    """True when ``model`` is clearly meant as a filesystem path rather than a hub id."""
    if model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or model in (".", ".."):
        return True
    if os.altsep and os.altsep in model:
        return True
    # A hub id "org/name" contains os.sep on POSIX; only more complex strings are paths.
    return os.sep in model and not _HUB_ID.match(model)


def fingerprint(directory: Path) -> str:
    """A 16-hex-digit digest of a model directory that changes when its contents change.

    Hashes every file's relative name and size, the full bytes of every file under 1 MiB
    (config, tokenizer files, tiny weights), and 16 evenly spaced 64 KiB samples of each larger
    file, so a multi-gigabyte model is fingerprinted by reading about 1 MiB per weight shard.
    Fine-tuned weights re-saved over the old ones change every sample, so they change the
    fingerprint even when the file size stays the same; an edit confined to bytes between the
    samples of a large file would go unnoticed.
    """
    digest = hashlib.sha256()
    entries: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS)
        for name in files:
            full = Path(root) / name
            entries.append((full.relative_to(directory).as_posix(), full))
    for rel, full in sorted(entries):
        try:
            size = full.stat().st_size
            digest.update(f"{rel}\0{size}\0".encode())
            with open(full, "rb") as fh:
                if size < _SMALL_FILE_BYTES:
                    digest.update(fh.read())
                else:
                    step = max(1, (size - _SAMPLE_BYTES) // (_SAMPLE_COUNT - 1))
                    for i in range(_SAMPLE_COUNT):
                        fh.seek(min(i * step, max(0, size - _SAMPLE_BYTES)))
                        digest.update(fh.read(_SAMPLE_BYTES))
        except OSError as exc:
            raise TeacherError(
                f"teacher.model: cannot read '{full}' ({exc.strerror or exc})"
            ) from None
    return digest.hexdigest()[:16]


def resolve_device(device: str) -> str:
    """Check ``teacher.device`` and turn ``"auto"`` into ``"cuda"`` or ``"cpu"``.

    Raises :class:`~cellcube.errors.TeacherError` for a string torch does not parse, or for a
    CUDA device that this machine does not have.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise TeacherError(
            f"teacher.device: invalid device {device!r} (use 'cpu', 'cuda', 'cuda:N' or 'auto')"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise TeacherError("teacher.device: CUDA requested but not available")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise TeacherError(
                f"teacher.device: {device!r} requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) are available"
            )
    return device


def _check_model_dir(directory: Path, cfg: TeacherConfig, gguf_file: str | None) -> None:
    """Raise a clear error when ``directory`` does not look like a model of ``cfg.kind``."""
    if gguf_file is not None:
        if cfg.kind != "transformers":
            raise TeacherError("teacher.gguf_file: GGUF models need teacher.kind 'transformers'")
        if not (directory / gguf_file).is_file():
            raise TeacherError(f"teacher.gguf_file: no file '{gguf_file}' in '{directory}'")
        return
    has_config = (directory / "config.json").is_file()
    has_modules = (directory / "modules.json").is_file()
    if cfg.kind == "transformers" and not has_config:
        hint = " (it has modules.json: use teacher.kind 'sentence-transformers')"
        hint = hint if has_modules else ""
        raise TeacherError(
            f"teacher.model: '{directory}' is not a transformers model directory "
            f"(no config.json){hint}"
        )
    if cfg.kind == "sentence-transformers" and not (has_config or has_modules):
        raise TeacherError(
            f"teacher.model: '{directory}' is not a model directory "
            "(no modules.json or config.json)"
        )


def _check_hub_id(model: str) -> None:
    """Raise a clear error when ``model``, not being a local directory, is no valid hub id."""
    if _looks_like_path(model) or os.path.exists(os.path.expanduser(model)):
        if os.path.exists(os.path.expanduser(model)):
            raise TeacherError(f"teacher.model: '{model}' is a file, not a model directory")
        raise TeacherError(f"teacher.model: no such directory '{model}'")
    if not _HUB_ID.match(model):
        raise TeacherError(
            f"teacher.model: {model!r} is neither an existing directory "
            "nor a valid Hugging Face hub id"
        )


def locate_model(cfg: TeacherConfig) -> ModelLocation:
    """Find ``cfg.model`` (packaged alias, local directory or hub id) without loading it.

    A local directory is checked to hold a model of ``cfg.kind`` (or the GGUF file) and
    fingerprinted; a hub id is only checked for its shape (an unreachable hub surfaces when the
    weights load). Raises :class:`~cellcube.errors.TeacherError` naming the field otherwise.
    """
    packaged = packaged_model(cfg.model)
    path = str(packaged.path) if packaged else resolve_model_path(cfg.model)
    gguf_file = cfg.gguf_file or (packaged.gguf_file if packaged else None)
    if not os.path.isdir(path):
        _check_hub_id(cfg.model)
        return ModelLocation(path, gguf_file, is_local=False, fingerprint="hub")
    _check_model_dir(Path(path), cfg, gguf_file)
    return ModelLocation(path, gguf_file, is_local=True, fingerprint=fingerprint(Path(path)))


def teacher_identity(cfg: TeacherConfig, location: ModelLocation) -> str:
    """The embedding cache's key for a teacher: backend, model, pooling and layer, dtype, max
    length, GGUF file and fingerprint. Batch size and device do not change the embeddings, so
    they are not part of it."""
    pooling = cfg.pooling if cfg.kind == "transformers" else "st"
    if cfg.layer is not None:
        pooling += f"@{cfg.layer}"
    gguf = f"|gguf={location.gguf_file}" if location.gguf_file else ""
    return (
        f"{cfg.kind}:{location.path}|{pooling}|{cfg.dtype}"
        f"|len={cfg.max_length}{gguf}|fp={location.fingerprint}"
    )
