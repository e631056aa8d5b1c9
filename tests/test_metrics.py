"""Retrieval metrics on hand-checkable tensors."""

from __future__ import annotations

import pytest
import torch

from cellcube.eval.metrics import retrieval_metrics

E = torch.eye(3)


def test_retrieval_metrics_by_hand():
    cands = E
    pred = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.5, 0.0], [0.0, 0.2, 1.0], [0.0, 0.0, -1.0]])
    ids = torch.tensor([0, 1, 2, 2])
    m = retrieval_metrics(pred, ids, cands, ks=(1, 2))
    # ranks: 1, 2, 1, 3
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(0.75)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 + 1 / 3) / 4)
    cos = torch.nn.functional.cosine_similarity(pred, cands[ids]).mean().item()
    assert m["cosine"] == pytest.approx(cos)


def test_constant_prediction_scores_cosine_but_not_retrieval():
    torch.manual_seed(0)
    cands = torch.nn.functional.normalize(torch.randn(50, 16) + 2.0, dim=-1)
    ids = torch.arange(50)
    mean = cands.mean(0, keepdim=True).expand(50, -1)
    noisy = cands + 0.5 * torch.randn(50, 16)
    m_mean, m_noisy = retrieval_metrics(mean, ids, cands), retrieval_metrics(noisy, ids, cands)
    assert m_mean["cosine"] > m_noisy["cosine"]
    assert m_mean["mrr"] < m_noisy["mrr"]
