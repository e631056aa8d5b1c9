"""The report of ``benchmarks/scale.py``: slopes, the markdown table, the plot, the results key.

Kept apart from the stages so that the stage subprocesses import nothing they do not run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
PLOT = ROOT / "docs" / "scale.png"
DOC = ROOT / "docs" / "scale.md"
SLOPE_FROM = 10_000
"""Slopes are fitted from this size (when measured) to the largest: the range the targets name."""
STAGES = ("import", "embed_cold", "embed_warm", "train", "evaluate", "inspect", "expand", "ask")


def slope(points: dict[int, float], lo: int, hi: int) -> float | None:
    """The log-log slope of a cost between ``lo`` and ``hi`` pairs (None without both, or with
    a cost under a millisecond / MiB, where the ratio is noise)."""
    a, b = points.get(lo), points.get(hi)
    if a is None or b is None or a <= 1e-3 or b <= 1e-3:
        return None
    return math.log(b / a) / math.log(hi / lo)


def summarise(measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per stage: the measurements by size, and the slopes of time and stage memory between
    :data:`SLOPE_FROM` pairs (the smallest size when it was not measured) and the largest size
    it was measured at (``slope_between``; None below two sizes)."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        by_size = {int(k): v for k, v in measured.get(stage, {}).items()}
        times = {k: v["seconds"] for k, v in by_size.items() if "seconds" in v}
        mems = {k: v["rss_stage_mib"] for k, v in by_size.items() if "rss_stage_mib" in v}
        cpus = {k: v["cpu_seconds"] for k, v in by_size.items() if "cpu_seconds" in v}
        pair = None
        if len(times) > 1:
            hi = max(times)
            lo = SLOPE_FROM if SLOPE_FROM in times and hi > SLOPE_FROM else min(times)
            pair = [lo, hi]
        out[stage] = {
            "by_pairs": {str(k): by_size[k] for k in sorted(by_size)},
            "slope_between": pair,
            "time_slope": slope(times, *pair) if pair else None,
            "cpu_slope": slope(cpus, *pair) if pair else None,
            "memory_slope": slope(mems, *pair) if pair else None,
        }
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    """Log-log time and stage-memory curves, one line per stage, its slope in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, slope_key, ax, label in (
        ("seconds", "time_slope", axes[0], "wall time (s)"),
        ("rss_stage_mib", "memory_slope", axes[1], "peak RSS above the stage start (MiB)"),
    ):
        for stage, s in summary.items():
            pts = [(int(n), v[key]) for n, v in s["by_pairs"].items() if v.get(key, 0) > 0]
            if not pts:
                continue
            k = s[slope_key]
            tag = f"{stage} ({k:.2f})" if k is not None else stage
            ax.plot(*zip(*pts, strict=True), marker="o", label=tag)
        ax.set(xscale="log", yscale="log", xlabel="pairs", ylabel=label)
        ax.set_title(f"{label}; slope from {SLOPE_FROM:,} pairs to the largest", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict[str, Any], sizes: list[int]) -> str:
    """The markdown table of ``docs/scale.md``: wall time (CPU time) and stage memory by size,
    and the slopes."""

    def cell(v: dict[str, Any] | None, key: str, fmt: str) -> str:
        if v is None:
            return "–"
        if "skipped" in v:
            return "skipped"
        cpu = f" ({v['cpu_seconds']:{fmt}})" if key == "seconds" and "cpu_seconds" in v else ""
        return format(v[key], fmt) + cpu

    def num(k: float | None) -> str:
        return "–" if k is None else f"{k:.2f}"

    heads = [f"{n:,}" for n in sizes]
    lines = [
        f"| stage | {' | '.join(f'{h} pairs: s (CPU s)' for h in heads)} | time slope | "
        f"CPU slope | {' | '.join(f'{h}: MiB' for h in heads)} | memory slope | slope between |",
        "|---" * (2 * len(sizes) + 5) + "|",
    ]
    for stage, s in summary.items():
        got = [s["by_pairs"].get(str(n)) for n in sizes]
        times = " | ".join(cell(v, "seconds", ".1f") for v in got)
        mems = " | ".join(cell(v, "rss_stage_mib", ".0f") for v in got)
        pair = s["slope_between"]
        span = "–" if pair is None else f"{pair[0]:,}–{pair[1]:,}"
        lines.append(
            f"| {stage} | {times} | {num(s['time_slope'])} | {num(s['cpu_slope'])} | {mems} "
            f"| {num(s['memory_slope'])} | {span} |"
        )
    return "\n".join(lines)


def write_results(section: dict[str, Any]) -> None:
    """Set the ``scale`` key of ``benchmarks/results.json`` (re-read now; other keys kept)."""
    from cellcube.io import write_json

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["scale"] = section
    write_json(RESULTS, results)


def render(section: dict[str, Any]) -> None:
    """The plot and the ``scale`` table of ``docs/scale.md`` from a results section (the
    ``scale`` key of ``benchmarks/results.json``)."""
    from benchmarks.doc_tables import render_into

    plot(section["stages"], PLOT)
    note = (
        "<!-- rendered by `python -m benchmarks.scale --render-only` from the `scale` key of "
        "benchmarks/results.json -->"
    )
    render_into(DOC, {"scale": [note, "", table(section["stages"], section["pairs"])]})


def read_section() -> dict[str, Any]:
    """The ``scale`` key of the committed results; a missing or unreadable file or key stops
    with one line naming it."""
    try:
        return json.loads(RESULTS.read_text())["scale"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: {RESULTS}: no readable 'scale' results ({exc!r})") from None
