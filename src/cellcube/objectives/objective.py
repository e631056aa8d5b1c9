"""The training objective of a run: what one batch of predictions costs.

:class:`Objective` puts together everything the loss of a batch depends on besides the model:

* the loss terms of ``cfg.loss`` (:func:`cellcube.objectives.losses.build_loss`);
* mined and random negatives from the TRAIN answers
  (:class:`~cellcube.objectives.negatives.NegativeMiner`; ``loss.hard_negatives`` /
  ``loss.random_negatives``), re-mined by :meth:`Objective.refresh_negatives`;
* curriculum weights (:mod:`cellcube.objectives.curriculum`; ``loss.curriculum``);
* a loss at several steps of one forward pass (``cube.steps_range``): :meth:`Objective.over_steps`
  averages the loss of every prediction :func:`supervised_predictions` returns;
* with other teachers' ``views`` on the splits: one projection head per teacher (ridge
  initialised, trained with the model) and per-pair teacher weights
  (:mod:`cellcube.objectives.multiteacher`; ``teachers.weighting``).

Batches are addressed by their rows in the train split, so the same rows give the same loss
whether they come from one process or are gathered from several. The miner's state (the mined
ids) and the heads are submodules, so Lightning checkpoints them with the model.
"""

from __future__ import annotations

import torch
from torch import nn

from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.objectives.curriculum import curriculum_weights, teacher_difficulty
from cellcube.objectives.losses import build_loss
from cellcube.objectives.multiteacher import distillation_loss, module_key, pair_weights, ridge_head
from cellcube.objectives.negatives import NegativeMiner

__all__ = ["Objective", "split_teacher_weights", "supervised_predictions"]

Logs = dict[str, torch.Tensor]


def split_teacher_weights(split: EmbeddedSplit, cfg: Config) -> torch.Tensor:
    """(n, K) per-pair teacher weights of a split (primary first), as configured in
    ``teachers`` (see :mod:`cellcube.objectives.multiteacher`)."""
    tc = cfg.teachers
    spaces = [(split.q, split.candidates), *((v.q, v.candidates) for v in split.views.values())]
    return pair_weights(
        spaces, split.answer_ids, tc.weighting, tc.temperature, tc.weights, cfg.loss.temperature
    )


def supervised_predictions(model: nn.Module, q: torch.Tensor) -> list[torch.Tensor]:
    """The predictions of the questions ``q`` that training gives a loss: the model's
    ``training_outputs`` where it has them (the cube under ``cube.steps_range``: one per
    supervised step), else ``[model(q)]``."""
    outputs = getattr(model, "training_outputs", None)
    return outputs(q) if callable(outputs) else [model(q)]


class Objective(nn.Module):
    """The configured loss of a batch of predictions, given by the batch's train-split rows.

    Args:
        cfg: the run's config (``loss``, ``teacher``, ``teachers``, ``seed``).
        train: the embedded train split; the objective keeps only what the loss reads: the answer
            bank and the mining queries, the curriculum difficulty, the other teachers' answers
            and the teacher weights.

    Example::

        objective = Objective(cfg, train)
        objective.refresh_negatives(model, epoch)  # at the start of every epoch
        total, terms, stats = objective(model(q), a, answer_ids, rows, epoch, batch_idx)
    """

    def __init__(self, cfg: Config, train: EmbeddedSplit) -> None:
        super().__init__()
        lc = self.loss_cfg = cfg.loss
        self.loss = build_loss(lc)
        self.negatives = (
            NegativeMiner(
                train.candidates,
                train.answer_ids,
                hard=lc.hard_negatives,
                random=lc.random_negatives,
                refresh_every=lc.refresh_every,
                mine_by=lc.mine_by,
                seed=cfg.seed,
            )
            if lc.n_negatives
            else None
        )
        # what the miner ranks the bank by: the model's predictions of the questions, or answers
        self.mining_inputs = train.q if lc.mine_by == "prediction" else train.a
        self.difficulty = (
            teacher_difficulty(train.q, train.a, train.answer_ids, train.candidates)
            if lc.curriculum
            else None
        )
        self.labels = [cfg.teacher.label, *train.views]  # the primary teacher first
        self.heads = nn.ModuleDict()
        self.view_answers = [view.a for view in train.views.values()]
        self.teacher_weights: torch.Tensor | None = None
        if train.views:
            src = torch.cat([train.q, train.a])
            for label, view in train.views.items():
                self.heads[module_key(label)] = ridge_head(src, torch.cat([view.q, view.a]))
            self.teacher_weights = split_teacher_weights(train, cfg)

    @torch.no_grad()
    def refresh_negatives(self, model: nn.Module, epoch: int) -> None:
        """Re-mine hard negatives when due at the start of ``epoch``: by ``model``'s current
        predictions of the train questions (``loss.mine_by: prediction``) or by the answers."""
        miner = self.negatives
        if miner is None or not miner.due(epoch):
            return
        queries = self.mining_inputs.to(miner.bank.device)
        if miner.mine_by == "prediction":
            was_training = model.training
            model.eval()  # the expected update: no randomness, so no global RNG draws
            queries = model(queries)
            model.train(was_training)
        miner.mine(queries, epoch)

    def forward(
        self,
        pred: torch.Tensor,
        a: torch.Tensor,
        answer_ids: torch.Tensor,
        rows: torch.Tensor,
        epoch: int,
        batch_idx: int,
    ) -> tuple[torch.Tensor, Logs, Logs]:
        """The loss of one (global) batch.

        Args:
            pred: (B, D) predictions; a: (B, D) true answers; answer_ids: (B,) their ids.
            rows: (B,) the pairs' indices in the train split.
            epoch, batch_idx: seed the random negatives and set the curriculum's competence.

        Returns:
            ``(total, terms, stats)``: the loss to minimise, its terms (per loss, or per teacher
            with several teachers) and what shaped it (the fraction of rows the curriculum lets
            in, each teacher's mean weight), both to be logged.
        """
        negatives = negative_ids = weights = None
        stats: Logs = {}
        if self.negatives is not None:
            negative_ids = self.negatives.sample(rows, epoch, batch_idx)
            negatives = self.negatives.bank[negative_ids]  # unit-norm train answers
        if self.difficulty is not None:
            weights = curriculum_weights(
                self.difficulty[rows.cpu()],
                epoch,
                self.loss_cfg.curriculum_epochs,
                self.loss_cfg.curriculum_start,
            ).to(pred.device)
            stats["curriculum_fraction"] = weights.mean()
        if self.teacher_weights is None:
            total, terms = self.loss(pred, a, answer_ids, negatives, negative_ids, weights)
            return total, terms, stats
        return self._distillation(
            pred, a, answer_ids, rows, negatives, negative_ids, weights, stats
        )

    def over_steps(
        self,
        preds: list[torch.Tensor],
        a: torch.Tensor,
        answer_ids: torch.Tensor,
        rows: torch.Tensor,
        epoch: int,
        batch_idx: int,
    ) -> tuple[torch.Tensor, Logs, Logs]:
        """The mean of :meth:`forward`'s loss over several predictions of the same batch (one
        per supervised step of an anytime cube), with the terms and stats of the last one; for a
        single prediction exactly :meth:`forward`."""
        results = [self(p, a, answer_ids, rows, epoch, batch_idx) for p in preds]
        if len(results) == 1:
            return results[0]
        total = torch.stack([r[0] for r in results]).mean()
        return total, results[-1][1], results[-1][2]

    def _distillation(
        self,
        pred: torch.Tensor,
        a: torch.Tensor,
        answer_ids: torch.Tensor,
        rows: torch.Tensor,
        negatives: torch.Tensor | None,
        negative_ids: torch.Tensor | None,
        curriculum: torch.Tensor | None,
        stats: Logs,
    ) -> tuple[torch.Tensor, Logs, Logs]:
        """The multi-teacher loss of a batch, with each teacher's loss share and mean weight."""
        assert self.teacher_weights is not None
        cpu_rows = rows.cpu()
        tw = self.teacher_weights[cpu_rows].to(pred.device)
        targets = [a, *(answers[cpu_rows].to(pred.device) for answers in self.view_answers)]
        heads = [self.heads[module_key(label)] for label in self.labels[1:]]
        total, shares = distillation_loss(
            self.loss, pred, targets, heads, answer_ids, tw, curriculum, negatives, negative_ids
        )
        terms = {}
        for t, label in enumerate(self.labels):
            terms[f"loss_{label}"] = shares[t]
            stats[f"weight_{label}"] = tw[:, t].mean()
        return total, terms, stats
