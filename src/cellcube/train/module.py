"""The LightningModule: an embedding->embedding model, trained on an objective.

:class:`MapperModule` only trains: forward, the training step (predict, gather the global batch
under torchrun, hand it to the :class:`~cellcube.objectives.objective.Objective`), the
validation step (retrieval among the validation answers) and the optimiser. What the loss is
lives in the objective; where the batches come from in
:class:`~cellcube.train.datamodule.PairsDataModule`.

The training losses and stats are logged once per epoch, as their batch-weighted means
(:class:`EpochMeans`): the numbers Lightning's ``self.log(..., on_epoch=True)`` gives, without
its per-call bookkeeping at every step (a large share of a small model's step time).
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
from cellcube.objectives.objective import Objective, supervised_predictions
from cellcube.train import distributed
from cellcube.train.checkpoints import restore_rng_state, rng_state

__all__ = ["EpochMeans", "MapperModule"]


class EpochMeans:
    """Batch-weighted means of scalars over an epoch, summed the way Lightning sums them.

    Lightning's ``self.log(key, value, on_epoch=True)`` keeps ``sum += value * batch_size`` and
    ``rows += batch_size`` per key (from 0, in float32 or wider) and logs ``sum / rows`` at the
    end of the epoch. :meth:`add` does the same arithmetic in the same order, so :meth:`means`
    are the very numbers Lightning would log, at a fraction of the cost per step.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.rows: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor, batch_size: int) -> None:
        """Add one batch's ``value`` (a scalar tensor) of ``batch_size`` rows."""
        value = value.detach().squeeze()
        if value.dtype not in (torch.float32, torch.float64):
            value = value.to(torch.get_default_dtype())
        zero = torch.zeros((), dtype=torch.get_default_dtype(), device=value.device)
        self.sums[key] = self.sums.get(key, zero) + value * batch_size
        self.rows[key] = self.rows.get(key, torch.zeros((), dtype=torch.long)) + batch_size

    def means(self) -> dict[str, torch.Tensor]:
        """Every key's mean so far (in the order the keys first came), then start afresh."""
        out = {key: total / self.rows[key].to(total.device) for key, total in self.sums.items()}
        self.sums, self.rows = {}, {}
        return out


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
        self.epoch_means = EpochMeans()

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.model(q)

    def on_train_epoch_start(self) -> None:
        """Lightning's hook: :meth:`refresh_negatives`."""
        self.epoch_means = EpochMeans()
        self.refresh_negatives()

    def on_train_epoch_end(self) -> None:
        """Lightning's hook: log the epoch's mean training losses and stats (:class:`EpochMeans`;
        ``batch_size=1`` makes Lightning's own mean of the one value that value itself)."""
        for key, value in self.epoch_means.means().items():
            self.log(key, value, prog_bar=key == "train_loss", on_epoch=True, batch_size=1)

    def refresh_negatives(self) -> None:
        """Re-mine the hard negatives when due, by the model's current predictions (or answers).

        The one piece of work at the start of a training epoch; a public hook, so instrumentation
        (the fault-injection tests) can wrap it.
        """
        self.objective.refresh_negatives(self.model, self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        q, a, ids, rows = batch
        # under torchrun: the GLOBAL batch, predictions with their gradient (train.distributed);
        # one prediction per supervised step (one, except for an anytime cube)
        batches = [
            distributed.gather_batch(self, pred, a, ids, rows)
            for pred in supervised_predictions(self.model, q)
        ]
        _, a, ids, rows = batches[0]
        preds = [b[0] for b in batches]
        total, terms, stats = self.objective.over_steps(
            preds, a, ids, rows, self.current_epoch, batch_idx
        )
        size = q.shape[0]  # the batch size Lightning's own logging infers from `batch`
        for key, value in stats.items():
            self.epoch_means.add(f"train_{key}", value, size)
        if not total.requires_grad:  # e.g. a plain-reshaper cube with 0 steps: nothing to learn
            return distributed.skipped_step(self)  # None (a zero loss under DDP)
        self.epoch_means.add("train_loss", total, size)
        for key, value in terms.items():
            self.epoch_means.add(f"train_{key}", value, size)
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
