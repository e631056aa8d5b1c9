"""The hard-negative miner, the curriculum and the objective that combines them, by hand; all of
them inside a real Lightning fit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cellcube.config import load_config
from cellcube.models.baselines import build_model
from cellcube.objectives.curriculum import competence, curriculum_weights, teacher_difficulty
from cellcube.objectives.losses import build_loss
from cellcube.objectives.multiteacher import TeacherView
from cellcube.objectives.negatives import NegativeMiner
from cellcube.objectives.objective import Objective
from cellcube.train.checkpoints import load_checkpoint
from cellcube.train.fit import fit
from test_pipeline import TINY, _toy_splits

T = torch.tensor


def _miner(**kw) -> NegativeMiner:
    bank = torch.eye(4)
    bank[1] = T([0.9, 0.1, 0.0, 0.0])  # answer 1 resembles answer 0
    args = dict(hard=1, random=2, refresh_every=2, mine_by="prediction", seed=0)
    return NegativeMiner(bank, T([0, 1, 2, 3, 0]), **{**args, **kw})


def test_miner_keeps_the_closest_other_answers():
    miner = _miner(hard=2)
    miner.mine(miner.bank[miner.answer_ids], epoch=0)  # query = the true answers themselves
    assert miner.mined[0].tolist()[0] == 1  # closest to answer 0 that is not answer 0
    assert miner.mined[1].tolist()[0] == 0
    for row, own in enumerate(miner.answer_ids.tolist()):
        assert own not in miner.mined[row].tolist()
    assert _miner(hard=10).hard == 3  # capped at the other answers of the bank


def test_random_negatives_are_seeded_by_epoch_and_batch_and_never_the_answer():
    miner = _miner(hard=0, random=50)
    rows = torch.arange(5)
    a = miner.sample(rows, epoch=3, batch_idx=1)
    assert a.shape == (5, 50)
    assert torch.equal(a, miner.sample(rows, epoch=3, batch_idx=1))
    assert not torch.equal(a, miner.sample(rows, epoch=4, batch_idx=1))
    assert not (a == miner.answer_ids[:, None]).any()
    assert set(a.unique().tolist()) == {0, 1, 2, 3}


def test_refresh_schedule():
    by_pred, by_answer = _miner(refresh_every=2), _miner(mine_by="answer")
    assert by_pred.due(0) and by_answer.due(0)
    for m in (by_pred, by_answer):
        m.mine(m.bank[m.answer_ids], epoch=0)
    assert [by_pred.due(e) for e in (1, 2, 3)] == [False, True, True]
    assert not any(by_answer.due(e) for e in (1, 2, 5))  # the teacher is frozen: mined once
    assert not _miner(hard=0).due(0)  # random negatives only: nothing to mine


def test_teacher_difficulty_is_the_rank_quantile():
    bank = torch.eye(3)
    q = T([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
    ids = T([0, 0, 2])
    # ranks of the true answer: 0, 1 (answer 1 scores 0.8 > 0.6), 0; cosine breaks the 0-0 tie
    d = teacher_difficulty(q, bank[ids], ids, bank)
    torch.testing.assert_close(d, T([0.0, 1.0, 0.5]))
    assert teacher_difficulty(q[:1], bank[:1], T([0]), bank).tolist() == [0.0]


def test_competence_schedule_moves_from_easy_to_all():
    assert competence(0, 10, 0.2) == pytest.approx(0.2)
    values = [competence(e, 10, 0.2) for e in range(12)]
    assert values == sorted(values) and values[10] == values[11] == 1.0
    d = T([0.0, 0.5, 1.0])
    assert curriculum_weights(d, 0, 10, 0.2).tolist() == [1.0, 0.0, 0.0]
    assert curriculum_weights(d, 10, 10, 0.2).tolist() == [1.0, 1.0, 1.0]


NEGATIVES_AND_CURRICULUM = [
    "loss.triplet=1",
    "loss.diversity=1",
    "loss.hard_negatives=3",
    "loss.random_negatives=2",
    "loss.refresh_every=2",
    "loss.curriculum=true",
    "loss.curriculum_epochs=2",
]


def test_objective_is_the_configured_loss_with_its_negatives_and_curriculum_weights():
    cfg = load_config(None, [*TINY, *NEGATIVES_AND_CURRICULUM])
    train, _ = _toy_splits()
    objective = Objective(cfg, train)
    objective.refresh_negatives(torch.nn.Identity(), epoch=0)
    rows = torch.tensor([5, 0, 17, 42, 3, 88])
    pred = train.q[rows] + 0.1
    total, terms, stats = objective(pred, train.a[rows], train.answer_ids[rows], rows, 1, 4)
    # by hand: the miner's ids for these rows, the curriculum's weights at epoch 1
    miner = objective.negatives
    ids = miner.sample(rows, 1, 4)
    weights = curriculum_weights(objective.difficulty[rows], 1, 2, cfg.loss.curriculum_start)
    want, want_terms = build_loss(cfg.loss)(
        pred, train.a[rows], train.answer_ids[rows], miner.bank[ids], ids, weights
    )
    assert total.item() == pytest.approx(want.item(), abs=1e-6) and total.item() > 0
    assert set(terms) == set(want_terms) == {"infonce", "cosine", "triplet", "diversity"}
    assert stats["curriculum_fraction"].item() == pytest.approx(weights.mean().item())
    assert 0 < weights.sum() < len(rows)  # the curriculum does leave some rows out
    # mined by the model's predictions (here the questions themselves), never the own answer
    assert miner.mined_at.item() == 0 and not (miner.mined == train.answer_ids[:, None]).any()
    sims = torch.nn.functional.normalize(train.q, dim=-1) @ miner.bank.T
    sims[torch.arange(len(train)), train.answer_ids] = -torch.inf
    assert torch.equal(miner.mined, sims.topk(3, dim=1).indices)


def test_objective_with_another_teacher_weights_each_teachers_loss():
    cfg = load_config(None, TINY)
    train, _ = _toy_splits()
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    train.views["other"] = TeacherView(train.q @ w, train.a @ w, train.candidates @ w)
    objective = Objective(cfg, train)
    assert objective.labels == [cfg.teacher.label, "other"]
    assert list(objective.heads) == ["other"]
    rows = torch.arange(10)
    total, terms, stats = objective(
        train.q[rows], train.a[rows], train.answer_ids[rows], rows, 0, 0
    )
    shares = [terms[f"loss_{label}"] for label in objective.labels]
    assert total.item() == pytest.approx(sum(s.item() for s in shares), abs=1e-6)
    mean_weights = [stats[f"weight_{label}"].item() for label in objective.labels]
    assert sum(mean_weights) == pytest.approx(1.0, abs=1e-6)
    assert min(mean_weights) > 0


@pytest.mark.slow
def test_fit_with_mined_negatives_and_curriculum_is_deterministic_and_resumes_exactly(
    tmp_path: Path,
):
    """Mined ids are module buffers (saved in checkpoints), so a resume continues identically."""
    cfg = load_config(
        None, [*TINY, "train.epochs=4", "train.patience=100", *NEGATIVES_AND_CURRICULUM]
    )
    train, val = _toy_splits()
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, straight)
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    fit(build_model("cube", 16, cfg), "cube", short, train, val, interrupted)
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, interrupted, resume=True)

    def val_mrr(run: Path) -> dict[int, str]:
        rows = csv.DictReader((run / "logs" / "metrics.csv").open())
        return {int(r["epoch"]): r["val_mrr"] for r in rows if r["val_mrr"]}

    resumed = val_mrr(interrupted)
    assert resumed and resumed.items() <= val_mrr(straight).items()  # bit-identical epochs
    ref = load_checkpoint(straight / "checkpoints" / "best.ckpt")["state_dict"]
    got = load_checkpoint(interrupted / "checkpoints" / "best.ckpt")["state_dict"]
    assert ref.keys() == got.keys() and "objective.negatives.mined_at" in ref
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)
    mined, own = ref["objective.negatives.mined"], train.answer_ids
    assert mined.shape == (len(train), 3) and not (mined == own[:, None]).any()
