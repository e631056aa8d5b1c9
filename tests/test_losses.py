"""Every loss, the weighted sum, and the loss config on hand-checkable tensors."""

from __future__ import annotations

import math

import pytest
import torch

from cellcube.config import LossConfig, load_config
from cellcube.errors import CellcubeError, ConfigError
from cellcube.objectives.losses import (
    CosineLoss,
    DiversityLoss,
    InfoNCELoss,
    LossInputError,
    MSELoss,
    TripletLoss,
    build_loss,
)
from cellcube.objectives.losses.diversity import mean_pairwise_cosine

ALL = [InfoNCELoss(1.0), CosineLoss(), MSELoss(), TripletLoss(0.2), DiversityLoss()]
T = torch.tensor


def test_infonce_value_by_hand():
    pred = T([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = T([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss = InfoNCELoss(temperature=1.0)(pred, target, T([0, 1]))
    # row 0 logits [1, 1] -> -log(1/2); row 1 logits [0, 0] -> -log(1/2)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_infonce_temperature_scales_logits():
    pred, target = T([[1.0, 0.0], [0.0, 1.0]]), T([[1.0, 0.0], [0.0, 1.0]])
    # logits (1 vs 0) / 0.5 = (2 vs 0): -log(e^2 / (e^2 + 1)) per row
    expected = -math.log(math.e**2 / (math.e**2 + 1))
    assert InfoNCELoss(0.5)(pred, target, T([0, 1])).item() == pytest.approx(expected, abs=1e-6)


def test_infonce_masks_duplicate_answers_and_all_duplicates_is_zero():
    pred = T([[1.0, 0.0], [1.0, 0.0]])
    target = T([[1.0, 0.0], [1.0, 0.0]])
    same = InfoNCELoss(1.0)(pred, target, T([7, 7]))
    differ = InfoNCELoss(1.0)(pred, target, T([7, 8]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert differ.item() == pytest.approx(math.log(2), abs=1e-6)


def test_infonce_extra_negatives_and_batch_of_one():
    pred, target = T([[1.0, 0.0]]), T([[1.0, 0.0]])
    assert InfoNCELoss(1.0)(pred, target, T([0])).item() == pytest.approx(0.0, abs=1e-6)
    negs = T([[[0.0, 3.0]]])  # cos 0 with the prediction (norm does not matter)
    got = InfoNCELoss(1.0)(pred, target, T([0]), negs, T([[5]]))
    assert got.item() == pytest.approx(-math.log(math.e / (math.e + 1)), abs=1e-6)
    # a "negative" that is the answer itself (same id) is masked, not pushed away
    masked = InfoNCELoss(1.0)(pred, target, T([0]), negs, T([[0]]))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_and_mse_values_and_gradients_by_hand():
    pred = T([[1.0, 0.0]], requires_grad=True)
    target = T([[0.0, 1.0]])
    loss = CosineLoss()(pred, target, T([0]))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    # d(1 - cos)/dp at p = e0, t = e1 is -(t - cos * p) / |p| = -e1
    torch.testing.assert_close(pred.grad, T([[0.0, -1.0]]))
    pred.grad = None
    loss = MSELoss()(pred, T([[0.0, 0.0]]), T([0]))
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    torch.testing.assert_close(pred.grad, T([[1.0, 0.0]]))  # 2 (p - t) / D


def test_triplet_anchor_is_the_prediction_with_margin():
    pred = T([[1.0, 0.0]], requires_grad=True)
    target = T([[0.6, 0.8]])  # d_pos = 1 - 0.6
    negs = T([[[0.8, 0.6], [0.0, 1.0]]])  # hardest: d_neg = 1 - 0.8
    loss = TripletLoss(margin=0.2)(pred, target, T([0]), negs, T([[1, 2]]))
    assert loss.item() == pytest.approx(0.4 - 0.2 + 0.2, abs=1e-6)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # satisfied by more than the margin: zero loss
    easy = TripletLoss(0.2)(T([[1.0, 0.0]]), T([[1.0, 0.0]]), T([0]), negs[:, 1:], T([[2]]))
    assert easy.item() == pytest.approx(0.0)


def test_triplet_batch_hard_without_mined_negatives():
    pred = T([[1.0, 0.0], [0.0, 1.0]])
    target = T([[0.6, 0.8], [0.0, 1.0]])
    # row 0: d_pos 0.4, hardest other answer (0, 1) has d 1 -> relu(0.4 - 1 + 0.5) = 0
    # row 1: d_pos 0, other answer (0.6, 0.8) has d 0.2 -> relu(0 - 0.2 + 0.5) = 0.3
    loss = TripletLoss(margin=0.5)(pred, target, T([0, 1]))
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    # batch of 1 and all-duplicate answers: no negative at all, nothing to learn
    assert TripletLoss(0.5)(pred[:1], target[:1], T([0])).item() == 0.0
    assert TripletLoss(0.5)(pred, target, T([3, 3])).item() == 0.0


def test_diversity_penalises_collapse_relative_to_targets():
    three = T([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_cosine(three).item() == pytest.approx(2 / 6)  # one equal pair of 3
    targets = torch.eye(3)  # pairwise cosine 0
    collapsed = T([[1.0, 1.0, 1.0]]).expand(3, 3).clone().requires_grad_(True)
    loss = DiversityLoss()(collapsed, targets, T([0, 1, 2]))
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
    # nearly collapsed: a gradient step spreads the predictions out, lowering the penalty
    near = (collapsed.detach() + 0.1 * torch.eye(3)).requires_grad_(True)
    before = DiversityLoss()(near, targets, T([0, 1, 2]))
    before.backward()
    after = DiversityLoss()(near.detach() - 0.5 * near.grad, targets, T([0, 1, 2]))
    assert 0 < after.item() < before.item()
    spread = DiversityLoss()(torch.eye(3), targets, T([0, 1, 2]))
    assert spread.item() == pytest.approx(0.0, abs=1e-6)
    assert DiversityLoss()(T([[1.0, 0.0]]), T([[0.0, 1.0]]), T([0])).item() == 0.0


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_gradients_match_finite_differences(loss):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 5, generator=g, dtype=torch.float64)
    negs = torch.randn(4, 2, 5, generator=g, dtype=torch.float64)
    ids, neg_ids = T([0, 1, 1, 2]), T([[3, 4], [5, 6], [0, 7], [8, 9]])
    weights = T([1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: loss(p, target, ids, negs, neg_ids, weights), (pred,))


def test_curriculum_weights_select_rows():
    pred = T([[1.0, 0.0], [0.0, 1.0]])
    target = T([[1.0, 0.0], [1.0, 0.0]])  # row 0 perfect, row 1 cosine 0
    ids = T([0, 1])
    assert CosineLoss()(pred, target, ids, weights=T([1.0, 0.0])).item() == pytest.approx(0.0)
    assert CosineLoss()(pred, target, ids, weights=T([0.0, 1.0])).item() == pytest.approx(1.0)
    assert CosineLoss()(pred, target, ids, weights=T([0.0, 0.0])).item() == 0.0


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_non_finite_or_misshaped_input_is_one_clear_error(loss):
    good = torch.eye(2)
    with pytest.raises(LossInputError, match="pred holds NaN or inf") as info:
        loss(T([[float("nan"), 0.0], [0.0, 1.0]]), good, T([0, 1]))
    assert isinstance(info.value, CellcubeError) and "\n" not in str(info.value)
    with pytest.raises(LossInputError, match="target holds NaN"):
        loss(good, T([[float("inf"), 0.0], [0.0, 1.0]]), T([0, 1]))
    with pytest.raises(LossInputError, match=r"must both be \(B, D\)"):
        loss(good, torch.eye(3), T([0, 1]))


def test_build_loss_is_the_weighted_sum_of_the_configured_terms():
    pred, target, ids = T([[1.0, 0.0], [0.0, 2.0]]), T([[1.0, 0.0], [1.0, 0.0]]), T([0, 1])
    cfg = LossConfig(infonce=1.0, cosine=2.0, mse=0.5, diversity=3.0, temperature=1.0)
    total, parts = build_loss(cfg)(pred, target, ids)
    assert set(parts) == {"infonce", "cosine", "mse", "diversity"}
    assert parts["cosine"].item() == pytest.approx(0.5)
    expected = parts["infonce"] + 2 * parts["cosine"] + 0.5 * parts["mse"] + 3 * parts["diversity"]
    assert total.item() == pytest.approx(expected.item())
    _, only = build_loss(LossConfig(cosine=0.0, diversity=0.0))(pred, target, ids)
    assert set(only) == {"infonce"}


def test_loss_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'loss.temprature'"):
        load_config(None, ["loss.temprature=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.temperature'"):
        load_config(None, ["train.temperature=0.1"])  # moved to loss.temperature
    with pytest.raises(ConfigError, match=r"loss: at least one of infonce"):
        load_config(None, ["loss.infonce=0", "loss.cosine=0"])
    with pytest.raises(ConfigError, match=r"loss.mine_by"):
        load_config(None, ["loss.mine_by=question"])
