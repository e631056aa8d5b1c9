"""Robustness: every model's retrieval when the test questions are corrupted.

The models are trained as configured (on clean questions unless ``train.augment``); only the
test questions change. For each corruption of ``eval.robustness`` (:mod:`cellcube.data.corrupt`:
``typo:0.05``, ``drop:0.2``, ...) the test questions are corrupted with the run's seed, embedded
by the run's teacher through its cache (:func:`cellcube.embed.encode.embed`), and every model of
the report is rebuilt for that test split by the same function that builds the report's models
(:func:`cellcube.run.pipeline.model_entries`), so a model with its own encoder (the fine-tuned
teacher) embeds the corrupted texts itself. The candidate answers stay the clean ones.

The report (``report.json`` key ``robustness``) gives per corruption the share of test questions
it changed (``changed``), each model's MRR and Recall@1 and its ``drop`` (clean MRR minus
corrupted MRR), and with ``eval.bootstrap`` > 0 each model's 95% bootstrap interval of MRR and
``paired_drop``: each other model's drop minus the cube's drop on the same bootstrap draws of
the test pairs (mean, 95% interval, standard error). A positive ``paired_drop`` means the cube
loses less than that model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from cellcube.config import Config
from cellcube.data.corrupt import Corruption, corrupt_texts, parse_corruptions
from cellcube.embed.encode import embed
from cellcube.embed.splits import EmbeddedSplit
from cellcube.eval.bootstrap import bootstrap_means, difference_summary, percentile_interval
from cellcube.eval.evaluate import REFERENCE, ModelEntry
from cellcube.eval.similarity import true_ranks

__all__ = ["corrupted_splits", "reciprocal_ranks", "robustness"]

Entries = Callable[[Mapping[str, EmbeddedSplit]], Mapping[str, ModelEntry]]


def corrupted_splits(
    cfg: Config, emb: Mapping[str, EmbeddedSplit], corruptions: list[Corruption]
) -> dict[str, dict[str, EmbeddedSplit]]:
    """For each corruption (by its spec), the run's splits with the test questions corrupted
    (seed ``cfg.seed``) and re-embedded by the primary teacher; answers, candidates and the
    other splits unchanged. All corrupted texts are embedded in one call (one teacher load)."""
    test = emb["test"]
    noisy = [corrupt_texts(test.questions, c, cfg.seed) for c in corruptions]
    flat = [t for texts in noisy for t in texts]
    vectors = torch.from_numpy(embed(flat, cfg.teacher, cfg.cache))
    n, out = len(test), {}
    for i, (corruption, texts) in enumerate(zip(corruptions, noisy, strict=True)):
        split = replace(test, q=vectors[i * n : (i + 1) * n], questions=texts, views={})
        out[str(corruption)] = {**emb, "test": split}
    return out


def reciprocal_ranks(
    entries: Mapping[str, ModelEntry], emb: Mapping[str, EmbeddedSplit]
) -> dict[str, torch.Tensor]:
    """Each model's reciprocal rank of the true answer, per test pair (float64)."""
    test = emb["test"]
    out = {}
    with torch.inference_mode():
        for name, entry in entries.items():
            o = entry.outputs(emb)
            rank, _ = true_ranks(o.test_pred, o.test_candidates, test.answer_ids)
            out[name] = 1.0 / rank.double()
    return out


def robustness(
    cfg: Config,
    emb: Mapping[str, EmbeddedSplit],
    clean: Mapping[str, ModelEntry],
    entries_for: Entries,
) -> dict[str, Any]:
    """The report's ``robustness`` section (module docstring).

    Args:
        cfg: the run's config (``eval.robustness``, ``eval.bootstrap``, ``seed``, teacher, cache).
        emb: the run's embedded splits.
        clean: the report's models on the clean splits.
        entries_for: builds the report's models for given splits (the run's
            :func:`~cellcube.run.pipeline.model_entries`).
    """
    corruptions = parse_corruptions(cfg.eval.robustness)
    test = emb["test"]
    rr_clean = reciprocal_ranks(clean, emb)
    section: dict[str, Any] = {"seed": cfg.seed, "corruptions": {}}
    for spec, splits in corrupted_splits(cfg, emb, corruptions).items():
        rr = reciprocal_ranks(entries_for(splits), splits)
        changed = [a != b for a, b in zip(test.questions, splits["test"].questions, strict=True)]
        models = {
            name: {
                "mrr": values.mean().item(),
                "recall@1": (values == 1).double().mean().item(),
                "drop": (rr_clean[name] - values).mean().item(),
            }
            for name, values in rr.items()
        }
        level: dict[str, Any] = {"changed": sum(changed) / max(len(changed), 1), "models": models}
        if cfg.eval.bootstrap and len(test):
            level["paired_drop"] = _bootstrap(models, rr_clean, rr, cfg.eval.bootstrap, cfg.seed)
        section["corruptions"][spec] = level
    return section


def _bootstrap(
    models: dict[str, Any],
    rr_clean: Mapping[str, torch.Tensor],
    rr: Mapping[str, torch.Tensor],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Add each model's MRR ``ci`` to ``models``; each other model's drop minus the cube's drop
    (empty without a cube), all on the same draws of the test pairs."""
    names = list(rr)
    means = bootstrap_means(
        torch.stack([rr[n] for n in names] + [rr_clean[n] - rr[n] for n in names]),
        resamples,
        seed,
    )
    corrupted, drops = means[: len(names)], dict(zip(names, means[len(names) :], strict=True))
    for name, row in zip(names, corrupted, strict=True):
        models[name]["ci"] = percentile_interval(row)
    if REFERENCE not in drops:
        return {}
    return {
        name: difference_summary(drop, drops[REFERENCE])
        for name, drop in drops.items()
        if name != REFERENCE
    }
