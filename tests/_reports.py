"""Comparing two runs' report.json model metrics: every number must agree except wall time."""

from __future__ import annotations

from typing import Any

import pytest

TIMING = frozenset({"train_seconds"})
"""Report fields that are wall-clock measurements: they differ between identical runs."""


def assert_same_model_metrics(got: dict[str, Any], ref: dict[str, Any], abs_tol: float) -> None:
    """``got`` and ``ref`` (``report["models"]`` or one model's entry) hold the same fields and,
    apart from :data:`TIMING`, the same numbers within ``abs_tol``, nested intervals included."""
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        if key in TIMING:
            continue
        if isinstance(value, dict):
            assert_same_model_metrics(got[key], value, abs_tol)
        else:
            assert got[key] == pytest.approx(value, abs=abs_tol), key
