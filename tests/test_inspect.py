"""Inspection numbers on hand-placed embeddings, and the ``cellcube data`` commands end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cellcube.cli.main import main
from cellcube.data import QAPair
from cellcube.data import inspect as inspect_mod
from cellcube.data.inspect import inspect_pairs, write_inspection

# Texts on hand-placed unit vectors: each question points at its own answer, except q3, which
# points at a1 (so its true answer a3 ranks 2nd), and q4, a near-duplicate of q0.
VECS = {
    "q0": [1, 0, 0, 0],
    "q1": [0, 1, 0, 0],
    "q2": [0, 0, 1, 0],
    "q3": [0, 0.9, 0, 0.1],
    "q4": [0.99, 0.01, 0, 0],
    "a0": [1, 0, 0, 0],
    "a1": [0, 1, 0, 0],
    "a2": [0, 0, 1, 0],
    "a3": [0, 0, 0, 1],
}


def fixed_embed(texts: list[str]) -> np.ndarray:
    return np.array([VECS[t] for t in texts], dtype=np.float32)


PAIRS = [
    QAPair("q0", "a0", "f:1", domain="ml"),
    QAPair("q1", "a1", "f:2", domain="ml"),
    QAPair("q2", "a2", "f:3", domain="nlp"),
    QAPair("q3", "a3", "f:4", domain="nlp", variant_of="q1"),
    QAPair("q4", "a0", "f:5"),
]


def test_inspect_counts_duplicates_and_identity_baseline() -> None:
    s = inspect_pairs(PAIRS, fixed_embed, ks=(1, 2))
    assert s["counts"] == {
        "pairs": 5,
        "distinct_questions": 5,
        "distinct_answers": 4,
        "originals": 4,
        "variants": 1,
        "per_domain": {"ml": 2, "nlp": 2, "(none)": 1},
        "per_split": {"(not pinned)": 5},
    }
    # q3's true answer a3 ranks 2nd (a1 first); every other pair ranks 1st
    assert s["identity_baseline"]["mrr"] == pytest.approx((4 + 0.5) / 5, abs=1e-4)
    assert s["identity_baseline"]["recall@1"] == pytest.approx(0.8)
    assert s["identity_baseline"]["recall@2"] == pytest.approx(1.0)
    d = s["duplicates"]
    assert d["answers_shared_by_several_questions"] == 1  # a0
    assert d["near_duplicate_question_pairs"] == 2  # (q0, q4) and (q1, q3)
    assert [(e["a"], e["b"]) for e in d["near_examples"]] == [("q0", "q4"), ("q1", "q3")]
    assert s["lengths"]["question_words"]["max"] == 1.0
    # quality: 1-word answers give length factor 1/3; q3's relevance is the lowest
    assert s["quality"]["source"] == "computed by the teacher"
    assert s["quality"]["lowest"][0]["question"] == "q3"
    assert max(s["quality"]["values"]) <= 1 / 3 + 1e-4


def test_write_inspection_plots_and_summary(tmp_path: Path) -> None:
    rated = [replace(p, quality=q) for p, q in zip(PAIRS, [0.1, 0.2, 0.3, 0.4, 0.5], strict=True)]
    s = inspect_pairs(rated, fixed_embed)
    written = write_inspection(s, tmp_path / "out", "demo")
    assert sorted(p.name for p in written) == [
        "domains.png",
        "lengths.png",
        "quality.png",
        "summary.json",
        "summary.md",
    ]
    for name in ("domains.png", "lengths.png", "quality.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "**5 pairs**" in md and "quality (from the file's 'quality' field): median 0.300" in md
    assert "mrr 0.900" in md
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "values" not in summary["quality"] and summary["quality"]["mean"] == 0.3
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_file_qualities_are_used_only_when_every_pair_has_one() -> None:
    rated = [replace(p, quality=0.5) for p in PAIRS]
    source = inspect_pairs(rated, fixed_embed)["quality"]["source"]
    assert source == "from the file's 'quality' field"
    rated[2] = PAIRS[2]
    assert inspect_pairs(rated, fixed_embed)["quality"]["source"] == "computed by the teacher"


def test_data_commands_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(
        '{"question": "What is a hash table?", "answer": "A structure mapping keys to values '
        'through a hash function."}\n'
        "broken\n"
        '{"turns": ["What is recursion?", "A function calling itself on a smaller input.", '
        '"Why is it useful?", "It expresses divide-and-conquer algorithms directly."]}\n'
    )
    (src / "b.csv").write_text(
        "question,answer\nHow does binary search work?,It halves a sorted range at each step.\n"
    )
    common = ["--set", f"cache.path={tmp_path / 'cache.sqlite'}"]
    assert main(["data", "import", str(src), "--out", str(tmp_path / "all.jsonl"), *common]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {src / 'a.jsonl'}:2: not valid JSON (Expecting value)"
    )
    out = tmp_path / "all.jsonl"
    code = main(
        [
            "data",
            "import",
            str(src),
            "--out",
            str(out),
            "--skip-invalid",
            "--context-turns",
            "1",
            *common,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "5 pairs from 2 file(s); 1 malformed record(s) skipped (1 invalid JSON)" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and rows[2]["context"] == ["What is recursion?"]
    assert json.loads(out.with_suffix(".report.json").read_text())["skipped"][0]["where"] == (
        f"{src / 'a.jsonl'}:2"
    )

    exp = tmp_path / "exp.jsonl"
    assert main(["data", "expand", str(out), "--out", str(exp), "--variants", "2", *common]) == 0
    records = [json.loads(line) for line in exp.read_text().splitlines()]
    assert sum(r["variant_of"] is None for r in records) == 5
    assert 0 < sum(r["variant_of"] is not None for r in records) <= 10
    assert "expand: 5 input pairs -> 5 originals" in capsys.readouterr().out

    assert main(["data", "inspect", str(exp), "--out", str(tmp_path / "insp"), *common]) == 0
    md = (tmp_path / "insp" / "summary.md").read_text()
    assert f"{len(records)} pairs" in md and "from the file's 'quality' field" in md
    assert (tmp_path / "insp" / "quality.png").is_file()


def test_pools_score_each_question_among_its_own_pools_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above POOL pairs, relevance and the identity baseline rank each question among the answers
    of its seeded pool only: a distractor answer in another pool no longer outranks it."""
    monkeypatch.setattr(inspect_mod, "POOL", 3)
    pools = inspect_mod.answer_pools(len(PAIRS), 3)
    assert sorted(np.concatenate(pools).tolist()) == list(range(len(PAIRS)))
    assert [len(p) for p in pools] == [3, 2]
    s = inspect_pairs(PAIRS, fixed_embed, ks=(1, 2))
    assert s["pools"] == {"count": 2, "largest": 3, "pool": 3}
    # q3 (row 3) points at a1; a1 is a candidate only when q1 (row 1) shares q3's pool
    q3_pool = next(p for p in pools if 3 in p)
    mrr = (4 + (0.5 if 1 in q3_pool else 1.0)) / 5
    assert s["identity_baseline"]["mrr"] == pytest.approx(mrr, abs=1e-4)
    for members in pools:  # each pool's relevance is the one-pool score of its pairs alone
        alone = inspect_pairs([PAIRS[i] for i in members], fixed_embed)
        assert [s["quality"]["values"][i] for i in members] == alone["quality"]["values"]
    assert "pool" in inspect_mod.render_markdown(s, "t")


def test_indexed_near_duplicates_equal_the_exact_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above NEAR_EXACT_MAX rows the FAISS path runs; on 3,000 rows with 300 planted near-duplicate
    pairs among random directions it returns exactly what the all-pairs search returns."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2700, 64)).astype(np.float32)
    twins = base[:300] + 0.05 * rng.standard_normal((300, 64)).astype(np.float32)
    vectors = torch.from_numpy(np.concatenate([base, twins]))
    exact = inspect_mod.near_duplicates(vectors, 0.95)
    assert 250 <= len(exact) <= 300
    monkeypatch.setattr(inspect_mod, "NEAR_EXACT_MAX", 1000)
    indexed = inspect_mod.near_duplicates(vectors, 0.95)
    assert len(indexed) == len(exact)
    by_pair = {(i, j): c for c, i, j in exact}
    for c, i, j in indexed:  # the same pairs, the same cosines (up to float32 summation order)
        assert c == pytest.approx(by_pair[(i, j)], abs=1e-6)
    assert [c for c, _, _ in indexed] == sorted((c for c, _, _ in indexed), reverse=True)
