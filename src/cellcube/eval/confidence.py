"""Anytime inference and self-estimated confidence, measured on the test split.

A cellular automaton can be read after any number of steps, and with stochastic updates
(``cube.fire_rate < 1``) every pass differs; the spread over passes is the confidence signal
that neural-CA work reports (Med-NCA: the variance over stochastic runs flags its own errors).
A plain adapter has a confidence signal too: how far its top answer stands above the runner-up.
This module measures both the same way, so the property claimed for the cube is set against the
adapters' own version of it:

* ``steps`` (``eval.steps_curve``): the cube's test and validation MRR when it runs T steps, for
  each T asked, including T beyond what it was trained at;
* ``passes`` (``eval.passes`` = K): the cube's prediction as the mean of K stochastic passes
  (seeded), its MRR and Recall@1, and how well each confidence signal predicts a top-1 hit:
  ``spread`` (minus the mean cosine distance of the passes to their mean) and ``margin`` (the
  mean prediction's top-1 minus top-2 cosine);
* ``margin``: every model's own top-1 minus top-2 cosine margin as its confidence.

Each confidence signal is scored by :func:`selective`: the AUROC of the signal for "top-1 is
right" (0.5: no better than chance) and Recall@1 on the more confident half of the questions
against Recall@1 on all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.eval.metrics import rank_metrics, retrieval_metrics
from cellcube.eval.similarity import topk_cosine, true_ranks, unit

__all__ = [
    "auroc",
    "confidence_report",
    "margins",
    "selective",
    "spread",
    "steps_curve",
    "stochastic_passes",
]


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """The area under the ROC curve of ``scores`` for the boolean labels ``positive``: the
    probability that a random positive scores above a random negative (ties count half; the
    Mann-Whitney statistic with average ranks). None when either class is empty."""
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    ranks = (last - (counts.double() - 1) / 2)[inverse]  # 1-based average ranks
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def selective(confidence: torch.Tensor, hit: torch.Tensor) -> dict[str, float | None]:
    """How well ``confidence`` (higher: surer) predicts ``hit`` (top-1 right): ``auroc``,
    ``r1_confident_half`` (Recall@1 on the ``n // 2`` most confident questions; ties by index)
    and ``r1_all``."""
    order = torch.sort(confidence, descending=True, stable=True).indices
    half = order[: max(1, hit.numel() // 2)]
    return {
        "auroc": auroc(confidence, hit),
        "r1_confident_half": hit[half].float().mean().item(),
        "r1_all": hit.float().mean().item(),
    }


def margins(pred: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Each prediction's top-1 minus top-2 cosine over the candidates ``(n,)``."""
    top, _ = topk_cosine(pred, candidates, 2)
    return top[:, 0] - top[:, 1]


def stochastic_passes(model: nn.Module, q: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``(K, n, D)``: K forward passes of ``model`` with its cells firing at random (its
    training-mode update, without gradients), seeded by ``seed`` (the global RNG is restored)."""
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            model.train()
            return torch.stack([model(q) for _ in range(k)])
    finally:
        model.train(was_training)


def spread(passes: torch.Tensor) -> torch.Tensor:
    """``(n,)``: the mean cosine distance of K passes ``(K, n, D)`` to their mean."""
    centre = unit(passes.mean(0))
    return (1 - (unit(passes) * centre).sum(-1)).mean(0)


def steps_curve(
    model: nn.Module, emb: Mapping[str, EmbeddedSplit], steps: Sequence[int], ks: Sequence[int]
) -> list[dict[str, Any]]:
    """The test metrics and validation MRR of ``model(q, T)`` for each T in ``steps``."""
    test, val = emb["test"], emb["val"]
    out = []
    for t in steps:
        m = retrieval_metrics(model(test.q, t), test.answer_ids, test.candidates, ks)
        val_mrr = retrieval_metrics(model(val.q, t), val.answer_ids, val.candidates)["mrr"]
        out.append({"steps": t, **m, "val_mrr": val_mrr})
    return out


def _hits(pred: torch.Tensor, candidates: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return true_ranks(pred, candidates, ids)[0] == 1


def confidence_report(
    cfg: Config,
    emb: Mapping[str, EmbeddedSplit],
    test_outputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    cube: nn.Module | None,
) -> dict[str, Any]:
    """The report's ``confidence`` section (module docstring).

    Args:
        cfg: the run's config (``eval.steps_curve``, ``eval.passes``, ``eval.ks``, ``seed``).
        emb: the embedded splits (test and val).
        test_outputs: per model, its test predictions and the candidates they are ranked
            against (its own embedding space).
        cube: the trained cube (``forward(q, steps)``), or None where it is not a module.
    """
    test, e = emb["test"], cfg.eval
    report: dict[str, Any] = {
        "margin": {
            name: selective(margins(pred, cands), _hits(pred, cands, test.answer_ids))
            for name, (pred, cands) in test_outputs.items()
        }
    }
    if cube is None:
        return report
    if e.steps_curve:
        report["steps"] = steps_curve(cube, emb, e.steps_curve, e.ks)
    if e.passes:
        passes = stochastic_passes(cube, test.q, e.passes, cfg.seed)
        mean = passes.mean(0)
        rank, true = true_ranks(mean, test.candidates, test.answer_ids)
        hit = rank == 1
        report["passes"] = {
            "k": e.passes,
            "steps": cube.steps,
            **rank_metrics(rank, true, e.ks),
            "spread": selective(-spread(passes), hit),
            "margin": selective(margins(mean, test.candidates), hit),
        }
    return report
