"""Training curves: validation MRR and training loss per epoch, from Lightning's CSV logs."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellcube.io import atomic_open


def epoch_series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(epoch + 1, value) points of one metric from Lightning's metrics.csv rows.

    The log is appended to, not written atomically, so after a kill -9 and ``--resume`` it can
    hold a torn last line and repeated epochs: unparsable rows are skipped and the last value of
    an epoch wins.
    """
    points: dict[int, float] = {}
    for row in rows:
        try:
            points[int(row["epoch"]) + 1] = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(points.items())


def plot_training(logs: Mapping[str, Path], out: Path) -> None:
    """Validation MRR and training loss per epoch of each model -> a PNG at ``out``.

    ``logs`` maps a model name to its Lightning ``metrics.csv``; a model without one (e.g. not
    trained in this run) is left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mrr, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, path in logs.items():
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.DictReader(fh))
        val, loss = epoch_series(rows, "val_mrr"), epoch_series(rows, "train_loss")
        if val:
            ax_mrr.plot(*zip(*val, strict=True), label=name)
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=name)
    ax_mrr.set(xlabel="epoch", ylabel="validation MRR", title="Validation MRR")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Training loss")
    for ax in (ax_mrr, ax_loss):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
