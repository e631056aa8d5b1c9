"""What every loss shares: the input check, the curriculum-weighted mean, and its error type."""

from __future__ import annotations

import torch

from cellcube.errors import CellcubeError


class LossInputError(CellcubeError):
    """A loss was given unusable tensors (NaN/inf values or mismatched shapes)."""


def check_inputs(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raise :class:`LossInputError` (one line naming the loss) unless ``pred``/``target`` are
    finite ``(B, D)`` tensors of the same shape."""
    if pred.ndim != 2 or pred.shape != target.shape:
        raise LossInputError(
            f"loss '{name}': pred and target must both be (B, D), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    for label, t in (("pred", pred), ("target", target)):
        if not torch.isfinite(t).all():
            raise LossInputError(
                f"loss '{name}': {label} holds NaN or inf values (training diverged, or the "
                "embeddings are corrupt)"
            )


def weighted_mean(rows: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-row losses, weighted by the curriculum's ``weights`` (B,) when given.

    All-zero weights give 0 (still attached to the graph), never NaN.
    """
    if weights is None:
        return rows.mean()
    return (rows * weights).sum() / weights.sum().clamp_min(1e-12)
