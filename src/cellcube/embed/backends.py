"""The two ways a teacher runs a batch of texts: loading the weights and encoding one batch.

* :class:`SentenceTransformerBackend` (``teacher.kind: sentence-transformers``): the model's own
  sentence-transformers pipeline (tokeniser, transformer, pooling, normalisation).
* :class:`TransformersBackend` (``teacher.kind: transformers``): any Hugging Face ``AutoModel``
  (BERT-like encoders or decoder-only LLMs, also from a GGUF file), its hidden states of the last
  layer or of ``teacher.layer`` pooled in float32 (:func:`cellcube.embed.pooling.pool`).

Both return float32 rows of unit norm and truncate texts to ``teacher.max_length`` tokens (or the
model's own limit, if lower). :func:`load_backend` turns any loading failure into one
:class:`~cellcube.errors.TeacherError` line naming ``teacher.model``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cellcube.config import TeacherConfig
from cellcube.embed.locate import ModelLocation
from cellcube.embed.pooling import l2_normalise, pool
from cellcube.errors import TeacherError

__all__ = [
    "Backend",
    "SentenceTransformerBackend",
    "TransformersBackend",
    "load_backend",
    "loading_bars",
]


@contextlib.contextmanager
def loading_bars(enabled: bool) -> Iterator[None]:
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


def _position_limit(tokenizer: Any, config: Any) -> int | None:
    """Longest input the model can take, from the tokenizer or the config (None if unknown)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    return None


def _max_length(cfg: TeacherConfig, tokenizer: Any, config: Any) -> int:
    """``cfg.max_length``, capped at the model's own position limit when it has one."""
    limit = _position_limit(tokenizer, config)
    return min(cfg.max_length, limit) if limit else cfg.max_length


class SentenceTransformerBackend:
    """A sentence-transformers model, loaded in ``cfg.dtype`` on ``device``.

    Attributes:
        model: the loaded ``SentenceTransformer``.
        dim: its embedding dimension (None if the model does not say).
        max_length: the token limit texts are truncated to.
    """

    def __init__(self, cfg: TeacherConfig, location: ModelLocation, device: str) -> None:
        """Load the model at ``location`` (no network access for a local directory)."""
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(location.path),
            device=device,
            model_kwargs={"dtype": getattr(torch, cfg.dtype)},
            local_files_only=location.is_local,
        )
        model.eval()
        self.max_length = _max_length(
            cfg,
            getattr(model, "tokenizer", None),
            getattr(getattr(model, "transformers_model", None), "config", None),
        )
        model.max_seq_length = self.max_length
        # sentence-transformers 6 renamed get_sentence_embedding_dimension (now deprecated).
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        dim = get_dim()
        self.model = model
        self.dim: int | None = int(dim) if dim else None

    def encode_batch(self, batch: list[str]) -> np.ndarray:
        """One batch through the sentence-transformers pipeline, renormalised in float32."""
        import torch

        with torch.inference_mode():
            emb = self.model.encode(
                batch,
                batch_size=len(batch),
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return l2_normalise(emb.float())


class TransformersBackend:
    """A Hugging Face ``AutoModel`` with its tokenizer, pooled as ``cfg.pooling`` at
    ``cfg.layer`` (hidden-state index: 0 = token embeddings, -1 = last layer, None = the model's
    output).

    Attributes:
        model: the loaded ``AutoModel``, in ``cfg.dtype`` on ``device``.
        tokenizer: its tokenizer, padding on the right.
        dim: the hidden size (None if the config does not say).
        max_length: the token limit texts are truncated to.
    """

    def __init__(self, cfg: TeacherConfig, location: ModelLocation, device: str) -> None:
        """Load tokenizer and weights at ``location``; check ``cfg.layer`` against the model."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        local: dict[str, Any] = {"local_files_only": True} if location.is_local else {}
        if location.gguf_file is not None:
            local["gguf_file"] = location.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(location.path, **local)
        if tokenizer.pad_token is None:
            # Causal LMs (LLaMA, Mistral, ...) ship without a pad token; padded positions are
            # masked out of the mean anyway, so any token will do.
            if tokenizer.eos_token is None:
                raise TeacherError(
                    f"teacher.model: the tokenizer of '{location.path}' has neither a pad "
                    "nor an eos token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        # Right padding keeps real tokens at positions 0..len-1 (position ids of decoder-only
        # models ignore the attention mask), so an embedding does not depend on its batch.
        tokenizer.padding_side = "right"
        model = AutoModel.from_pretrained(location.path, dtype=getattr(torch, cfg.dtype), **local)
        model.to(device)
        model.eval()
        config = model.config
        self._n_layers = getattr(config, "num_hidden_layers", None)
        self._path = location.path
        self._check_layer(cfg.layer)
        self.max_length = _max_length(cfg, tokenizer, config)
        dim = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        self.dim = int(dim) if dim else None
        self.tokenizer = tokenizer
        self.model = model
        self._forward_keys = frozenset(inspect.signature(model.forward).parameters)
        self._device = device
        self._layer = cfg.layer
        self._pooling = cfg.pooling

    def encode_batch(self, batch: list[str]) -> np.ndarray:
        """One batch through the model, pooled in float32 and L2-normalised."""
        return self.encode_layers(batch, [self._layer])[0]

    def encode_layers(self, batch: list[str], layers: Sequence[int | None]) -> list[np.ndarray]:
        """One batch through the model once, pooled at each of ``layers`` (None: the model's
        output): what :meth:`encode_batch` gives for a teacher of each layer, from one forward
        pass."""
        import torch

        for layer in layers:
            self._check_layer(layer)
        enc = self.tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {k: v.to(self._device) for k, v in enc.items() if k in self._forward_keys}
        hidden_states = any(layer is not None for layer in layers)
        pooled = []
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=hidden_states)
            for layer in layers:
                hidden = (
                    out.last_hidden_state if layer is None else out.hidden_states[layer]
                ).float()
                mask = enc["attention_mask"].to(self._device).unsqueeze(-1).float()
                pooled.append(pool(hidden, mask, self._pooling))
        return [l2_normalise(p) for p in pooled]

    def _check_layer(self, layer: int | None) -> None:
        """Raise a :class:`TeacherError` naming ``teacher.layer`` when the model has no such
        hidden state."""
        layers = self._n_layers
        if layer is not None and isinstance(layers, int) and not -layers - 1 <= layer <= layers:
            raise TeacherError(
                f"teacher.layer: {layer} is out of range for '{self._path}' "
                f"({layers} layers: use 0..{layers} or -{layers + 1}..-1)"
            )


Backend = SentenceTransformerBackend | TransformersBackend


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, prefixed by its type name."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].strip()}" if text else type(exc).__name__


def _load_error(location: ModelLocation, exc: BaseException) -> TeacherError:
    """A loading failure as a one-line :class:`TeacherError`."""
    if not location.is_local:
        return TeacherError(
            f"teacher.model: cannot load '{location.path}' (not a local directory and the "
            "Hugging Face hub is unreachable or has no such model; download it and set "
            f"teacher.model to its directory) [{_first_line(exc)}]"
        )
    return TeacherError(f"teacher.model: cannot load '{location.path}' ({_first_line(exc)})")


def load_backend(
    cfg: TeacherConfig, location: ModelLocation, device: str, *, progress: bool = False
) -> Backend:
    """Load the backend of ``cfg.kind`` (loading bars shown only with ``progress``).

    Raises :class:`~cellcube.errors.TeacherError` for any failure: a bad model name or bad
    files, an unreachable hub, a layer out of range.
    """
    st = cfg.kind == "sentence-transformers"
    backend = SentenceTransformerBackend if st else TransformersBackend
    try:
        with loading_bars(progress):
            return backend(cfg, location, device)
    except TeacherError:
        raise
    except Exception as exc:  # any loader failure is a bad model name or bad files
        raise _load_error(location, exc) from exc
