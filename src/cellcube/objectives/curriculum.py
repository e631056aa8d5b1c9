"""Curriculum: a measured difficulty per training pair and an easy-to-hard schedule.

**Difficulty** is the teacher's own view of a pair: the rank of the true answer among all
distinct TRAIN answers when ranked by cosine with the question's teacher embedding (what the
``identity`` baseline would retrieve), ties broken by ``1 - cos(question, answer)``, turned into a
quantile in [0, 1] over the training pairs (0 = easiest). It is written into
``RUN_DIR/pairs.jsonl`` as ``difficulty`` for the train pairs.

**Schedule** (competence-based, Platanios et al., "Competence-based Curriculum Learning for
Neural Machine Translation", NAACL 2019): at epoch ``t`` the competence is
``c(t) = min(1, sqrt(c0^2 + (1 - c0^2) * t / T))`` with ``c0 = loss.curriculum_start`` and
``T = loss.curriculum_epochs``; a pair's loss weight is 1 if its difficulty <= c(t), else 0.
Training starts on the easiest ``c0`` fraction and takes in every pair after ``T`` epochs. Pairs
left out still serve as in-batch negatives for the others, since only their own loss terms are
weighted 0 (see :func:`cellcube.objectives.losses._common.weighted_mean`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cellcube.eval.similarity import true_ranks


def teacher_difficulty(
    q: torch.Tensor, a: torch.Tensor, answer_ids: torch.Tensor, bank: torch.Tensor
) -> torch.Tensor:
    """(n,) difficulty quantiles in [0, 1] of pairs ``(q, a)``; answers are ``bank[answer_ids]``.

    A single pair gets difficulty 0.
    """
    rank = true_ranks(q, bank, answer_ids)[0].double()  # 1 = the teacher retrieves it first
    score = rank + (1 - F.cosine_similarity(q, a, dim=-1).double()) / 3  # tie-break in [0, 2/3]
    order = torch.argsort(torch.argsort(score, stable=True), stable=True).float()
    return order / max(len(order) - 1, 1)


def competence(epoch: int, epochs: int, start: float) -> float:
    """The difficulty quantile reached at ``epoch``: ``start`` at 0, 1 from ``epochs`` on."""
    return min(1.0, math.sqrt(start**2 + (1 - start**2) * epoch / epochs))


def curriculum_weights(
    difficulty: torch.Tensor, epoch: int, epochs: int, start: float
) -> torch.Tensor:
    """Per-pair loss weights (1 = in, 0 = not yet) at ``epoch``."""
    return (difficulty <= competence(epoch, epochs, start)).float()
