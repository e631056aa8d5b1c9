"""The files one trained model leaves behind (``RUN/models/<name>/`` in a run directory).

Training writes them (:func:`cellcube.train.fit.fit`), evaluation and answering read them through
:class:`cellcube.run.rundir.RunDir`; no other module spells these paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelDir"]


@dataclass(frozen=True)
class ModelDir:
    """The files of one trained model of a run (``RUN/models/<name>/``)."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        """The checkpoint of the best validation MRR: what evaluation and answering load."""
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        """The checkpoint of the last finished epoch: what ``--resume`` continues from."""
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics_csv(self) -> Path:
        """Lightning's CSV log: one row per logged epoch."""
        return self.logs / "metrics.csv"

    @property
    def done(self) -> Path:
        """The marker of a model whose training finished."""
        return self.root / "DONE"
