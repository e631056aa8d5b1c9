"""The LightningModule: an embedding->embedding model, trained on an objective.

:class:`MapperModule` only trains: forward, the training step (predict, gather the global batch
under torchrun, hand it to the :class:`~cellcube.objectives.objective.Objective`), the
validation step (retrieval among the validation answers) and the optimiser. What the loss is
lives in the objective; where the batches come from in
:class:`~cellcube.train.datamodule.PairsDataModule`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.errors import CheckpointError
from cellcube.eval.metrics import retrieval_metrics
from cellcube.objectives.multiteacher import module_key
from cellcube.objectives.objective import Objective
from cellcube.train import distributed
from cellcube.train.checkpoints import restore_rng_state, rng_state

__all__ = ["MapperModule"]


class MapperModule(L.LightningModule):
    """Trains ``model`` on ``objective``; validates by retrieval among the validation answers.

    Args:
        model: maps (B, D) question embeddings to (B, D) predicted answers.
        objective: the loss of a batch (its heads are trained with the model, no weight decay).
        cfg: the run's config (``train`` for the optimiser, ``eval.ks``; saved in checkpoints).
        name: the model's report name (one of :data:`~cellcube.config.TRAINED_MODELS`): its
            optimiser settings, and messages.
        val: the validation split: only its distinct answers (per teacher) are kept, as the
            candidates each validation batch is ranked against.
    """

    def __init__(
        self, model: nn.Module, objective: Objective, cfg: Config, name: str, val: EmbeddedSplit
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.cfg = cfg
        self.name = name
        self.val_candidates = {label: val.views[label].candidates for label in objective.labels[1:]}
        self.val_candidates[objective.labels[0]] = val.candidates

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.model(q)

    def on_train_epoch_start(self) -> None:
        """Lightning's hook: :meth:`refresh_negatives`."""
        self.refresh_negatives()

    def refresh_negatives(self) -> None:
        """Re-mine the hard negatives when due, by the model's current predictions (or answers).

        The one piece of work at the start of a training epoch; a public hook, so instrumentation
        (the fault-injection tests) can wrap it.
        """
        self.objective.refresh_negatives(self.model, self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        q, a, ids, rows = batch
        # under torchrun: the GLOBAL batch, predictions with their gradient (train.distributed)
        pred, a, ids, rows = distributed.gather_batch(self, self.model(q), a, ids, rows)
        total, terms, stats = self.objective(pred, a, ids, rows, self.current_epoch, batch_idx)
        for key, value in stats.items():
            self.log(f"train_{key}", value, on_step=False, on_epoch=True)
        if not total.requires_grad:  # e.g. a plain-reshaper cube with 0 steps: nothing to learn
            return distributed.skipped_step(self)  # None (a zero loss under DDP)
        self.log("train_loss", total, prog_bar=True, on_step=False, on_epoch=True)
        for key, value in terms.items():
            self.log(f"train_{key}", value, on_step=False, on_epoch=True)
        return total

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        q, ids = batch
        pred = self.model(q)
        labels = self.objective.labels
        m = retrieval_metrics(pred, ids, self.val_candidates[labels[0]], self.cfg.eval.ks)
        for key, value in m.items():
            self.log(f"val_{key}", value, prog_bar=key == "mrr", batch_size=q.shape[0])
        for label in labels[1:]:  # each other teacher's retrieval, through its head
            head = self.objective.heads[module_key(label)]
            mt = retrieval_metrics(head(pred), ids, self.val_candidates[label])
            self.log(f"val_mrr_{label}", mt["mrr"], batch_size=q.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW at the model's own learning rate and weight decay
        (:meth:`~cellcube.config.TrainConfig.optimiser`: ``train.models.<name>``, else
        ``train.lr`` / ``train.weight_decay``); the heads without decay."""
        lr, weight_decay = self.cfg.train.optimiser(self.name)
        heads = self.objective.heads
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        if len(heads):  # heads translate between spaces: no decay towards zero
            groups.append({"params": list(heads.parameters()), "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add cellcube's config and the torch/numpy/python RNG states to Lightning's checkpoint.

        Lightning stores model, objective, optimiser, loops and callbacks; the batch order is a
        function of (seed, epoch) (:class:`~cellcube.train.datamodule.EpochSeededSampler`); the
        RNG states make the random parts of training (``cube.fire_rate < 1``) continue after
        ``--resume`` exactly as without the interruption.
        """
        checkpoint["cellcube"] = {
            "config": self.cfg.to_dict(),
            "model": self.name,
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the RNG states saved by :meth:`on_save_checkpoint` (when present)."""
        rng = checkpoint.get("cellcube", {}).get("rng")
        if rng is not None:
            try:
                restore_rng_state(rng)
            except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as exc:
                raise CheckpointError(
                    f"checkpoint of {self.name}: unreadable RNG state ({exc.__class__.__name__})"
                ) from None
