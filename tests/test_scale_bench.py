"""The arithmetic and bookkeeping of ``benchmarks/scale.py`` (no stage is run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import scale_report as scale


def test_slope_is_the_log_log_exponent_between_two_sizes() -> None:
    assert scale.slope({10: 2.0, 100: 20.0}, 10, 100) == pytest.approx(1.0)
    assert scale.slope({10: 2.0, 100: 200.0}, 10, 100) == pytest.approx(2.0)
    assert scale.slope({1_000: 3.0, 100_000: 3.0}, 1_000, 100_000) == pytest.approx(0.0)
    assert scale.slope({10: 2.0}, 10, 100) is None  # not measured
    assert scale.slope({10: 0.0, 100: 1.0}, 10, 100) is None  # below the noise floor


def test_summary_and_table_keep_skipped_stages_visible() -> None:
    measured = {
        "train": {
            "1000": {"seconds": 1.0, "cpu_seconds": 0.5, "rss_stage_mib": 10.0},
            "10000": {"seconds": 10.0, "cpu_seconds": 50.0, "rss_stage_mib": 100.0},
        },
        "expand": {"1000": {"seconds": 2.0, "rss_stage_mib": 5.0}, "10000": {"skipped": "x"}},
    }
    summary = scale.summarise(measured)
    assert summary["train"]["time_slope"] == pytest.approx(1.0)
    assert summary["train"]["memory_slope"] == pytest.approx(1.0)
    assert summary["train"]["cpu_slope"] == pytest.approx(2.0)
    assert summary["train"]["slope_between"] == [1_000, 10_000]
    assert summary["expand"]["time_slope"] is None and summary["expand"]["slope_between"] is None
    assert set(summary) == set(scale.STAGES)
    text = scale.table(summary, [1_000, 10_000])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert rows["train"] == (
        "| train | 1.0 (0.5) | 10.0 (50.0) | 1.00 | 2.00 | 10 | 100 | 1.00 | 1,000–10,000 |"
    )
    assert "skipped" in rows["expand"] and rows["ask"].count("–") == 8


def test_results_keep_every_other_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"bank": {"recall": 0.97}, "scale": {"old": True}}))
    monkeypatch.setattr(scale, "RESULTS", results)
    scale.write_results({"pairs": [1, 2]})
    assert json.loads(results.read_text()) == {"bank": {"recall": 0.97}, "scale": {"pairs": [1, 2]}}
