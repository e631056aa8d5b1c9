"""The report as plain-text tables (what ``cellcube train`` and ``cellcube evaluate`` print)."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report, best test MRR first; then the paired differences
    (cube minus each other model) and, for a multi-teacher run, a table of each teacher's space
    and the ensembles.

    The first line gives the test split's size; then one row per model: MRR and Recall@1 with
    their 95% bootstrap intervals (when the report has them), Recall@k for the report's other
    k, mean cosine to the true answer, the parameters that affect the output, learning rate,
    weight decay and training seconds ("-" where they do not apply).
    """
    ks = sorted(
        int(k.split("@")[1])
        for k in next(iter(report["models"].values()))
        if k.startswith("recall@")
    )
    metric_head = ["MRR", *[f"R@{k}" for k in ks], "cosine"]

    def cells(m: dict[str, Any]) -> list[str]:
        return [f"{m['mrr']:.3f}", *[f"{m[f'recall@{k}']:.3f}" for k in ks], f"{m['cosine']:.3f}"]

    def main_cells(m: dict[str, Any]) -> list[str]:
        ci = m.get("ci", {})
        out = [_with_interval(m["mrr"], ci.get("mrr"))]
        out += [_with_interval(m[f"recall@{k}"], ci.get(f"recall@{k}")) for k in ks]
        out += [f"{m['cosine']:.3f}", f"{m['params']:,}"]
        return out + [_number(m.get(key), fmt) for key, fmt in _TRAINING_COLUMNS]

    rows = sorted(report["models"].items(), key=lambda kv: -kv[1]["mrr"])
    ci_note = "; [95% bootstrap CI]" if any("ci" in m for _, m in rows) else ""
    lines = [f"test: {report['n_test']} pairs, {report['n_candidates']} candidate answers{ci_note}"]
    lines += table(
        ["model", *metric_head, "params", "lr", "wd", "train s"],
        [[name, *main_cells(m)] for name, m in rows],
    )
    lines += _paired_lines(report)
    teachers = report.get("teachers")
    if teachers:
        body = []
        for label, t in teachers["per_teacher"].items():
            w = f"{t['mean_weight']:.3f}"
            body.append([f"{label} ({t['dim']}-d)", "teacher", *cells(t["teacher"]), w])
            body.append(["", "cube", *cells(t["cube"]), ""])
        for who in ("teacher", "cube"):
            body.append(
                ["ensemble" if who == "teacher" else "", who, *cells(teachers["ensemble"][who]), ""]
            )
        lines.append(f"teachers ({teachers['weighting']} weights), each in its own space:")
        lines += table(["space", "model", *metric_head, "weight"], body)
    return "\n".join(lines)


_TRAINING_COLUMNS = (("lr", "{:g}"), ("weight_decay", "{:g}"), ("train_seconds", "{:.1f}"))
"""The report keys of the table's last columns and their formats."""


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _with_interval(value: float, ci: list[float] | None) -> str:
    """``0.529 [0.478, 0.580]``, or the value alone without an interval."""
    return f"{value:.3f}" if ci is None else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _paired_lines(report: dict[str, Any]) -> list[str]:
    """The "cube minus X" block: each paired MRR difference, its 95% interval and SE."""
    paired = report.get("paired")
    if not paired:
        return []
    boot = report.get("bootstrap", {})
    body = [
        [
            f"cube - {name}",
            f"{d['mean']:+.3f}",
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]",
            f"{d['se']:.3f}",
        ]
        for name, d in paired.items()
    ]
    head = (
        f"test MRR, cube minus each model (paired bootstrap over test pairs, "
        f"{boot.get('resamples', '?')} resamples):"
    )
    return [head, *table(["difference", "mean", "95% CI", "SE"], body)]


def table(head: list[str], body: list[list[str]]) -> list[str]:
    """Rows of a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *body]
    ]
