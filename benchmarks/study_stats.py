"""The study's statistics: result rows to per-model means with 95% intervals, paired differences
(cube minus each baseline) and the one verdict sentence per corpus.

Pure arithmetic on the rows of :mod:`benchmarks.study_results`; :mod:`benchmarks.study_render`
lays the numbers out as tables and plots.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

LATTICE_RIVALS = ("no_lattice", "linear")
# two-sided 95% quantiles of Student's t, by degrees of freedom (beyond 30: the next lower row)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
        25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
        120: 1.980}  # fmt: skip

Unit = tuple  # (seed, fold): one split of one corpus


# -- statistics --------------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table; 1.96 beyond)."""
    if df >= 1000:
        return 1.96
    return T975[max(k for k in T975 if k <= df)]


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of ``values`` (at least two)."""
    mean = statistics.fmean(values)
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


@dataclass(frozen=True)
class Paired:
    """Cube minus one baseline, over the seeds of a corpus."""

    mean: float
    se: float | None
    n: int
    wins: int
    se_from: str  # "seeds" (SE over seeds) or "bootstrap" (one run's paired bootstrap)


def paired(diffs: Sequence[float], bootstrap_se: Sequence[float | None] = ()) -> Paired:
    """Mean of per-seed differences with its SE over seeds: ``stdev / sqrt(n)``; with one seed,
    the run's paired-bootstrap SE (None when the report has none)."""
    n = len(diffs)
    wins = sum(d > 0 for d in diffs)
    if n >= 2:
        return Paired(
            statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(n), n, wins, "seeds"
        )
    se = bootstrap_se[0] if bootstrap_se else None
    return Paired(diffs[0], se, 1, wins, "bootstrap")


def verdict(p: Paired) -> str:
    """``wins`` (difference > 2 SE), ``loses`` (< -2 SE), ``none``, or ``unknown`` (no SE)."""
    if p.se is None:
        return "unknown"
    if p.mean > 2 * p.se:
        return "wins"
    if p.mean < -2 * p.se:
        return "loses"
    return "none"


PHRASE = {
    "wins": "beats `{r}`",
    "loses": "is beaten by `{r}`",
    "none": "shows no measurable difference from `{r}`",
    "unknown": "cannot be compared with `{r}` (no SE)",
}


def sentence(corpus: str, pairs: dict[str, Paired]) -> str | None:
    """One plain sentence: does the lattice add anything over ``no_lattice`` and ``linear``?

    Each paired difference (cube minus rival) is given as mean ± SE; it is a win or a loss only
    beyond 2 SE (:func:`verdict`), else "no measurable difference"."""
    rivals = [r for r in LATTICE_RIVALS if r in pairs]
    if not rivals:
        return None
    parts = [
        f"{PHRASE[verdict(pairs[r])].format(r=r)} "
        f"({num(pairs[r].mean, '+.3f')} ± {num(pairs[r].se)} MRR)"
        for r in rivals
    ]
    verdicts = {r: verdict(pairs[r]) for r in rivals}
    if all(verdicts.get(r) == "wins" for r in LATTICE_RIVALS):
        conclusion = "the lattice earns its keep here"
    elif verdicts.get("no_lattice") == "wins":
        conclusion = "the lattice adds to the bottleneck but does not beat a plain linear adapter"
    else:
        conclusion = "the lattice adds nothing measurable here"
    n = pairs[rivals[0]].n
    seeds = (
        f"{n} seeds; cube minus baseline, mean ± SE over seeds"
        if n > 1
        else "1 seed; cube minus baseline ± the paired-bootstrap SE over test pairs"
    )
    return f"On {corpus} ({seeds}) the cube {' and '.join(parts)}: {conclusion}."


def num(x: float | None, fmt: str = ".3f") -> str:
    """``x`` in a fixed format; ``-`` when missing; no negative zero."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    text = format(x, fmt)
    if text.startswith("-") and not any(ch in "123456789" for ch in text):  # rounds to -0
        text = text.replace("-", "+" if "+" in fmt else "", 1)
    return text


# -- grouping ----------------------------------------------------------------------------------


def unit(row: dict[str, Any]) -> Unit:
    fold = row.get("fold")
    return (row["seed"], -1 if fold is None else fold)


def by_unit(rows: Iterable[dict[str, Any]]) -> dict[Unit, list[dict[str, Any]]]:
    """Rows grouped by (seed, fold), each group sorted by variant name."""
    out: dict[Unit, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[unit(row)].append(row)
    return {
        u: sorted(rs, key=lambda r: (r["variant"], r["overrides_hash"]))
        for u, rs in sorted(out.items())
    }


def model_row(rows: Sequence[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The first of a unit's rows whose report has ``model``."""
    return next((r for r in rows if model in r["report"].get("models", {})), None)


def metric(row: dict[str, Any], model: str, key: str) -> Any:
    return row["report"]["models"][model].get(key)


@dataclass(frozen=True)
class Summary:
    """One model on one corpus, over its units."""

    n: int
    mrr: float
    lo: float | None
    hi: float | None
    r1: float | None
    params: float | None
    seconds: float | None


def mean_of(values: Iterable[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def summarise(units: dict[Unit, list[dict[str, Any]]], model: str) -> Summary | None:
    found = [r for r in (model_row(rs, model) for rs in units.values()) if r is not None]
    if not found:
        return None
    mrrs = [metric(r, model, "mrr") for r in found]
    if len(found) >= 2:
        lo, hi = t_interval(mrrs)
    else:
        ci = (metric(found[0], model, "ci") or {}).get("mrr")
        lo, hi = (ci[0], ci[1]) if ci else (None, None)
    return Summary(
        len(found),
        statistics.fmean(mrrs),
        lo,
        hi,
        mean_of(metric(r, model, "recall@1") for r in found),
        mean_of(metric(r, model, "params") for r in found),
        mean_of(metric(r, model, "train_seconds") for r in found),
    )


def paired_for(units: dict[Unit, list[dict[str, Any]]], rival: str) -> Paired | None:
    """Cube minus ``rival`` per unit, each from one run holding both models."""
    diffs, ses = [], []
    for rows in units.values():
        row = next((r for r in rows if {"cube", rival} <= set(r["report"].get("models", {}))), None)
        if row is None:
            continue
        diffs.append(metric(row, "cube", "mrr") - metric(row, rival, "mrr"))
        ses.append((row["report"].get("paired", {}).get(rival) or {}).get("se"))
    return paired(diffs, ses) if diffs else None


def grouped(rows: Iterable[dict[str, Any]], keep) -> dict[str, dict[Unit, list[dict[str, Any]]]]:
    """Rows passing ``keep``, by corpus (sorted), then by unit."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if keep(row):
            out[row["corpus"]].append(row)
    return {c: by_unit(rs) for c, rs in sorted(out.items())}


def matched(rows: Iterable[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, list]]:
    """The corpora on which every variant in ``names`` that ran at all ran: per corpus, per
    variant, its full-size rows on the seeds (units) every variant ran there (matched)."""
    by: dict[str, dict[str, dict[Unit, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("train_size") == "all" and r.get("variant") in names:
            by[r["corpus"]][r["variant"]].setdefault(unit(r), r)
    names_run = {v for variants in by.values() for v in variants}
    out: dict[str, dict[str, list]] = {}
    for corpus in sorted(by):
        variants = by[corpus]
        common = set.intersection(*(set(us) for us in variants.values()))
        if set(variants) == names_run and common:
            out[corpus] = {v: [us[u] for u in sorted(common)] for v, us in variants.items()}
    return out


def one_se_choice(
    groups: dict[str, dict[str, list]], means: dict[str, float], cost: dict[str, tuple]
) -> tuple[str, dict[str, Paired]]:
    """The one-standard-error rule (Breiman et al. 1984; Hastie et al., *The Elements of
    Statistical Learning*, 7.10): the cheapest variant whose validation MRR is within one SE of
    the best's.

    ``means``: each variant's validation MRR (:func:`variant_means`); ``cost``: a sort key per
    variant, cheapest first. Each variant's difference from the best is paired by corpus and
    unit over the :func:`matched` ``groups`` (the cube's ``val_mrr``), its SE over those pairs.
    Returns the chosen variant and every variant's paired difference from the best.
    """
    best = min(means, key=lambda v: (-means[v], v))
    gaps = {}
    for v in means:
        diffs = [
            metric(a, "cube", "val_mrr") - metric(b, "cube", "val_mrr")
            for variants in groups.values()
            for a, b in zip(variants[v], variants[best], strict=True)
        ]
        gaps[v] = paired(diffs)
    near = [v for v, g in gaps.items() if g.mean >= -(g.se or 0.0)]
    return min(near, key=lambda v: (cost[v], v)), gaps


def variant_means(groups: dict[str, dict[str, list]], variant: str, model: str, key: str):
    """Mean over corpora of the mean over matched units; also each corpus's mean."""
    per = {}
    for corpus, variants in groups.items():
        vals = [
            metric(r, model, key)
            for r in variants.get(variant, [])
            if model in r["report"].get("models", {})
        ]
        if vals and None not in vals:
            per[corpus] = statistics.fmean(vals)
    return (statistics.fmean(per.values()) if per else None), per
