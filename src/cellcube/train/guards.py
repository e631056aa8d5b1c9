"""Numerical guards: stop training cleanly on NaN/inf instead of training on garbage.

:class:`FiniteGuard` is a Lightning callback added by :func:`cellcube.train.fit.fit`. It checks
every training batch's embeddings before the step and the loss before backward; the first
non-finite value raises :class:`~cellcube.errors.TrainingError` naming the model, epoch, global
step and batch; the model's training outputs are checked too (a forward hook), so a diverged model
is caught before its NaN predictions reach the loss. No optimiser step is taken with a non-finite
loss, and the run's ``last.ckpt`` (written at the end of every epoch, after validation, so it only
ever holds weights that trained without a NaN) is the last good state: the message names it, and
``cellcube train --resume`` (for instance with a smaller ``--set train.lr=...``) continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cellcube.errors import TrainingError

__all__ = ["FiniteGuard"]


class FiniteGuard(Callback):
    """Stop training with a TrainingError at the first NaN/inf embedding or loss."""

    def __init__(self, name: str, last: Path) -> None:
        self.name = name
        self.last = last  # the checkpoint a --resume would continue from
        self._batch_idx = 0
        self._trainer: L.Trainer | None = None
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    def _fail(self, trainer: L.Trainer, problem: str) -> TrainingError:
        where = (
            f"training {self.name}: {problem} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step} (batch {self._batch_idx} of the epoch)"
        )
        if self.last.is_file():
            hint = (
                f"last good checkpoint: {self.last} (end of the previous epoch); continue with "
                "--resume, e.g. with a smaller train.lr"
            )
        else:
            hint = "no good checkpoint yet (first epoch); lower train.lr and start again"
        return TrainingError(f"{where}; {hint}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Watch the wrapped model's outputs while it trains."""
        self._trainer = trainer
        model = getattr(pl_module, "model", pl_module)
        self._hook = model.register_forward_hook(self._check_output)

    def _check_output(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        watching = module.training and self._trainer is not None
        if watching and isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
            raise self._fail(self._trainer, "NaN/inf in the model's predictions")

    def _unhook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop watching the model."""
        self._unhook()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Stop watching the model (training failed)."""
        self._unhook()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Reject a batch whose question or answer embeddings are not finite."""
        self._batch_idx = batch_idx
        for i, tensor in enumerate(batch[:2]):
            if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
                raise self._fail(trainer, f"NaN/inf in the {('question', 'answer')[i]} embeddings")

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        """Reject a non-finite loss before it reaches the gradients and the optimiser."""
        if not bool(torch.isfinite(loss).all()):
            raise self._fail(trainer, f"non-finite loss ({float(loss.detach().float().sum())})")
