"""Multi-teacher distillation: projection heads, per-pair teacher weights, ensemble retrieval.

The cube works in the PRIMARY teacher's space (``teacher``, dimension D). Every other teacher
``t`` of ``teachers.others`` (dimension D_t, any size) has its own embeddings of the same texts and
gets a **projection head** ``h_t = Linear(D -> D_t)``, trained with the cube. Nothing is truncated
or zero-padded: teacher ``t``'s loss is computed in its own space, on ``h_t(prediction)`` against
its own answer embeddings. A head starts as the ridge map from the primary teacher's to teacher
``t``'s embeddings of the training texts, so a fresh head already translates between the spaces.

For a batch with predictions ``p_i``, the objective is::

    L = sum_t sum_i c_i * w[i, t] * loss_t(i) / sum_i c_i

``loss_0`` is the configured loss (``loss`` section, :func:`cellcube.objectives.losses.build_loss`)
of ``p_i``
against the primary answer (with mined negatives, if configured); ``loss_t`` the same loss of
``h_t(p_i)`` against teacher ``t``'s answer (in-batch negatives only); ``c_i`` the curriculum
weight (1 without curriculum); ``w[i, :]`` the **teacher weights** of pair ``i``, summing to 1:

* ``uniform``: ``1/K`` for each of the K teachers;
* ``fixed``: ``teachers.weights`` (the primary first), normalised;
* ``adaptive`` (default), in the spirit of confidence-aware multi-teacher distillation (CA-MKD;
  Zhang, Chen & Wang, ICASSP 2022): a teacher is trusted on a pair in proportion to how well it
  answers that pair itself. Its confidence is the log-probability it gives the true answer among
  all distinct training answers, ``log softmax_j(cos(q_t, a_t,j) / loss.temperature)[true]``
  (the teacher's own InfoNCE, i.e. its identity retrieval of that pair), and
  ``w[i, :] = softmax_t(confidence_t(i) / teachers.temperature)``. The weights depend only on the
  frozen teachers, so they are computed once.

With a single teacher every weight is 1 and the objective is exactly the single-teacher loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cellcube.eval.similarity import CHUNK, block_ranks, block_rows, cosine_blocks, unit
from cellcube.objectives.losses import CombinedLoss


@dataclass
class TeacherView:
    """A split as seen by one non-primary teacher: the same rows, in that teacher's space.

    ``q``/``a``: (n, D_t) question and answer embeddings; ``candidates``: (m, D_t) the split's
    distinct answers, in the same order as the primary
    :class:`~cellcube.embed.splits.EmbeddedSplit`.
    """

    q: torch.Tensor
    a: torch.Tensor
    candidates: torch.Tensor

    @property
    def dim(self) -> int:
        return self.q.shape[1]


def module_key(label: str) -> str:
    """A teacher label as an ``nn.ModuleDict`` key (which may not contain dots)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def standardize(views: dict[str, TeacherView], train: str = "train") -> dict[str, TeacherView]:
    """Z-score every feature with the ``train`` view's statistics (its questions and answers),
    then L2-normalise. For anisotropic teachers (mean-pooled LLM states: any two texts have cosine
    about 0.98) this turns a near-constant embedding into one whose cosines discriminate."""
    ref = torch.cat([views[train].q, views[train].a])
    mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)

    def z(x: torch.Tensor) -> torch.Tensor:
        return unit((x - mean) / std)

    return {k: TeacherView(z(v.q), z(v.a), z(v.candidates)) for k, v in views.items()}


def teacher_confidence(
    q: torch.Tensor, answer_ids: torch.Tensor, candidates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(n,) log-probability a teacher gives each pair's true answer among ``candidates``
    (computed in blocks of questions: memory ``O(block * len(candidates))``)."""
    out = []
    for start, sims in cosine_blocks(q, candidates):
        ids = answer_ids[start : start + sims.shape[0], None]
        out.append(torch.log_softmax(sims / temperature, dim=1).gather(1, ids)[:, 0])
    return torch.cat(out) if out else q.new_zeros(0)


def teacher_weights(
    confidence: torch.Tensor,
    weighting: str,
    temperature: float = 1.0,
    fixed: Sequence[float] | None = None,
) -> torch.Tensor:
    """(n, K) per-pair teacher weights (rows sum to 1) from ``confidence`` (n, K); see the module
    docstring for ``adaptive`` / ``uniform`` / ``fixed``."""
    n, k = confidence.shape
    if weighting == "adaptive":
        return torch.softmax(confidence / temperature, dim=1)
    if weighting == "uniform":
        return confidence.new_full((n, k), 1.0 / k)
    if weighting == "fixed":
        if fixed is None or len(fixed) != k:
            raise ValueError(f"fixed weighting needs {k} weights")
        w = torch.tensor(list(fixed), dtype=confidence.dtype)
        return (w / w.sum()).expand(n, k).clone()
    raise ValueError(f"unknown teacher weighting {weighting!r}")


def pair_weights(
    spaces: Sequence[tuple[torch.Tensor, torch.Tensor]],
    answer_ids: torch.Tensor,
    weighting: str,
    temperature: float,
    fixed: Sequence[float] | None,
    confidence_temperature: float,
) -> torch.Tensor:
    """(n, K) teacher weights of a split's pairs; ``spaces`` holds each teacher's ``(questions,
    distinct answers)`` embeddings, the primary first."""
    conf = [teacher_confidence(q, answer_ids, c, confidence_temperature) for q, c in spaces]
    return teacher_weights(torch.stack(conf, dim=1), weighting, temperature, fixed)


def ridge_head(src: torch.Tensor, dst: torch.Tensor, alpha: float = 1.0) -> nn.Linear:
    """``Linear(D -> D_t)`` initialised as the ridge regression of ``dst`` on ``src``."""
    x = torch.cat([src, src.new_ones(src.shape[0], 1)], dim=1).double()
    reg = alpha * torch.eye(x.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0  # the bias is not shrunk
    coef = torch.linalg.solve(x.T @ x + reg, x.T @ dst.double())  # (D + 1, D_t)
    head = nn.Linear(src.shape[1], dst.shape[1])
    with torch.no_grad():
        head.weight.copy_(coef[:-1].T.float())
        head.bias.copy_(coef[-1].float())
    return head


def distillation_loss(
    loss: CombinedLoss,
    pred: torch.Tensor,
    targets: Sequence[torch.Tensor],
    heads: Sequence[nn.Module],
    answer_ids: torch.Tensor,
    weights: torch.Tensor,
    curriculum: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The multi-teacher objective of the module docstring for one batch.

    Args:
        loss: the configured loss (each term a curriculum-weighted mean over rows).
        pred: (B, D) predictions in the primary space.
        targets: answer embeddings per teacher, the primary first: (B, D), (B, D_1), ...
        heads: one projection head per non-primary teacher, in ``targets[1:]`` order.
        answer_ids: (B,) answer ids (equal ids are never each other's negatives).
        weights: (B, K) teacher weights (rows sum to 1).
        curriculum: optional (B,) curriculum weights.
        negatives, negative_ids: mined negatives for the primary term only.

    Returns:
        The total, and each teacher's term (its share of the total).
    """
    c = weights.new_ones(weights.shape[0]) if curriculum is None else curriculum
    norm = c.sum().clamp_min(1e-12)
    projected = [pred, *(head(pred) for head in heads)]
    terms = []
    for t, (p, target) in enumerate(zip(projected, targets, strict=True)):
        w = c * weights[:, t]
        negs = (negatives, negative_ids) if t == 0 else (None, None)
        value, _ = loss(p, target, answer_ids, *negs, w)
        terms.append(value * (w.sum() / norm))  # undo the term's own normalisation by sum(w)
    return torch.stack(terms).sum(), terms


def ensemble_ranks(
    preds: Sequence[torch.Tensor],
    candidates: Sequence[torch.Tensor],
    answer_ids: torch.Tensor,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prediction's rank of its true answer (1 + candidates scoring strictly higher) and its
    score, the score being the mean over teachers of the cosine, every teacher scoring in its own
    space: ``(ranks, scores)``, each ``(n,)``; in blocks of rows, never the dense ``(n, m)``
    matrix."""
    spaces = [(unit(p), unit(c)) for p, c in zip(preds, candidates, strict=True)]
    ranks, trues = [], []
    step = block_rows(candidates[0].shape[0], chunk)
    for start in range(0, preds[0].shape[0], step):
        total = sum(p[start : start + step] @ c.T for p, c in spaces) / len(spaces)
        rank, true = block_ranks(total, answer_ids[start : start + step])
        ranks.append(rank)
        trues.append(true)
    if not ranks:
        return torch.zeros(0, dtype=torch.long), preds[0].new_zeros(0)
    return torch.cat(ranks), torch.cat(trues)
