"""Data inspection: what is in a set of pairs, measured, with plots and a short Markdown summary.

``cellcube data inspect`` reports, for any data the importers read (or an expanded file):

* counts: pairs, distinct questions and answers, originals vs synthetic variants, per domain,
  per pinned split;
* question and answer lengths in words (histograms);
* quality scores (histogram): the pairs' own ``quality`` (read from the file's ``quality`` field)
  when every pair has one (as ``cellcube data expand`` writes), else computed by the teacher
  (:func:`cellcube.data.quality.quality_scores`);
* duplicates: exact (repeated question with different answers, repeated answers) and near
  (question pairs at teacher cosine >= ``near_threshold``), with examples;
* the teacher's identity baseline: MRR and Recall@k of retrieving each pair's answer among all
  distinct answers by cosine with the question (what the cube has to beat).

Cost grows linearly with the pairs. The relevance score and the identity baseline compare each
question with a pool of candidate answers: every distinct answer up to :data:`POOL` pairs; above
it the pairs are cut into seeded groups of at most :data:`POOL` (:func:`answer_pools`) and each
question is scored among its group's answers, so a corpus of any size costs ``n * POOL`` dot
products rather than ``n * n`` (the summary records the pools). Near duplicates are found
exactly up to :data:`NEAR_EXACT_MAX` questions, then through a FAISS inverted-file index
(:func:`near_duplicates`).

Outputs under ``--out``: ``summary.md``, ``summary.json``, ``lengths.png``, ``quality.png``,
``domains.png``; every file is written atomically.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellcube.data.quality import Embedder, quality_scores, unit_rows
from cellcube.data.records import QAPair
from cellcube.decode import index as ann
from cellcube.errors import DataError
from cellcube.eval.metrics import rank_metrics
from cellcube.eval.similarity import pairs_above, true_ranks, unit
from cellcube.io import atomic_open, write_json, write_text

__all__ = [
    "NEAR_EXACT_MAX",
    "NEAR_NPROBE",
    "POOL",
    "answer_pools",
    "inspect_pairs",
    "near_duplicates",
    "render_markdown",
    "write_inspection",
]

POOL = 8192
"""Most pairs whose distinct answers form one candidate pool (relevance, identity baseline)."""

NEAR_EXACT_MAX = 20_000
"""Most questions searched exactly for near duplicates; more go through a FAISS index."""

NEAR_NPROBE = 4
"""Lists of the near-duplicate index each question scans. Near duplicates (cosine >= 0.95) sit
in the same or a neighbouring list: on the first 20,000 and 100,000 chitchat questions the index
found every pair the exact search finds (6,212 and 142,978), at 100,000 in 21 s against the
exact search's 287 s (one thread)."""


POOL_SEED = 0
"""Seeds the grouping of pairs into pools: the same pairs always get the same pools."""


def answer_pools(n: int, pool: int = POOL) -> list[np.ndarray]:
    """The pairs ``0 .. n-1`` in candidate pools: one pool of every pair up to ``pool`` pairs;
    above, a seeded permutation cut into ``ceil(n / pool)`` groups of near-equal size, each
    sorted.

    Example::

        >>> [len(p) for p in answer_pools(10, pool=4)]
        [4, 3, 3]

    """
    if n <= pool:
        return [np.arange(n)]
    order = np.random.default_rng(POOL_SEED).permutation(n)
    return [np.sort(part) for part in np.array_split(order, -(-n // pool))]


def near_duplicates(vectors: torch.Tensor, threshold: float) -> list[tuple[float, int, int]]:
    """The pairs of rows ``i < j`` of ``vectors`` at cosine >= ``threshold``, as
    ``(cosine, i, j)``, most similar first (ties in row-major order).

    Up to :data:`NEAR_EXACT_MAX` rows every pair is compared, in blocks
    (:func:`cellcube.eval.similarity.pairs_above`); above, each row is searched in its
    :data:`NEAR_NPROBE` closest lists of a FAISS inverted-file index
    (:func:`cellcube.decode.index.build_index`, :func:`~cellcube.decode.index.pairs_within`) and
    the pairs found are scored exactly, so the result is the exact one less the pairs the index
    misses (none of 6,212 on 20,000 chitchat questions)."""
    v = unit(vectors)
    if len(v) <= NEAR_EXACT_MAX:
        i, j, cos = pairs_above(v, threshold)
    else:
        rows = v.numpy()
        index = ann.build_index(rows)
        ann.faiss_module().extract_index_ivf(index).nprobe = NEAR_NPROBE
        ij = torch.from_numpy(ann.pairs_within(index, rows, threshold - 1e-4))
        cos = (v[ij[:, 0]] * v[ij[:, 1]]).sum(dim=1)
        keep = cos >= threshold
        i, j, cos = ij[keep, 0], ij[keep, 1], cos[keep]
    found = zip(cos.tolist(), i.tolist(), j.tolist(), strict=True)
    return sorted(found, key=lambda t: -t[0])


def inspect_pairs(
    pairs: Sequence[QAPair],
    embed: Embedder,
    *,
    near_threshold: float = 0.95,
    ks: Sequence[int] = (1, 10),
    examples: int = 5,
) -> dict[str, Any]:
    """Measure ``pairs`` (see the module docstring); returns the summary as plain JSON data.

    ``embed`` turns texts into embeddings (the teacher). When every pair carries a ``quality``
    (read from its file), those are the quality scores; otherwise the teacher computes them.
    """
    if not pairs:
        raise DataError("nothing to inspect: no pairs")
    questions = [p.question for p in pairs]
    answers = list(dict.fromkeys(p.answer for p in pairs))
    texts = list(dict.fromkeys([*questions, *answers]))
    row = {t: i for i, t in enumerate(texts)}
    vecs = unit_rows(embed(texts))
    q = vecs[[row[t] for t in questions]]
    bank = vecs[[row[t] for t in answers]]
    a_row = {t: i for i, t in enumerate(answers)}
    aid = np.array([a_row[p.answer] for p in pairs])

    pools = answer_pools(len(pairs), POOL)
    from_file = all(p.quality is not None for p in pairs)
    quality = np.array([p.quality if from_file else 0.0 for p in pairs], dtype=np.float64)
    ranks, trues = [], []
    for members in pools:  # each pool: its questions among its distinct answers
        answers_here = np.unique(aid[members])  # one pool: every answer, in order
        local = np.searchsorted(answers_here, aid[members])
        if not from_file:
            quality[members] = quality_scores(
                q[members],
                local,
                bank[answers_here],
                [questions[i] for i in members],
                [pairs[i].answer for i in members],
            )["quality"]
        rank, true = true_ranks(
            torch.from_numpy(q[members]).float(),
            torch.from_numpy(bank[answers_here]).float(),
            torch.from_numpy(local).long(),
        )
        ranks.append(rank)
        trues.append(true)
    quality_source = "from the file's 'quality' field" if from_file else "computed by the teacher"
    identity = rank_metrics(torch.cat(ranks), torch.cat(trues), ks)

    q_counts = Counter(questions)
    a_counts = Counter(p.answer for p in pairs)
    near = near_duplicates(torch.from_numpy(q), near_threshold)
    near_examples = [
        {"a": questions[i], "b": questions[j], "cosine": round(cos, 4)}
        for cos, i, j in near[:examples]
    ]
    qlen = [len(t.split()) for t in questions]
    alen = [len(p.answer.split()) for p in pairs]
    return {
        "counts": {
            "pairs": len(pairs),
            "distinct_questions": len(q_counts),
            "distinct_answers": len(answers),
            "originals": sum(p.variant_of is None for p in pairs),
            "variants": sum(p.variant_of is not None for p in pairs),
            "per_domain": dict(Counter(p.domain or "(none)" for p in pairs).most_common()),
            "per_split": dict(Counter(p.split or "(not pinned)" for p in pairs).most_common()),
        },
        "lengths": {
            "question_words": _stats(qlen),
            "answer_words": _stats(alen),
            "question_hist": qlen,
            "answer_hist": alen,
        },
        "quality": {
            "source": quality_source,
            **_stats(quality.tolist()),
            "values": [round(float(x), 4) for x in quality],
            "lowest": [
                {"question": questions[i], "quality": round(float(quality[i]), 4)}
                for i in np.argsort(quality, kind="stable")[:examples]
            ],
        },
        "duplicates": {
            "questions_with_several_answers": sum(n > 1 for n in q_counts.values()),
            "answers_shared_by_several_questions": sum(n > 1 for n in a_counts.values()),
            "near_threshold": near_threshold,
            "near_duplicate_question_pairs": len(near),
            "near_examples": near_examples,
        },
        "identity_baseline": {k: round(v, 4) for k, v in identity.items()},
        "pools": {"count": len(pools), "largest": max(map(len, pools)), "pool": POOL},
    }


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(arr.min()), 4),
        "median": round(float(np.median(arr)), 4),
        "mean": round(float(arr.mean()), 4),
        "max": round(float(arr.max()), 4),
    }


def render_markdown(summary: dict[str, Any], title: str) -> str:
    """The short human summary (``summary.md``) of :func:`inspect_pairs`' result."""
    c, ln, qu = summary["counts"], summary["lengths"], summary["quality"]
    d, ib = summary["duplicates"], summary["identity_baseline"]
    pools = summary.get("pools", {"count": 1})
    among = "among all distinct answers"
    if pools["count"] > 1:
        among = (
            f"each among the answers of its pool: {pools['count']} seeded pools of at most "
            f"{pools['largest']} pairs; quality relevance likewise"
        )
    lines = [
        f"# Data inspection: {title}",
        "",
        f"- **{c['pairs']} pairs**: {c['distinct_questions']} distinct questions, "
        f"{c['distinct_answers']} distinct answers; {c['originals']} original, "
        f"{c['variants']} synthetic variants",
        "- per domain: " + ", ".join(f"{k} {v}" for k, v in c["per_domain"].items()),
        "- per split: " + ", ".join(f"{k} {v}" for k, v in c["per_split"].items()),
        f"- question words: median {ln['question_words']['median']:g}, max "
        f"{ln['question_words']['max']:g}; answer words: median "
        f"{ln['answer_words']['median']:g}, max {ln['answer_words']['max']:g} (`lengths.png`)",
        f"- quality ({qu['source']}): median {qu['median']:.3f}, mean {qu['mean']:.3f}, "
        f"min {qu['min']:.3f} (`quality.png`)",
        f"- duplicates: {d['questions_with_several_answers']} question(s) with several answers, "
        f"{d['answers_shared_by_several_questions']} answer(s) shared by several questions, "
        f"{d['near_duplicate_question_pairs']} near-duplicate question pair(s) "
        f"(teacher cosine >= {d['near_threshold']})",
        f"- teacher identity baseline (answer retrieval by cosine with the question, {among}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ib.items()),
    ]
    if d["near_examples"]:
        lines += ["", "Closest question pairs:", ""]
        lines += [f"- {e['cosine']:.3f}: {e['a']!r} / {e['b']!r}" for e in d["near_examples"]]
    if qu["lowest"]:
        lines += ["", "Lowest quality:", ""]
        lines += [f"- {e['quality']:.4f}: {e['question']!r}" for e in qu["lowest"]]
    return "\n".join(lines) + "\n"


def write_inspection(summary: dict[str, Any], out: Path, title: str) -> list[Path]:
    """Write ``summary.md``, ``summary.json`` and the three PNG plots into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ln, qu, c = summary["lengths"], summary["quality"], summary["counts"]

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        with atomic_open(out / name, "wb") as fh:
            fh.write(buf.getvalue())
        written.append(out / name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, label in zip(
        axes, ("question_hist", "answer_hist"), ("question", "answer"), strict=True
    ):
        ax.hist(ln[key], bins=30, color="tab:blue")
        ax.set_xlabel(f"{label} length (words)")
        ax.set_ylabel("pairs")
    fig.tight_layout()
    save(fig, "lengths.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(qu["values"], bins=20, range=(0, 1), color="tab:green")
    ax.set_xlabel(f"quality ({qu['source']})")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    save(fig, "quality.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(c["per_domain"])
    ax.barh(names[::-1], [c["per_domain"][n] for n in names[::-1]], color="tab:orange")
    ax.set_xlabel("pairs")
    fig.tight_layout()
    save(fig, "domains.png")

    slim = {
        **summary,
        "lengths": {k: v for k, v in ln.items() if not k.endswith("_hist")},
        "quality": {k: v for k, v in qu.items() if k != "values"},
    }
    write_json(out / "summary.json", slim)
    write_text(out / "summary.md", render_markdown(summary, title))
    return [*written, out / "summary.json", out / "summary.md"]
