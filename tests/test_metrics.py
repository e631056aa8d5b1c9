"""Retrieval metrics on hand-checkable tensors."""

from __future__ import annotations

import pytest
import torch

from cellcube.eval.metrics import retrieval_metrics
from cellcube.eval.report import format_report

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


def _report(with_ci: bool) -> dict:
    def model(mrr: float, params: int, lr: float | None, seconds: float | None) -> dict:
        m = {"mrr": mrr, "recall@1": mrr - 0.1, "recall@10": 0.9, "cosine": 0.5, "val_mrr": 0.6}
        m |= {"params": params, "lr": lr, "weight_decay": None if lr is None else 3.0}
        m["train_seconds"] = seconds
        if with_ci:
            m["ci"] = {"mrr": [mrr - 0.05, mrr + 0.05], "recall@1": [mrr - 0.16, mrr - 0.04]}
        return m

    report = {
        "n_test": 237,
        "n_candidates": 200,
        "models": {
            "cube": model(0.529, 207_312, 0.001, 25.04),
            "no_lattice": model(0.547, 197_248, 0.0003, 9.5),
            "identity": model(0.518, 0, None, 0.0),
            "cube_0_steps": model(0.520, 384, 0.001, None),
        },
    }
    if with_ci:
        report["bootstrap"] = {"resamples": 1000}
        report["paired"] = {"no_lattice": {"mean": -0.018, "ci": [-0.04, 0.004], "se": 0.011}}
    return report


def test_report_table_shows_intervals_settings_and_paired_differences():
    lines = format_report(_report(with_ci=True)).splitlines()
    assert all(len(line) <= 120 for line in lines)
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert list(rows) == ["no_lattice", "cube", "cube_0_steps", "identity"]  # best MRR first
    cube = rows["cube"].split()
    assert " ".join(cube[1:4]) == "0.529 [0.479, 0.579]"
    assert " ".join(cube[4:7]) == "0.429 [0.369, 0.489]"
    assert cube[-4:] == ["207,312", "0.001", "3", "25.0"]
    assert rows["no_lattice"].split()[-3:] == ["0.0003", "3", "9.5"]
    assert rows["identity"].split()[-4:] == ["0", "-", "-", "0.0"]
    assert rows["cube_0_steps"].split()[-1] == "-"  # unknown training time
    paired = lines[lines.index(next(x for x in lines if x.startswith("test MRR, cube minus"))) :]
    assert "1000 resamples" in paired[0]
    assert paired[2].split() == [
        "cube",
        "-",
        "no_lattice",
        "-0.018",
        "[-0.040,",
        "+0.004]",
        "0.011",
    ]


def test_report_table_without_intervals():
    text = format_report(_report(with_ci=False))
    assert "[" not in text and "cube minus" not in text
    assert "0.529" in text
