"""Bootstrap intervals over test pairs and paired differences, on rank vectors with known
statistics."""

from __future__ import annotations

import math

import pytest
import torch

from cellcube.eval.bootstrap import (
    bootstrap_means,
    difference_summary,
    intervals,
    per_pair_values,
    percentile_interval,
)
from cellcube.eval.evaluate import bootstrap_sections
from cellcube.eval.metrics import rank_metrics


def _ranks(n: int, seed: int) -> torch.Tensor:
    """Ranks 1..20 of n test pairs, a third of them at rank 1."""
    g = torch.Generator().manual_seed(seed)
    rank = torch.randint(1, 21, (n,), generator=g)
    rank[torch.rand(n, generator=g) < 0.33] = 1
    return rank


def test_per_pair_values_average_to_the_metrics():
    rank = _ranks(200, 0)
    values = per_pair_values(rank)
    m = rank_metrics(rank, torch.zeros(200))
    assert values["mrr"].mean().item() == pytest.approx(m["mrr"])
    assert values["recall@1"].mean().item() == pytest.approx(m["recall@1"])


@pytest.mark.parametrize("n", [100, 400])
def test_interval_contains_the_mrr_with_the_width_of_its_standard_error(n):
    rr = per_pair_values(_ranks(n, n))["mrr"]
    lo, hi = percentile_interval(bootstrap_means(rr[None], 1000, seed=0)[0])
    mrr = rr.mean().item()
    assert lo < mrr < hi
    expected = 2 * 1.959964 * rr.std().item() / math.sqrt(n)  # normal approximation
    assert hi - lo == pytest.approx(expected, rel=0.2)


def test_draws_are_seeded():
    rr = per_pair_values(_ranks(100, 1))["mrr"][None]
    a, b = bootstrap_means(rr, 200, seed=0), bootstrap_means(rr, 200, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, bootstrap_means(rr, 200, seed=1))


def test_blocks_do_not_change_the_draws(monkeypatch):
    """Large test sets are resampled in blocks: the same draws, whatever the block size."""
    rr = per_pair_values(_ranks(50, 2))["mrr"][None]
    whole = bootstrap_means(rr, 300, seed=0)
    monkeypatch.setattr("cellcube.eval.bootstrap._BLOCK", 50 * 7)  # 7 resamples a block
    torch.testing.assert_close(bootstrap_means(rr, 300, seed=0), whole, rtol=0, atol=0)


def test_paired_difference_with_itself_is_exactly_zero():
    values = {"cube": per_pair_values(_ranks(150, 3)), "twin": per_pair_values(_ranks(150, 3))}
    _, means = intervals(values, 500, seed=0)
    d = difference_summary(means["cube"], means["twin"])
    assert d == {"mean": 0.0, "ci": [0.0, 0.0], "se": 0.0}


def test_pairing_removes_the_shared_difficulty():
    """b is a with 5% of its pairs one rank worse: the paired SE is far below the SE of either
    model alone, and the interval brackets the true difference."""
    a = _ranks(400, 4)
    b = a.clone()
    b[::20] += 1
    values = {"cube": per_pair_values(a), "worse": per_pair_values(b)}
    ci, means = intervals(values, 1000, seed=0)
    d = difference_summary(means["cube"], means["worse"])
    true_diff = (values["cube"]["mrr"] - values["worse"]["mrr"]).mean().item()
    assert d["ci"][0] <= true_diff <= d["ci"][1]
    assert d["mean"] == pytest.approx(true_diff, abs=0.2 * true_diff)
    alone = means["cube"].std().item()
    assert 0 < d["se"] < alone / 5
    width = ci["cube"]["mrr"][1] - ci["cube"]["mrr"][0]
    assert width == pytest.approx(2 * 1.96 * alone, rel=0.1)


def test_bootstrap_sections_fill_the_report():
    values = {name: per_pair_values(_ranks(80, i)) for i, name in enumerate(("cube", "mlp", "x"))}
    models = {name: {} for name in values}
    sections = bootstrap_sections(values, models, 300, seed=7)
    assert sections["bootstrap"]["resamples"] == 300 and sections["bootstrap"]["seed"] == 7
    assert set(sections["paired"]) == {"mlp", "x"}
    for name, m in models.items():
        lo, hi = m["ci"]["mrr"]
        assert lo <= values[name]["mrr"].mean().item() <= hi
        assert set(m["ci"]) == {"mrr", "recall@1"}
    for d in sections["paired"].values():
        assert d["ci"][0] <= d["mean"] <= d["ci"][1] and d["se"] > 0
