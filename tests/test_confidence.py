"""Anytime inference and confidence (cellcube.eval.confidence): AUROC, selective accuracy,
margins, stochastic passes, and the report section."""

from __future__ import annotations

import pytest
import torch

from cellcube.config import load_config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.eval.confidence import (
    auroc,
    confidence_report,
    margins,
    selective,
    spread,
    stochastic_passes,
)
from cellcube.eval.metrics import retrieval_metrics
from cellcube.models.baselines import build_model

DIM = 384
TINY = ["cube.lattice=[2,2,3]", "cube.channels=4", "cube.hidden=8", "cube.steps=3"]


def test_auroc_by_hand_with_ties():
    # positives score 3, 2, 2; negatives 2, 1: pairs (pos > neg) = 2 + 1.5 + 1.5 = 5 of 6
    scores = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0])
    hit = torch.tensor([True, True, True, False, False])
    assert auroc(scores, hit) == pytest.approx(5 / 6)
    assert auroc(-scores, hit) == pytest.approx(1 / 6)
    assert auroc(torch.ones(4), torch.tensor([True, False, True, False])) == 0.5
    assert auroc(scores, torch.ones(5, dtype=torch.bool)) is None


def test_selective_accuracy_on_the_confident_half():
    conf = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    hit = torch.tensor([True, False, True, True, False, False])
    s = selective(conf, hit)
    assert s["r1_all"] == pytest.approx(0.5)
    assert s["r1_confident_half"] == pytest.approx(2 / 3)  # 0.9, 0.8, 0.7 -> hit, hit, miss
    assert s["auroc"] == pytest.approx(7 / 9)


def test_margins_are_top1_minus_top2_cosine():
    cands = torch.eye(3)
    pred = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    torch.testing.assert_close(margins(pred, cands), torch.tensor([1.0, 0.0, (3 - 1) / 10**0.5]))


def test_spread_is_zero_for_identical_passes_and_grows_with_disagreement():
    p = torch.randn(1, 4, 8)
    assert torch.allclose(spread(p.repeat(3, 1, 1)), torch.zeros(4), atol=1e-6)
    noisy = p.repeat(3, 1, 1) + torch.randn(3, 4, 8) * torch.tensor([0.0, 0.1, 1.0, 3.0])[:, None]
    s = spread(noisy)
    assert s[0] < 1e-6 < s[1] < s[2] < s[3]


def test_stochastic_passes_differ_are_seeded_and_leave_the_model_as_it_was():
    cfg = load_config(None, [*TINY, "cube.fire_rate=0.5"])
    cube = build_model("cube", DIM, cfg)
    with torch.no_grad():
        for p in cube.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cube.eval()
    q = torch.randn(5, DIM)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = stochastic_passes(cube, q, 4, seed=7)
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched
    b = stochastic_passes(cube, q, 4, seed=7)
    assert torch.equal(a, b) and a.shape == (4, 5, DIM)
    assert (a[0] - a[1]).abs().max() > 1e-3  # the cells fire at random
    assert not cube.training


def _split(g: torch.Generator, n: int, m: int) -> EmbeddedSplit:
    cands = torch.randn(m, DIM, generator=g)
    ids = torch.arange(n) % m
    q = cands[ids] + 0.8 * torch.randn(n, DIM, generator=g)
    return EmbeddedSplit(q, cands[ids], ids, cands, [""] * n, [""] * m)


def test_confidence_report_sections():
    cfg = load_config(
        None, [*TINY, "cube.fire_rate=0.5", "eval.passes=3", "eval.steps_curve=[0,3,6]"]
    )
    g = torch.Generator().manual_seed(0)
    emb = {"test": _split(g, 40, 20), "val": _split(g, 20, 10)}
    cube = build_model("cube", DIM, cfg).eval()
    with torch.no_grad():
        cube.reshaper.proj_out.weight.normal_(0, 0.05)
    test = emb["test"]
    outputs = {"identity": (test.q, test.candidates), "cube": (cube(test.q), test.candidates)}
    with torch.inference_mode():
        report = confidence_report(cfg, emb, outputs, cube)
    assert set(report) == {"margin", "steps", "passes"}
    ident = report["margin"]["identity"]
    hits = retrieval_metrics(test.q, test.answer_ids, test.candidates)["recall@1"]
    assert ident["r1_all"] == pytest.approx(hits)
    assert [row["steps"] for row in report["steps"]] == [0, 3, 6]
    three = next(r for r in report["steps"] if r["steps"] == 3)
    with torch.no_grad():
        direct = retrieval_metrics(cube(test.q, 3), test.answer_ids, test.candidates)["mrr"]
    assert three["mrr"] == pytest.approx(direct)
    passes = report["passes"]
    assert passes["k"] == 3 and passes["steps"] == 3
    assert set(passes["spread"]) == {"auroc", "r1_confident_half", "r1_all"}
    # no module: margins only
    assert set(confidence_report(cfg, emb, outputs, None)) == {"margin"}
