"""From a model's per-token hidden states to one unit-norm float32 vector per text.

Both functions work on right-padded batches: real tokens sit at positions ``0 .. len - 1`` and
``mask`` is 1 there, 0 on padding, so a text's embedding does not depend on the batch it is in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch loads only when a teacher actually runs
    import torch

__all__ = ["Pooling", "l2_normalise", "pool"]

Pooling = Literal["mean", "cls", "last"]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool ``(B, T, H)`` hidden states over the real tokens into ``(B, H)``.

    Args:
        hidden: the hidden states of one layer, float32.
        mask: ``(B, T, 1)`` float attention mask of a right-padded batch.
        pooling: ``"mean"``: the mask-weighted mean over tokens; ``"cls"``: the first token;
            ``"last"``: the last real token (the usual choice for causal LLMs besides the mean).
    """
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    last = mask.squeeze(-1).sum(dim=1).long().clamp(min=1) - 1  # right padding: last real token
    return hidden[range(hidden.shape[0]), last]


def l2_normalise(emb: torch.Tensor) -> np.ndarray:
    """The rows of ``emb`` scaled to unit L2 norm in float32, as a numpy array."""
    import torch.nn.functional as F

    emb = F.normalize(emb.float(), p=2.0, dim=1, eps=1e-12)
    return emb.cpu().numpy().astype(np.float32, copy=False)
