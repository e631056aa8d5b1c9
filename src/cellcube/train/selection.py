"""Which epoch's weights a model keeps: the criterion of early stopping and ``best.ckpt``.

Validation sets are small (116 pairs on chatterbot), so validation MRR jumps by about ±0.02 from
epoch to epoch, and the single best epoch is partly the luckiest one: its validation score
overstates the model, and the choice among nearby epochs is noise. :class:`SmoothedValidation`
logs ``val_select``, the mean validation MRR over the last ``train.select_window`` epochs (fewer at
the start of training); the best checkpoint and early stopping follow it. The kept weights are
those of the last epoch of the best window: a model that has scored well for ``window`` epochs in
a row, not one that scored well once. ``select_window: 1`` is the plain best epoch.

The history is part of the callback's state, so ``--resume`` continues the same criterion.
"""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["MONITOR", "SmoothedValidation"]

MONITOR = "val_select"
"""The logged metric the best checkpoint and early stopping follow."""


class SmoothedValidation(L.Callback):
    """Logs :data:`MONITOR`: the mean of the last ``window`` epochs' ``val_mrr``."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.history: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.history.append(float(trainer.callback_metrics["val_mrr"]))
        recent = self.history[-self.window :]
        pl_module.log(MONITOR, sum(recent) / len(recent))

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [float(v) for v in state_dict["history"]]
