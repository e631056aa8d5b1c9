"""The finetuned_teacher baseline: the real packaged MiniLM fine-tuned on real zaragoza pairs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from cellcube.config import TeacherConfig
from cellcube.data import load_builtin
from cellcube.embed.locate import resolve_model_path
from cellcube.errors import ConfigError
from cellcube.models.finetune import (
    RESULT_FILE,
    FinetunedEncoder,
    FinetuneResult,
    answer_candidates,
    finetune_teacher,
    read_record,
    retrieval_on_texts,
)

# Short texts keep the real MiniLM fast on 2 cores (zaragoza answers are long); still real text.
TEACHER = TeacherConfig(max_length=32)


@pytest.fixture(scope="module")
def zaragoza():
    pairs = load_builtin("zaragoza")
    return {"train": pairs[:32], "val": pairs[32:56], "test": pairs[56:96]}


@pytest.fixture(scope="module")
def finetuned(zaragoza, tmp_path_factory) -> FinetuneResult:
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: nothing may reach the hub
    out = tmp_path_factory.mktemp("run") / "models" / "finetuned_teacher"
    return finetune_teacher(
        TEACHER, zaragoza["train"], zaragoza["val"], out, epochs=2, batch_size=16, seed=0
    )


def test_answer_candidates_orders_distinct_answers_by_first_occurrence():
    pairs = load_builtin("zaragoza")[:30]
    questions, answers, ids = answer_candidates(pairs)
    assert questions == [p.question for p in pairs]
    assert len(answers) == len(set(answers)) == len({p.answer for p in pairs})
    assert [answers[i] for i in ids.tolist()] == [p.answer for p in pairs]


def test_a_transformers_teacher_is_refused_in_one_line(tmp_path):
    pairs = load_builtin("zaragoza")[:8]
    cfg = TeacherConfig(model="SmolLM2-135M-Instruct", kind="transformers")
    with pytest.raises(ConfigError, match=r"^eval\.finetune_teacher: .*'sentence-transformers'"):
        finetune_teacher(cfg, pairs[:4], pairs[4:], tmp_path / "ft")
    with pytest.raises(ConfigError, match=r"^eval\.finetune_epochs"):
        finetune_teacher(TEACHER, pairs[:4], pairs[4:], tmp_path / "ft", epochs=0)
    with pytest.raises(ConfigError, match=r"^eval\.finetune_batch_size"):
        finetune_teacher(TEACHER, pairs[:4], pairs[4:], tmp_path / "ft", batch_size=1)
    assert not (tmp_path / "ft").exists()


@pytest.mark.slow
def test_finetuning_changes_the_teacher_and_chooses_the_best_validation_epoch(finetuned):
    from sentence_transformers import SentenceTransformer

    teacher = SentenceTransformer(resolve_model_path(TEACHER.model), local_files_only=True)
    assert finetuned.best_epoch in (1, 2)
    assert len(finetuned.val_mrr) == 3  # epoch 0 (the untouched teacher), 1, 2
    assert all(0.0 < m <= 1.0 for m in finetuned.val_mrr)
    assert finetuned.best_epoch == max((1, 2), key=lambda e: (finetuned.val_mrr[e], -e))
    assert len(finetuned.train_loss) == 2 and all(math.isfinite(x) for x in finetuned.train_loss)
    assert finetuned.train_seconds > 0
    changed = [
        name
        for name, p in finetuned.encoder.model.state_dict().items()
        if not torch.equal(p, teacher.state_dict()[name])
    ]
    assert len(changed) > 50  # every layer moved, not just a bias


@pytest.mark.slow
def test_the_saved_model_reloads_bit_for_bit_with_its_record(finetuned, zaragoza):
    questions = [p.question for p in zaragoza["test"]]
    emb = finetuned.encoder.encode(questions)
    assert emb.dtype == torch.float32 and emb.shape == (len(questions), 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(questions)))
    reloaded = FinetunedEncoder.load(finetuned.path, batch_size=finetuned.encoder.batch_size)
    assert torch.equal(reloaded.encode(questions), emb)
    record = read_record(finetuned.path)
    assert record == json.loads((finetuned.path / RESULT_FILE).read_text())
    assert reloaded.params == finetuned.encoder.params > 20_000_000
    assert record["best_epoch"] == finetuned.best_epoch
    assert record["val_mrr"] == finetuned.val_mrr
    assert record["recipe"]["lr"] == 2e-5 and record["recipe"]["n_train"] == 32
    leftovers = [p.name for p in finetuned.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_test_metrics_come_from_the_finetuned_model_on_distinct_answers(finetuned, zaragoza):
    q, a, ids = answer_candidates(zaragoza["test"])
    metrics = retrieval_on_texts(finetuned.encoder, q, a, ids, ks=(1, 10))
    assert set(metrics) == {"cosine", "recall@1", "recall@10", "mrr"}
    assert 0.3 < metrics["mrr"] <= 1.0
    assert metrics["recall@1"] <= metrics["recall@10"]
    # the best epoch's weights are the ones evaluated: validation MRR reproduces its record
    qv, av, idv = answer_candidates(zaragoza["val"])
    val = retrieval_on_texts(finetuned.encoder, qv, av, idv)["mrr"]
    assert val == pytest.approx(finetuned.val_mrr[finetuned.best_epoch], abs=1e-6)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights(tmp_path: Path, zaragoza):
    train, val = zaragoza["train"][:8], zaragoza["val"][:4]
    runs = [
        finetune_teacher(TEACHER, train, val, tmp_path / f"ft{i}", epochs=1, batch_size=4)
        for i in range(2)
    ]
    questions = [p.question for p in zaragoza["test"][:8]]
    assert torch.equal(runs[0].encoder.encode(questions), runs[1].encoder.encode(questions))
    assert runs[0].train_loss == runs[1].train_loss


@pytest.mark.slow
def test_cellcube_train_reports_the_finetuned_teacher_beside_the_cube(tmp_path):
    """`--set eval.finetune_teacher=true` adds `finetuned_teacher` to a real run's report: its
    own metrics with an interval, its parameter count, training seconds and the paired row."""
    from cellcube.cli import main

    tiny = ["cube.lattice=[2,2,2]", "cube.channels=4", "cube.hidden=8", "cube.steps=2"]
    settings = [
        *tiny,
        "data.corpus=zaragoza",
        "data.max_train=32",
        "train.epochs=1",
        "train.batch_size=16",
        "train.progress=false",
        "teacher.max_length=32",
        "eval.bootstrap=100",
        "eval.finetune_teacher=true",
        "eval.finetune_epochs=1",
        "eval.finetune_batch_size=16",
        f"cache.path={tmp_path / 'cache.sqlite'}",
    ]
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *[a for s in settings for a in ("--set", s)]]) == 0
    report = json.loads((run / "report.json").read_text())
    ft = report["models"]["finetuned_teacher"]
    assert ft["params"] > 20_000_000  # the whole MiniLM is trained
    assert ft["train_seconds"] > 0 and ft["lr"] == 2e-5
    lo, hi = ft["ci"]["mrr"]
    assert lo <= ft["mrr"] <= hi
    assert ft["mrr"] != report["models"]["identity"]["mrr"]  # not the untouched teacher
    assert "finetuned_teacher" in report["paired"]
    assert read_record(run / "models" / "finetuned_teacher")["best_epoch"] == 1
