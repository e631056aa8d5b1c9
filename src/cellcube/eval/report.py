"""The report as plain-text tables (what ``cellcube train`` and ``cellcube evaluate`` print)."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report, best test MRR first (and, for a multi-teacher run, a
    second table of each teacher's space and the ensembles).

    The first line gives the test split's size; then one row per model: MRR, Recall@k for the
    report's k, mean cosine to the true answer, and the trainable parameter count.
    """
    ks = sorted(
        int(k.split("@")[1])
        for k in next(iter(report["models"].values()))
        if k.startswith("recall@")
    )
    metric_head = ["MRR", *[f"R@{k}" for k in ks], "cosine"]

    def cells(m: dict[str, float]) -> list[str]:
        return [f"{m['mrr']:.3f}", *[f"{m[f'recall@{k}']:.3f}" for k in ks], f"{m['cosine']:.3f}"]

    rows = sorted(report["models"].items(), key=lambda kv: -kv[1]["mrr"])
    lines = [f"test: {report['n_test']} pairs, {report['n_candidates']} candidate answers"]
    lines += table(
        ["model", *metric_head, "params"],
        [[name, *cells(m), f"{m['params']:,}"] for name, m in rows],
    )
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
