"""What the study page's issue-16 sections share: a plan's rows grouped by corpus, variant and
seed, and paired differences between models of one run or between runs.

A variant's rows are those of its name AND its exact overrides (a run of the same variant name
with extra ``--set`` keys is another experiment). Differences are paired within a run (cube minus
a baseline trained on the same split) or between two variants' runs on the same corpus, seed and
train size; their SE is over seeds (with one seed: the run's paired bootstrap where the report has
one, else none). Used by :mod:`benchmarks.study_variants` and :mod:`benchmarks.study_budget`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.study_plans import CHITCHAT_EXTRA, PLAN_DEFAULTS, Variant
from benchmarks.study_results import overrides_hash
from benchmarks.study_stats import Paired, Unit, num, paired, unit

__all__ = [
    "COLOURS",
    "RIVALS",
    "Groups",
    "across",
    "cube_value",
    "diff_cell",
    "mean_of_known",
    "model_of",
    "plan_groups",
    "within",
]

RIVALS = ("no_lattice", "linear", "mlp")
COLOURS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

Groups = dict[str, dict[str, dict[Unit, dict[str, Any]]]]  # corpus label -> variant -> unit -> row


def plan_groups(rows: list[dict[str, Any]], plan: str, variants: Sequence[Variant]) -> Groups:
    """The rows of ``plan`` per corpus label (chitchat at its train size gets ``chitchat
    (4000)``), per variant, per unit: each variant's row (its name and exact overrides, no
    folds) on the plan's own corpora and seeds at the full train size, and on
    :data:`CHITCHAT_EXTRA`; so a variant shared with another plan (``default``) counts the same
    seeds as the others."""
    wanted = {(v.name, overrides_hash(list(v.overrides))) for v in variants}
    corpora, seeds = PLAN_DEFAULTS[plan]
    chitchat, chitchat_seed, chitchat_size = CHITCHAT_EXTRA
    cells = {(c, s, "all") for c in corpora for s in seeds} | {
        (chitchat, chitchat_seed, chitchat_size)
    }
    out: Groups = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        cell = (r["corpus"], r["seed"], r.get("train_size"))
        if (r.get("variant"), r.get("overrides_hash")) not in wanted or cell not in cells:
            continue
        if r.get("fold") is not None:
            continue
        label = cell[0] if cell[2] == "all" else f"{cell[0]} ({cell[2]})"
        out[label][r["variant"]].setdefault(unit(r), r)
    order = [*corpora, f"{chitchat} ({chitchat_size})"]
    return {c: dict(out[c]) for c in order if c in out}


def model_of(row: dict[str, Any], model: str) -> dict[str, Any] | None:
    return row["report"].get("models", {}).get(model)


def mean_of_known(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def diff_cell(p: Paired | None) -> str:
    if p is None:
        return "-"
    return f"{num(p.mean, '+.3f')} ± {num(p.se)} ({p.wins}/{p.n})"


def within(units: dict[Unit, dict[str, Any]], a: str, b: str) -> Paired | None:
    """``a`` minus ``b`` within each run (SE over seeds, or the run's bootstrap for the cube)."""
    diffs, ses = [], []
    for row in units.values():
        ma, mb = model_of(row, a), model_of(row, b)
        if ma is None or mb is None:
            continue
        diffs.append(ma["mrr"] - mb["mrr"])
        paired_se = (row["report"].get("paired", {}).get(b) or {}).get("se")
        ses.append(paired_se if a == "cube" else None)
    return paired(diffs, ses) if diffs else None


def across(
    units: dict[Unit, dict[str, Any]], other: dict[Unit, dict[str, Any]], value: Callable
) -> Paired | None:
    """``value(row)`` of ``units`` minus that of ``other``, matched by unit (SE over seeds)."""
    diffs = [
        value(units[u]) - value(other[u])
        for u in sorted(set(units) & set(other))
        if value(units[u]) is not None and value(other[u]) is not None
    ]
    return paired(diffs) if diffs else None


def cube_value(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda row: (model_of(row, "cube") or {}).get(key)
