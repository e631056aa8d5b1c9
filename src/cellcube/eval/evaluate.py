"""Evaluation on the held-out test split: every model's retrieval metrics, in one report.

A *predictor* maps (n, D) question embeddings to (n, D) predicted answer embeddings: a trained
model, or a baseline (identity, mean answer, ridge). :func:`evaluate` ranks the test split's
distinct answers by cosine to each predictor's output (:mod:`cellcube.eval.metrics`) and returns
the report that ``report.json`` holds; :func:`teacher_metrics` adds, for a multi-teacher run, the
cube's retrieval in every teacher's space and the ensembles. The test split is read here and
nowhere else; validation MRR is reported beside it because designs are chosen on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from cellcube import __version__
from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.embed.teachers import load_teacher
from cellcube.eval.metrics import retrieval_metrics, score_metrics
from cellcube.objectives.multiteacher import ensemble_scores, module_key
from cellcube.objectives.objective import split_teacher_weights

Predictor = Callable[[torch.Tensor], torch.Tensor]


def evaluate(
    cfg: Config,
    emb: Mapping[str, EmbeddedSplit],
    predictors: Mapping[str, tuple[Predictor, int]],
    heads: Mapping[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """The test report of ``predictors`` (name -> (predictor, trainable parameter count)).

    Per model: MRR, Recall@k for ``cfg.eval.ks``, mean cosine to the true answer, validation
    MRR and the parameter count; with the split sizes, the teacher's identity and the cellcube
    version. A multi-teacher run (``teachers.others``) also gets ``teachers``
    (:func:`teacher_metrics`, through the cube's projection ``heads``).
    """
    test, val = emb["test"], emb["val"]
    models: dict[str, Any] = {}
    with torch.inference_mode():
        for name, (predict, params) in predictors.items():
            metrics = retrieval_metrics(
                predict(test.q), test.answer_ids, test.candidates, cfg.eval.ks
            )
            val_mrr = retrieval_metrics(predict(val.q), val.answer_ids, val.candidates)["mrr"]
            models[name] = {**metrics, "val_mrr": val_mrr, "params": params}
    report = {
        "n_test": len(test),
        "n_candidates": test.candidates.shape[0],
        "n_train": len(emb["train"]),
        "n_val": len(val),
        "teacher": load_teacher(cfg.teacher).identity,
        "cellcube_version": __version__,
        "models": models,
    }
    if cfg.teachers.others:
        cube, _ = predictors["cube"]
        report["teachers"] = teacher_metrics(cfg, emb, cube, heads or {})
    return report


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
            "teacher": score_metrics(ensemble_scores(own, cands), test.answer_ids, ks),
            "cube": score_metrics(ensemble_scores(preds, cands), test.answer_ids, ks),
        }
    return {"weighting": cfg.teachers.weighting, "per_teacher": per_teacher, "ensemble": ensemble}
