"""The chunked similarity helpers give the dense results: across block boundaries, with ties.

Every comparison of embeddings goes through :mod:`cellcube.eval.similarity` in blocks of query
rows; these tests shrink the blocks (``BLOCK_ELEMENTS`` or ``chunk``) far below the number of
rows, so every result crosses block boundaries, and compare with the dense computation. Ties are
made exact with small integer vectors. Peak memory is measured in ``benchmarks/bank.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellcube.data.expand import _distinct_originals, _near_any, _pairs_at_least
from cellcube.data.inspect import near_duplicates
from cellcube.data.quality import quality_scores
from cellcube.data.records import QAPair
from cellcube.eval import similarity as sim


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most 40 similarities per block: a few rows each for the sizes below."""
    monkeypatch.setattr(sim, "BLOCK_ELEMENTS", 40)


def tied(n: int, seed: int) -> torch.Tensor:
    """(n, 4) vectors with entries in {-1, 0, 1}: their inner products are small integers, so
    exact ties are everywhere (and repeated rows too)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (n, 4), generator=g).float()


def tied_norm2(n: int, seed: int) -> torch.Tensor:
    """(n, 8) vectors with four entries +-1 and four 0: norm exactly 2, so their cosines are
    exact multiples of 1/4 (exact ties after normalisation too)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n, 8), generator=g).float() * 2 - 1
    keep = torch.rand(n, 8, generator=g).argsort(dim=1) < 4
    return signs * keep


def dense_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: a stable descending sort of each full row (ties: lower index first)."""
    order = np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
    idx = torch.from_numpy(order)
    return scores.gather(1, idx), idx


def test_block_rows_caps_the_block_size() -> None:
    assert sim.block_rows(100) == sim.CHUNK
    assert sim.block_rows(2_048) == sim.CHUNK
    assert sim.block_rows(2_049) == 8_128  # 8,188 rounded down to a multiple of 64
    assert sim.block_rows(100_000) == 128
    assert sim.block_rows(1_000_000) == sim.BLOCK_ELEMENTS // 1_000_000 == 16
    assert sim.block_rows(10**10) == 1
    assert sim.block_rows(100, chunk=7) == 7


def test_float64_blocks_equal_one_product_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks capped at 335 rows are cut to 320 (a multiple of ROW_ALIGN), and the blocked float64
    product is then the dense one bit for bit (the data stage decides thresholds in float64);
    335-row blocks differ from it in the last bits on the development machine's CPU."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1000, 384, generator=g).double()
    k = torch.randn(5000, 384, generator=g).double()
    monkeypatch.setattr(sim, "BLOCK_ELEMENTS", 335 * 5000)
    assert sim.block_rows(5000) == 320
    dense = q @ k.T
    assert torch.equal(torch.cat([b for _, b in sim.dot_blocks(q, k)]), dense)


def test_dot_blocks_cover_every_row_in_bounded_blocks(tiny_blocks: None) -> None:
    q, k = tied(23, 0), tied(9, 1)
    blocks = list(sim.dot_blocks(q, k))
    assert [s for s, _ in blocks] == list(range(0, 23, 4))  # 40 // 9 = 4 rows per block
    assert all(b.numel() <= 40 for _, b in blocks)
    assert torch.equal(torch.cat([b for _, b in blocks]), q @ k.T)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_topk_chunked_equals_dense_with_ties(tiny_blocks: None, k: int) -> None:
    q, keys = tied(37, 2), tied(11, 3)
    scores, idx = sim.topk_dot(q, keys, k)
    ref_scores, ref_idx = dense_topk(q @ keys.T, k)
    assert (q @ keys.T).unique().numel() < 10  # ties everywhere: the guard is exercised
    assert torch.equal(idx, ref_idx)
    assert torch.equal(scores, ref_scores)
    # the same with a query chunk below the block size, and through the cosine wrapper
    qn, kn = tied_norm2(37, 2), tied_norm2(11, 3)
    c_scores, c_idx = sim.topk_cosine(qn * 3, kn, k, chunk=2)
    ref_c = dense_topk(qn @ kn.T / 4, k)
    assert torch.equal(c_idx, ref_c[1])
    assert torch.equal(c_scores, ref_c[0])


def test_topk_exclude_self_and_caps(tiny_blocks: None) -> None:
    x = tied(19, 4)
    scores, idx = sim.topk_dot(x, x, 5, exclude_self=True)
    full = x @ x.T
    full.fill_diagonal_(-float("inf"))
    ref_scores, ref_idx = dense_topk(full, 5)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(scores, ref_scores)
    assert not (idx == torch.arange(19)[:, None]).any()
    assert sim.topk_dot(x, x[:3], 10)[1].shape == (19, 3)  # k capped at the keys
    assert sim.topk_dot(x[:0], x, 3)[1].shape == (0, 3)


def test_true_ranks_chunked_equals_dense(tiny_blocks: None) -> None:
    q, keys = tied_norm2(29, 5), tied_norm2(13, 6)
    targets = torch.arange(29) % 13
    ranks, cos = sim.true_ranks(q, keys * 2, targets, chunk=3)
    full = q @ keys.T / 4  # exact: cosines are multiples of 1/4
    true = full[torch.arange(29), targets]
    assert torch.equal(ranks, (full > true[:, None]).sum(dim=1) + 1)
    assert torch.equal(cos, true)


def test_pairs_above_and_near_duplicates_equal_dense(tiny_blocks: None) -> None:
    x = sim.unit(tied(31, 7))
    i, j, v = sim.pairs_above(x, 0.5)
    full = (x @ x.T).numpy()
    ri, rj = np.nonzero(np.triu(full >= 0.5, k=1))  # row-major, like the helper
    assert len(ri) > 20
    assert i.tolist() == ri.tolist() and j.tolist() == rj.tolist()
    assert np.array_equal(v.numpy(), full[ri, rj])
    found = near_duplicates(tied(31, 7), 0.5)
    ref = zip(full[ri, rj].tolist(), ri.tolist(), rj.tolist(), strict=True)
    ref = sorted(ref, key=lambda t: -t[0])
    assert found == ref


def unit64(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_threshold_pairs(t: float, eps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``a`` and ``b`` (float64, unit) with ``cos(a_i, b_i) = t + eps`` for even ``i`` and
    ``t - eps`` for odd ``i``: a margin far below float32 resolution, so only the float64
    decision separates them."""
    rng = np.random.default_rng(seed)
    a = unit64(rng.standard_normal((12, 16)))
    o = rng.standard_normal((12, 16))
    o = unit64(o - (o * a).sum(1, keepdims=True) * a)
    c = t + np.where(np.arange(12) % 2 == 0, eps, -eps)[:, None]
    return a, c * a + np.sqrt(1 - c**2) * o


def test_expansion_searches_in_float32_but_decides_in_float64(tiny_blocks: None) -> None:
    a, b = near_threshold_pairs(0.9, 1e-9, 8)
    cos = (a * b).sum(1)
    assert np.array_equal(cos >= 0.9, np.arange(12) % 2 == 0)
    near = _near_any(b, a, 0.9)  # every b row against all a rows
    assert np.array_equal(near, ((b @ a.T) >= 0.9).any(axis=1))
    assert near[::2].all()
    stacked = np.concatenate([a[:4], b[:4]])  # rows i and i + 4 at 0.9 +- 1e-9
    i, j = _pairs_at_least(stacked, 0.9)
    ri, rj = np.nonzero(np.triu(stacked @ stacked.T >= 0.9, k=1))
    assert i.tolist() == ri.tolist() and j.tolist() == rj.tolist()
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert (0, 4) in found and (1, 5) not in found


def test_distinct_originals_equal_the_sequential_greedy(tiny_blocks: None) -> None:
    rng = np.random.default_rng(9)
    centres = unit64(rng.standard_normal((6, 8)))
    qv = unit64(centres[rng.integers(0, 6, 40)] + 0.15 * rng.standard_normal((40, 8)))
    av = unit64(centres[rng.integers(0, 6, 40)] + 0.15 * rng.standard_normal((40, 8)))
    pairs = [QAPair(f"q{n}", f"a{n}", f"t:{n}") for n in range(40)]
    vec = {**{f"q{n}": qv[n] for n in range(40)}, **{f"a{n}": av[n] for n in range(40)}}
    kept = _distinct_originals(pairs, vec.__getitem__, 0.9)
    ref: list[int] = []  # the definition: compare with every earlier KEPT pair, in order
    for n in range(40):
        if not any(qv[m] @ qv[n] >= 0.9 and av[m] @ av[n] >= 0.9 for m in ref):
            ref.append(n)
    assert kept == ref
    assert 5 < len(kept) < 40  # some pairs dropped, and some only because a dropper was dropped


def test_quality_relevance_chunked_equals_dense(tiny_blocks: None) -> None:
    rng = np.random.default_rng(10)
    q, bank = rng.standard_normal((25, 6)), rng.standard_normal((7, 6))
    ids = rng.integers(0, 7, 25)
    texts = ["what is this thing?"] * 25
    out = quality_scores(q, ids, bank, texts, ["it is a small thing."] * 25, 0.1)
    s = unit64(q) @ unit64(bank).T / 0.1
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.allclose(out["relevance"], p[np.arange(25), ids], rtol=1e-12, atol=0)
