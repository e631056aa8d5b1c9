"""Bootstrap confidence intervals over test pairs, and paired differences between models.

Test sets are small (66-400 pairs on the built-in corpora), so a test MRR is an estimate with a
sizeable error. The percentile bootstrap (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13) estimates it without assuming a distribution: draw the test pairs with
replacement ``resamples`` times (the candidate answers stay fixed), recompute the metric on each
draw, and take the 2.5% and 97.5% quantiles of those values as the 95% interval.

Every model of a run is resampled with the *same* draws, so the difference between two models is
paired: each draw compares them on the same questions, which removes the questions' shared
difficulty from the comparison (far tighter than two independent intervals). The draws are seeded
(the run's ``seed``), so a report is reproducible.

A metric here is the mean over test pairs of a per-pair value: the reciprocal rank for MRR,
``rank <= 1`` for Recall@1 (:func:`per_pair_values`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "LEVEL",
    "bootstrap_means",
    "difference_summary",
    "intervals",
    "per_pair_values",
    "percentile_interval",
]

LEVEL = 0.95
"""Coverage of the reported intervals."""

_BLOCK = 1 << 22
"""Elements of one gathered block of resampled values (bounds memory for large test sets)."""


def per_pair_values(rank: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-pair values whose means are the bootstrapped metrics: ``mrr`` (``1/rank``) and
    ``recall@1`` (``rank <= 1``), float64, from each test pair's rank of its true answer."""
    return {"mrr": 1.0 / rank.double(), "recall@1": (rank <= 1).double()}


def bootstrap_means(values: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """The mean of each row of ``values`` on ``resamples`` bootstrap draws of its columns.

    Args:
        values: ``(k, n)``: k per-pair value vectors over the same n test pairs (e.g. the
            reciprocal ranks of k models).
        resamples: number of draws (each: n column indices with replacement).
        seed: seed of the draws; every row is resampled with the same draws (paired).

    Returns:
        ``(k, resamples)`` float64 means.
    """
    values = values.double()
    k, n = values.shape
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(k, resamples, dtype=torch.float64)
    step = max(1, _BLOCK // max(1, k * n))
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        idx = torch.randint(n, (rows, n), generator=g)
        out[:, start : start + rows] = values[:, idx].mean(dim=-1)
    return out


def percentile_interval(means: torch.Tensor, level: float = LEVEL) -> list[float]:
    """``[lo, hi]``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the bootstrap
    ``means`` (linear interpolation, as ``numpy.quantile``)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means.double(), q).tolist()
    return [lo, hi]


def difference_summary(a: torch.Tensor, b: torch.Tensor, level: float = LEVEL) -> dict[str, Any]:
    """The paired difference ``a - b`` of two rows of :func:`bootstrap_means` (same draws):
    its bootstrap ``mean``, percentile ``ci`` and ``se`` (the standard deviation of the
    resampled differences: the standard error of the observed difference)."""
    diff = a.double() - b.double()
    return {
        "mean": diff.mean().item(),
        "ci": percentile_interval(diff, level),
        "se": diff.std(unbiased=True).item() if diff.numel() > 1 else 0.0,
    }


def intervals(
    values: Mapping[str, Mapping[str, torch.Tensor]], resamples: int, seed: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, torch.Tensor]]:
    """Intervals of every model's metrics, and their bootstrap MRR means for paired differences.

    Args:
        values: model name -> metric name -> ``(n,)`` per-pair values (:func:`per_pair_values`),
            every vector over the same n test pairs.
        resamples: number of bootstrap draws.
        seed: seed of the draws (shared by every model and metric: paired).

    Returns:
        ``(ci, mrr_means)``: model -> metric -> ``[lo, hi]``, and model -> ``(resamples,)`` MRR
        means (feed two of them to :func:`difference_summary`).
    """
    keys = [(model, metric) for model, per in values.items() for metric in per]
    means = bootstrap_means(torch.stack([values[m][k] for m, k in keys]), resamples, seed)
    ci: dict[str, dict[str, list[float]]] = {model: {} for model in values}
    mrr_means: dict[str, torch.Tensor] = {}
    for (model, metric), row in zip(keys, means, strict=True):
        ci[model][metric] = percentile_interval(row)
        if metric == "mrr":
            mrr_means[model] = row
    return ci, mrr_means
