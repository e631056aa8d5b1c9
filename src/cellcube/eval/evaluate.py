"""Evaluation on the held-out test split: every model's retrieval metrics, in one report.

A *predictor* maps (n, D) question embeddings to (n, D) predicted answer embeddings: a trained
model, or a baseline (identity, mean answer, ridge). A model that works in an embedding space of
its own (e.g. a fine-tuned teacher) brings its predictions and its embeddings of the same
candidate answers instead (:class:`Precomputed`). :func:`evaluate` ranks the test split's
distinct answers by cosine to each model's output (:mod:`cellcube.eval.metrics`), adds 95%
bootstrap intervals and the cube's paired differences with every other model
(:mod:`cellcube.eval.bootstrap`), and returns the report that ``report.json`` holds;
:func:`teacher_metrics` adds, for a multi-teacher run, the cube's retrieval in every teacher's
space and the ensembles. The test split is read here and nowhere else; validation MRR is
reported beside it because designs are chosen on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from cellcube import __version__
from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.embed.teachers import load_teacher
from cellcube.eval.bootstrap import LEVEL, difference_summary, intervals, per_pair_values
from cellcube.eval.confidence import confidence_report
from cellcube.eval.metrics import rank_metrics, retrieval_metrics
from cellcube.eval.similarity import true_ranks
from cellcube.objectives.multiteacher import ensemble_ranks, module_key
from cellcube.objectives.objective import split_teacher_weights

Predictor = Callable[[torch.Tensor], torch.Tensor]

REFERENCE = "cube"
"""The model every other one is compared with in the report's ``paired`` section."""


class Precomputed(NamedTuple):
    """A model's outputs in its own embedding space: its predictions for the test and validation
    questions, and its embeddings of the split's distinct candidate answers (rows in the order of
    the split's ``candidates``, so the split's ``answer_ids`` index them)."""

    test_pred: torch.Tensor
    test_candidates: torch.Tensor
    val_pred: torch.Tensor
    val_candidates: torch.Tensor


@dataclass
class ModelEntry:
    """One model of the report and what the report records about it.

    Attributes:
        predict: a :data:`Predictor` of the primary teacher's question embeddings, or the
            model's :class:`Precomputed` outputs.
        params: the parameters that affect its output
            (:func:`cellcube.models.params.effective_params`).
        lr: its learning rate (None: not trained by gradient descent).
        weight_decay: its weight decay (None: not trained by gradient descent).
        train_seconds: wall time of its training (0 for a model that is not trained; None when
            unknown, e.g. a run from before it was recorded).
    """

    predict: Predictor | Precomputed
    params: int
    lr: float | None = None
    weight_decay: float | None = None
    train_seconds: float | None = 0.0

    def outputs(self, emb: Mapping[str, EmbeddedSplit]) -> Precomputed:
        """Its predictions and candidates on test and validation."""
        if isinstance(self.predict, Precomputed):
            return self.predict
        test, val = emb["test"], emb["val"]
        return Precomputed(
            self.predict(test.q), test.candidates, self.predict(val.q), val.candidates
        )


def evaluate(
    cfg: Config,
    emb: Mapping[str, EmbeddedSplit],
    models: Mapping[str, ModelEntry],
    heads: Mapping[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """The test report of ``models`` (name -> :class:`ModelEntry`).

    Per model: MRR, Recall@k for ``cfg.eval.ks``, mean cosine to the true answer, validation
    MRR, the parameter count, ``lr``, ``weight_decay`` and ``train_seconds``; with
    ``eval.bootstrap`` > 0 also ``ci`` (95% percentile bootstrap intervals of MRR and Recall@1
    over test pairs), and a ``paired`` section: for every other model, the bootstrap mean, 95%
    interval and standard error of (cube MRR - its MRR), all models on the same draws. With the
    split sizes, the teacher's identity and the cellcube version. With ``eval.passes`` or
    ``eval.steps_curve`` also ``confidence`` (:mod:`cellcube.eval.confidence`: the cube's MRR
    against its steps, its K stochastic passes, every model's confidence). A multi-teacher run
    (``teachers.others``) also gets ``teachers`` (:func:`teacher_metrics`, through the cube's
    projection ``heads``).
    """
    test, val = emb["test"], emb["val"]
    report_models: dict[str, Any] = {}
    values: dict[str, dict[str, torch.Tensor]] = {}
    test_outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.inference_mode():
        for name, entry in models.items():
            out = entry.outputs(emb)
            rank, true = true_ranks(out.test_pred, out.test_candidates, test.answer_ids)
            metrics = rank_metrics(rank, true, cfg.eval.ks)
            val_mrr = retrieval_metrics(out.val_pred, val.answer_ids, out.val_candidates)["mrr"]
            report_models[name] = {
                **metrics,
                "val_mrr": val_mrr,
                "params": entry.params,
                "lr": entry.lr,
                "weight_decay": entry.weight_decay,
                "train_seconds": entry.train_seconds,
            }
            values[name] = per_pair_values(rank)
            test_outputs[name] = (out.test_pred, out.test_candidates)
    report: dict[str, Any] = {
        "n_test": len(test),
        "n_candidates": test.candidates.shape[0],
        "n_train": len(emb["train"]),
        "n_val": len(val),
        "teacher": load_teacher(cfg.teacher).identity,
        "cellcube_version": __version__,
        "models": report_models,
    }
    if cfg.eval.bootstrap and len(test):
        report.update(bootstrap_sections(values, report_models, cfg.eval.bootstrap, cfg.seed))
    if cfg.eval.passes or cfg.eval.steps_curve:
        cube = models[REFERENCE].predict if REFERENCE in models else None
        with torch.inference_mode():
            report["confidence"] = confidence_report(
                cfg, emb, test_outputs, cube if isinstance(cube, nn.Module) else None
            )
    if cfg.teachers.others:
        cube = models[REFERENCE].predict
        if isinstance(cube, Precomputed):
            raise TypeError("the cube of a multi-teacher run must be a predictor")
        report["teachers"] = teacher_metrics(cfg, emb, cube, heads or {})
    return report


def bootstrap_sections(
    values: Mapping[str, Mapping[str, torch.Tensor]],
    report_models: dict[str, Any],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Add each model's ``ci`` to ``report_models``; return the report's ``bootstrap`` (its
    settings) and ``paired`` (cube minus each other model, when the cube is there) sections."""
    ci, mrr_means = intervals(values, resamples, seed)
    for name, model_ci in ci.items():
        report_models[name]["ci"] = model_ci
    paired = {}
    if REFERENCE in mrr_means:
        paired = {
            name: difference_summary(mrr_means[REFERENCE], means)
            for name, means in mrr_means.items()
            if name != REFERENCE
        }
    settings = {"resamples": resamples, "seed": seed, "level": LEVEL, "over": "test pairs"}
    return {"bootstrap": settings, "paired": paired}


def teacher_metrics(
    cfg: Config,
    emb: Mapping[str, EmbeddedSplit],
    cube: Predictor,
    heads: Mapping[str, nn.Module],
) -> dict[str, Any]:
    """Test metrics per teacher and of the ensembles, for a multi-teacher run.

    For each teacher (the primary first): its own identity retrieval in its space (``teacher``:
    its question embedding ranking its answer embeddings), the cube's retrieval in that space
    (``cube``: the prediction, through the teacher's projection head), and its mean weight over
    the training pairs. ``ensemble`` ranks answers by the mean cosine over all teachers' spaces,
    for the teachers themselves and for the cube.
    """
    test, ks = emb["test"], cfg.eval.ks
    labels = [cfg.teacher.label, *test.views]
    weights = split_teacher_weights(emb["train"], cfg)
    with torch.inference_mode():
        pred = cube(test.q)
        preds = [pred, *(heads[module_key(label)](pred) for label in labels[1:])]
        own = [test.q, *(v.q for v in test.views.values())]
        cands = [test.candidates, *(v.candidates for v in test.views.values())]
        per_teacher = {
            label: {
                "dim": cands[t].shape[1],
                "teacher": retrieval_metrics(own[t], test.answer_ids, cands[t], ks),
                "cube": retrieval_metrics(preds[t], test.answer_ids, cands[t], ks),
                "mean_weight": weights[:, t].mean().item(),
            }
            for t, label in enumerate(labels)
        }
        ensemble = {
            "teacher": rank_metrics(*ensemble_ranks(own, cands, test.answer_ids), ks),
            "cube": rank_metrics(*ensemble_ranks(preds, cands, test.answer_ids), ks),
        }
    return {"weighting": cfg.teachers.weighting, "per_teacher": per_teacher, "ensemble": ensemble}
