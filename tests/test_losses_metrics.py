"""Losses and retrieval metrics on hand-checkable tensors."""

from __future__ import annotations

import math

import pytest
import torch

from cellcube.config import TrainConfig
from cellcube.losses import CosineLoss, InfoNCELoss, build_loss
from cellcube.metrics import retrieval_metrics

E = torch.eye(3)


def test_infonce_value_by_hand():
    pred = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss = InfoNCELoss(temperature=1.0)(pred, target, torch.tensor([0, 1]))
    # row 0 logits [1, 1] -> -log(1/2); row 1 logits [0, 0] -> -log(1/2)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_infonce_masks_duplicate_answers():
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    same = InfoNCELoss(1.0)(pred, target, torch.tensor([7, 7]))
    differ = InfoNCELoss(1.0)(pred, target, torch.tensor([7, 8]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert differ.item() == pytest.approx(math.log(2), abs=1e-6)


def test_cosine_loss_and_combined_weights():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ids = torch.tensor([0, 1])
    assert CosineLoss()(pred, target, ids).item() == pytest.approx(0.5)
    total, parts = build_loss(TrainConfig(cosine_weight=2.0, temperature=1.0))(pred, target, ids)
    assert set(parts) == {"infonce", "cosine"}
    assert total.item() == pytest.approx(parts["infonce"].item() + 2 * 0.5)
    _, only = build_loss(TrainConfig(cosine_weight=0.0))(pred, target, ids)
    assert set(only) == {"infonce"}


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
