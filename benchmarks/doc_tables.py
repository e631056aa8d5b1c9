"""What the multi-teacher and data-expansion benchmarks share: running their planned
``cellcube train`` runs into a committed results file, and rendering tables from that file into a
doc between marker comments.

Running reuses the study's machinery (:class:`benchmarks.study.Runner` writes one JSON line per
finished run, holding its key, overrides, resolved config, commit and whole ``report.json``;
:func:`benchmarks.study_results.pending` skips the keys already there). Rendering is pure text:
:func:`splice` replaces what lies between ``<!-- bench:NAME:begin -->`` and
``<!-- bench:NAME:end -->`` and nothing else, so a doc's prose around its tables is hand-written
and its numbers are not. Numbers use :mod:`benchmarks.study_stats`: a mean over seeds with its
95% t-interval, and paired differences (matched by seed) as mean ± SE over seeds, which count as
a win or a loss only beyond 2 SE (:func:`benchmarks.study_stats.verdict`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.study_plans import Run
from benchmarks.study_results import pending, read_results
from benchmarks.study_stats import Paired, num, paired, t_interval, verdict
from benchmarks.study_tables import shown
from cellcube.errors import CellcubeError
from cellcube.io import write_text

NOISE_RULE = (
    "A paired difference inside 2 SE is not a win (nor a loss): it is called no measurable "
    "difference."
)
VERDICT = {"wins": "better", "loses": "worse", "none": "no measurable difference", "unknown": "-"}


# -- markers -----------------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    """The begin and end comments of the block ``name``."""
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def splice(text: str, name: str, block: Sequence[str], path: Path) -> str:
    """``text`` with everything between the markers of ``name`` replaced by ``block``.

    Raises :class:`CellcubeError` naming the file unless each marker occurs exactly once, begin
    before end."""
    begin, end = markers(name)
    i, j = text.find(begin), text.find(end)
    if text.count(begin) != 1 or text.count(end) != 1 or j < i:
        raise CellcubeError(
            f"{shown(path)}: expected one {begin} line and, after it, one {end} line"
        )
    inner = "\n".join(block).strip("\n")
    return f"{text[: i + len(begin)]}\n\n{inner}\n\n{text[j:]}"


def render_into(path: Path, blocks: dict[str, Sequence[str]]) -> Path:
    """Replace each named block of the markdown file ``path`` (all or nothing) and return it."""
    text = path.read_text(encoding="utf-8")
    for name, block in blocks.items():
        text = splice(text, name, block, path)
    write_text(path, text)
    return path


# -- cells -------------------------------------------------------------------------------------


def mean_ci(values: Sequence[float]) -> str:
    """``mean [lo, hi]`` with the 95% t-interval over seeds; one value alone; ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return num(values[0])
    lo, hi = t_interval(values)
    return f"{num(sum(values) / len(values))} [{num(lo)}, {num(hi)}]"


def paired_diff(diffs: Sequence[float]) -> Paired | None:
    """Mean and SE over seeds of per-seed differences (None without two of them)."""
    return paired(diffs) if len(diffs) >= 2 else None


def diff_cell(p: Paired | None) -> str:
    """``+0.012 ± 0.008 (2/3 better)``, or ``-`` when fewer than two seeds match."""
    if p is None:
        return "-"
    return f"{num(p.mean, '+.3f')} ± {num(p.se)} ({p.wins}/{p.n} higher)"


def verdict_cell(p: Paired | None) -> str:
    return "-" if p is None else VERDICT[verdict(p)]


def provenance(command: str, results: Path, done: int, planned: int, run_command: str) -> str:
    """The line above a rendered block: which command rendered it from which file, and how
    many of the default plan's runs the file holds."""
    part = "" if done >= planned else f" (partial: {done} of {planned} runs done)"
    return (
        f"Rendered by `{command}` from `{shown(results)}`, which holds {done} of the {planned} "
        f"runs of `{run_command}`{part}; do not edit by hand."
    )


# -- running -----------------------------------------------------------------------------------


def add_run_args(ap: argparse.ArgumentParser, results: Path, runs_dir: Path) -> None:
    """The options every results-file benchmark shares."""
    ap.add_argument("--results", type=Path, default=results, help="the results file")
    ap.add_argument("--runs-dir", type=Path, default=runs_dir, help="where runs train")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per run")
    ap.add_argument("--max-runs", type=int, default=None, help="run at most this many")
    ap.add_argument("--keep-runs", action="store_true", help="keep run directories")
    ap.add_argument("--dry-run", action="store_true", help="print the runs to do, run nothing")
    ap.add_argument("--render-only", action="store_true", help="only render the doc tables")
    ap.add_argument("--no-render", action="store_true", help="do not render after running")


def todo(runs: Sequence[Run], results: Path, max_runs: int | None = None) -> list[Run]:
    """The planned runs without a row in ``results`` (each key once), at most ``max_runs``."""
    left = pending(pending(runs, []), read_results(results))
    print(f"{len(runs)} runs planned, {len(runs) - len(left)} done, {len(left)} to do", flush=True)
    return left if max_runs is None else left[:max_runs]
