"""Checkpoint files: atomic writes, safe reads, and the RNG states they carry.

A cellcube checkpoint is Lightning's dictionary (``state_dict``, optimiser, loop and callback
state) plus a ``cellcube`` entry holding the config (plain data), the model's report name and the
global RNG states. Everything in it is a tensor or plain Python data (str, int, float, bool,
None, lists, tuples, dicts), so every read uses ``torch.load(..., weights_only=True)``: a file
that holds anything else, such as a pickle that would run code while it is loaded, is refused
with a :class:`~cellcube.errors.CheckpointError` before any of its objects is built.

The RNG states are stored in that safe form too (:func:`rng_state` / :func:`restore_rng_state`):
numpy's ``get_state()`` tuple and Python's ``random.getstate()`` become tensors and ints, and
turn back into exactly the same generator states on ``--resume``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from cellcube.errors import CheckpointError
from cellcube.io import write_torch

__all__ = [
    "AtomicCheckpointIO",
    "load_checkpoint",
    "load_heads",
    "load_weights",
    "restore_rng_state",
    "rng_state",
]

HEADS = "objective.heads."
"""State-dict prefix of the multi-teacher projection heads (see
:class:`~cellcube.objectives.objective.Objective`)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes via temp file + fsync + rename (never a torn file) and
    reads through :func:`load_checkpoint` (``weights_only=True``)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        write_torch(path, checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's own read (``--resume``): a damaged or unsafe file is one CheckpointError."""
        return load_checkpoint(Path(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a cellcube checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: one line naming ``path`` when the file is missing, truncated, not a
            cellcube checkpoint, or holds objects other than tensors and plain data (an untrusted
            pickle is refused without being executed).
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused: the checkpoint holds Python objects other than tensors and "
                "plain data (an untrusted file, or one written by an older cellcube); nothing "
                "in it was run"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "cellcube" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a cellcube checkpoint")
    return ckpt


def load_heads(path: Path) -> dict[str, nn.Linear]:
    """The projection heads of a multi-teacher checkpoint, by module key (empty if none)."""
    state = load_checkpoint(path)["state_dict"]
    heads: dict[str, nn.Linear] = {}
    for key, weight in state.items():
        if key.startswith(HEADS) and key.endswith(".weight"):
            name = key[len(HEADS) : -len(".weight")]
            head = nn.Linear(weight.shape[1], weight.shape[0])
            head.load_state_dict({"weight": weight, "bias": state[f"{HEADS}{name}.bias"]})
            heads[name] = head.eval()
    return heads


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a checkpoint's weights into ``model`` (built with the same config) and set eval mode."""
    state = load_checkpoint(path)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not match the configured model ({first})"
        ) from None
    return model.eval()


def rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain data."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs to a :func:`rng_state` (the exact generator states it recorded)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    key = n["key"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["words"].tolist()), p["gauss_next"]))
