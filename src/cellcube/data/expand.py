"""Data expansion: synthetic question variants, near-duplicate removal, quality scores, metadata.

``cellcube data expand`` turns a list of pairs into a larger JSONL file. Every step is measured
with the (frozen) teacher, never guessed:

1. **Candidates** (:mod:`cellcube.data.variants`): rule-based rephrasings that stay grammatical,
   from several strategies -- a lead-in before the unchanged question (``prefix``), an adverb
   after the question word (``adverb``: "What exactly is ..."), an indirect question
   (``embedded``: "Can you tell me what X is?"), an instruction (``imperative``: "Explain X."),
   a different question word (``question word``: "Why is X useful?" -> "What makes X
   useful?"), contractions and safe phrase synonyms (``wording``).
2. **Teacher-guided selection**: a candidate is kept only when its cosine with the source
   question is at least ``min_similarity`` (it still asks the same thing) and below
   ``max_similarity`` (it is not a near-duplicate of the source), and below ``max_similarity``
   with every question already kept (variants of one question, or of another source, do not
   repeat each other); candidates are taken closest-to-source first, up to ``variants`` each.
3. **Near-duplicate originals**: a pair whose question AND answer are both at cosine >=
   ``duplicate_threshold`` with an earlier pair's is removed.
4. **Quality** of each pair: ``relevance * length_factor``. ``relevance`` is the teacher's
   softmax probability of the pair's true answer among all distinct answers of the data
   (cosine / ``temperature``): high when the answer fits the question better than the other
   answers do, low when other answers fit as well or better. ``length_factor`` is 1 for texts of
   sane length and falls linearly to 0 for one-word questions, answers under 3 words, or
   texts far over the usual lengths (see :func:`cellcube.data.quality.length_factor`). Pairs
   under ``min_quality`` are removed (an original takes its variants with it).
5. **Curriculum metadata**: ``difficulty`` (teacher rank of the true answer among all answers,
   as a quantile: :func:`cellcube.objectives.curriculum.teacher_difficulty`), ``domain`` (from the
   source),
   ``complexity`` (:func:`complexity`: length and clause structure, in [0, 1]).

No leakage: a variant keeps its source's answer and records its source question in
``variant_of`` (and ``source_id``); :func:`cellcube.data.split.split_dataset` splits the original
pairs only and puts a variant in train when its source is in train, never in validation or test.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cellcube.data.quality import Embedder, quality_scores, unit_rows
from cellcube.data.records import QAPair
from cellcube.data.variants import template_variants
from cellcube.errors import DataError
from cellcube.eval.similarity import dot_blocks, pairs_above
from cellcube.objectives.curriculum import teacher_difficulty

__all__ = ["ExpandOptions", "ExpandReport", "complexity", "expand_pairs"]


@dataclass(frozen=True)
class ExpandOptions:
    """Knobs of :func:`expand_pairs` (defaults chosen by inspection of the tech corpus)."""

    variants: int = 3
    min_similarity: float = 0.75
    max_similarity: float = 0.98
    duplicate_threshold: float = 0.95
    min_quality: float = 0.0
    temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.variants < 0:
            raise DataError(f"variants must be >= 0, got {self.variants}")
        if not -1.0 <= self.min_similarity < self.max_similarity <= 1.0:
            raise DataError(
                "need -1 <= min_similarity < max_similarity <= 1, got "
                f"{self.min_similarity} and {self.max_similarity}"
            )
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise DataError(
                f"duplicate_threshold must be in (0, 1], got {self.duplicate_threshold}"
            )
        if not 0.0 <= self.min_quality <= 1.0:
            raise DataError(f"min_quality must be in [0, 1], got {self.min_quality}")
        if not self.temperature > 0:
            raise DataError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class ExpandReport:
    """Counts of what :func:`expand_pairs` generated, kept and removed, and why."""

    n_input: int = 0
    n_candidates: int = 0
    candidates_by_strategy: dict[str, int] = field(default_factory=dict)
    variants_by_strategy: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    n_duplicate_originals: int = 0
    n_below_quality: int = 0
    n_originals: int = 0
    n_variants: int = 0

    def summary(self) -> str:
        """One line for the user."""
        kept = ", ".join(f"{n} {s}" for s, n in sorted(self.variants_by_strategy.items()))
        rejected = ", ".join(f"{n} {r}" for r, n in sorted(self.rejected.items()))
        return (
            f"{self.n_input} input pairs -> {self.n_originals} originals + {self.n_variants} "
            f"variants ({kept or 'none'}); {self.n_candidates} candidates, rejected: "
            f"{rejected or 'none'}; {self.n_duplicate_originals} near-duplicate original(s) "
            f"and {self.n_below_quality} pair(s) below min_quality removed"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def complexity(question: str, answer: str) -> float:
    """Structural complexity in [0, 1]: mean of answer length (60 words = 1), question length
    (25 words = 1) and clause count of the answer (sentences + commas/semicolons, 8 = 1)."""
    na, nq = len(answer.split()), len(question.split())
    clauses = len(re.findall(r"[.!?;,](?:\s|$)", answer))
    return round((min(1.0, na / 60) + min(1.0, nq / 25) + min(1.0, clauses / 8)) / 3, 4)


# --------------------------------------------------------------------------------------------
# The expansion
# --------------------------------------------------------------------------------------------


Vector = Callable[[str], np.ndarray]
"""A text's unit-length teacher embedding (float64), looked up in the one batch embedded."""


def _candidates(sources: Sequence[QAPair], opt: ExpandOptions) -> list[tuple[int, str, str]]:
    """Every template candidate as ``(source index, strategy, text)``."""
    if not opt.variants:
        return []
    return [(i, s, t) for i, p in enumerate(sources) for s, t in template_variants(p.question)]


def _embed_all(embed: Embedder, texts: list[str]) -> Vector:
    """Embed ``texts`` in one call; returns the lookup of a text's unit vector."""
    row = {t: i for i, t in enumerate(texts)}
    vecs = unit_rows(embed(texts))
    if vecs.shape[0] != len(texts) or not np.isfinite(vecs).all():
        raise DataError("the embedder returned a wrong number of rows or non-finite values")
    return lambda text: vecs[row[text]]


MARGIN = 1e-4
"""Float32 search margin: pairs within it of a threshold are re-checked in float64."""


def _pairs_at_least(vecs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``i < j`` of the float64 unit rows ``vecs`` with cosine >= ``threshold``, as arrays
    ``(i, j)`` in row-major order: searched in float32 blocks
    (:func:`cellcube.eval.similarity.pairs_above`) with a margin, decided in float64."""
    i, j, _ = pairs_above(torch.from_numpy(vecs).float(), threshold - MARGIN)
    i, j = i.numpy(), j.numpy()
    hit = np.einsum("pd,pd->p", vecs[i], vecs[j]) >= threshold
    return i[hit], j[hit]


def _near_any(queries: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) whether each float64 unit row of ``queries`` has cosine >= ``threshold`` with some
    row of ``keys``: searched in float32 blocks with a margin, decided in float64."""
    near = np.zeros(len(queries), dtype=bool)
    if not len(keys):
        return near
    q32, k32 = torch.from_numpy(queries).float(), torch.from_numpy(keys).float()
    for start, block in dot_blocks(q32, k32):
        rows = start + (block.amax(dim=1) >= threshold - MARGIN).nonzero()[:, 0].numpy()
        for s, exact in dot_blocks(torch.from_numpy(queries[rows]), torch.from_numpy(keys)):
            near[rows[s : s + len(exact)]] = (exact >= threshold).any(dim=1).numpy()
    return near


def _distinct_originals(sources: Sequence[QAPair], v: Vector, threshold: float) -> list[int]:
    """Indices of the sources kept: a pair is dropped when its question AND answer are both at
    cosine >= ``threshold`` with an earlier kept pair's (greedy, in order; the candidate
    pairs are found in blocks, memory ``O(block * n)``)."""
    i, j = _pairs_at_least(np.stack([v(p.question) for p in sources]), threshold)
    answers = np.stack([v(p.answer) for p in sources])
    both = np.einsum("pd,pd->p", answers[i], answers[j]) >= threshold
    earlier: dict[int, list[int]] = {}
    for a, b in zip(i[both].tolist(), j[both].tolist(), strict=True):
        earlier.setdefault(b, []).append(a)
    kept = np.zeros(len(sources), dtype=bool)
    for b in range(len(sources)):
        kept[b] = not any(kept[a] for a in earlier.get(b, ()))
    return np.flatnonzero(kept).tolist()


def _rejection(sim: float, near_kept: bool, opt: ExpandOptions) -> str | None:
    """Why a candidate at cosine ``sim`` with its source is rejected, or None to keep it."""
    if sim < opt.min_similarity:
        return "too far from source"
    if sim >= opt.max_similarity:
        return "near-duplicate of source"
    if near_kept:
        return "near-duplicate of a kept question"
    return None


@dataclass
class _Candidates:
    """The candidates of the kept sources in selection order (per source, closest first) and
    their cosine with their source; for the ones that could be chosen (in ``[min_similarity,
    max_similarity)`` of their source), whether they are near a kept original and the earlier
    such candidates they are near."""

    order: list[tuple[int, str, str]]
    sim: np.ndarray
    near_original: np.ndarray
    near_earlier: dict[int, list[int]]


def _score_candidates(
    sources: Sequence[QAPair],
    keep: list[int],
    cands: list[tuple[int, str, str]],
    v: Vector,
    opt: ExpandOptions,
) -> _Candidates:
    """Every similarity :func:`_select_variants` needs, computed in blocks up front."""
    per_source: dict[int, list[tuple[int, str, str]]] = {}
    for c in cands:
        per_source.setdefault(c[0], []).append(c)
    order, sims = [], []
    for i in keep:
        src = v(sources[i].question)
        scored = sorted(per_source.get(i, []), key=lambda c: -float(src @ v(c[2])))
        order += scored
        sims += [float(src @ v(c[2])) for c in scored]
    sim = np.array(sims)
    vecs = np.stack([v(t) for _, _, t in order]) if order else np.zeros((0, 1))
    # only candidates in [min_similarity, max_similarity) of their source can be chosen
    open_ = np.flatnonzero((sim >= opt.min_similarity) & (sim < opt.max_similarity))
    originals = np.stack([v(sources[i].question) for i in keep])
    near_original = np.zeros(len(order), dtype=bool)
    near_original[open_] = _near_any(vecs[open_], originals, opt.max_similarity)
    near_earlier: dict[int, list[int]] = {}
    a, b = _pairs_at_least(vecs[open_], opt.max_similarity)
    for x, y in zip(open_[a].tolist(), open_[b].tolist(), strict=True):
        near_earlier.setdefault(y, []).append(x)
    return _Candidates(order, sim, near_original, near_earlier)


def _select_variants(
    sources: Sequence[QAPair],
    keep: list[int],
    cands: list[tuple[int, str, str]],
    v: Vector,
    opt: ExpandOptions,
) -> tuple[dict[int, list[tuple[str, str]]], Counter[str]]:
    """Teacher-guided selection: per kept source, candidates closest to it first, up to
    ``opt.variants``; returns the chosen ``(strategy, text)`` per source and rejection counts.

    A candidate is near a kept question when it is near a kept original or an earlier chosen
    candidate (the only questions kept before it)."""
    rejected: Counter[str] = Counter()
    by_source: dict[int, list[tuple[str, str]]] = {i: [] for i in keep}
    kept_texts = {sources[i].question for i in keep}
    c = _score_candidates(sources, keep, cands, v, opt)
    chosen = np.zeros(len(c.order), dtype=bool)
    for n, (i, strategy, text) in enumerate(c.order):
        if len(by_source[i]) >= opt.variants:
            continue
        if text in kept_texts:
            rejected["exact duplicate"] += 1
            continue
        near = c.near_original[n] or any(chosen[e] for e in c.near_earlier.get(n, ()))
        reason = _rejection(c.sim[n], bool(near), opt)
        if reason is not None:
            rejected[reason] += 1
            continue
        by_source[i].append((strategy, text))
        kept_texts.add(text)
        chosen[n] = True
    return by_source, rejected


def expand_pairs(
    pairs: Sequence[QAPair], embed: Embedder, options: ExpandOptions | None = None
) -> tuple[list[dict[str, Any]], ExpandReport]:
    """Expand ``pairs`` (see the module docstring); returns JSONL records and a report.

    Records come in input order, each original followed by its variants, with ``question``,
    ``answer``, ``domain``, ``source_id``, ``variant_of`` (None for originals), ``strategy``
    (``original`` or the variant's), ``relevance``, ``length_factor``, ``quality``,
    ``difficulty``, ``complexity``, and ``split`` when the source pins one. Input pairs that are
    themselves variants are treated as originals of their own.
    """
    opt = options or ExpandOptions()
    report = ExpandReport(n_input=len(pairs))
    if not pairs:
        raise DataError("nothing to expand: no pairs")
    sources = list(pairs)

    # 1. candidates, embedded together with every question and answer in one teacher call
    cands = _candidates(sources, opt)
    report.n_candidates = len(cands)
    report.candidates_by_strategy = dict(Counter(s for _, s, _ in cands))
    questions = [p.question for p in sources]
    answers = list(dict.fromkeys(p.answer for p in sources))
    v = _embed_all(embed, list(dict.fromkeys([*questions, *answers, *(t for _, _, t in cands)])))

    # 2. near-duplicate originals, 3. teacher-guided selection of variants
    keep = _distinct_originals(sources, v, opt.duplicate_threshold)
    report.n_duplicate_originals = len(sources) - len(keep)
    by_source, rejected = _select_variants(sources, keep, cands, v, opt)
    report.rejected = dict(rejected)

    # 4. quality of every kept pair, against all distinct answers of the kept originals
    items: list[tuple[int, str, str]] = []  # (source index, strategy, question text)
    for i in keep:
        items.append((i, "original", sources[i].question))
        items += [(i, s, t) for s, t in by_source[i]]
    bank_texts = list(dict.fromkeys(sources[i].answer for i in keep))
    bank_row = {t: j for j, t in enumerate(bank_texts)}
    q = np.stack([v(t) for _, _, t in items])
    aid = np.array([bank_row[sources[i].answer] for i, _, _ in items])
    bank = np.stack([v(t) for t in bank_texts])
    scores = quality_scores(
        q,
        aid,
        bank,
        [t for _, _, t in items],
        [sources[i].answer for i, _, _ in items],
        opt.temperature,
    )
    scores["difficulty"] = teacher_difficulty(
        torch.from_numpy(q).float(),
        torch.from_numpy(bank[aid]).float(),
        torch.from_numpy(aid).long(),
        torch.from_numpy(bank).float(),
    ).numpy()
    records = _records(sources, items, scores, opt.min_quality, report)
    return records, report


def _records(
    sources: Sequence[QAPair],
    items: list[tuple[int, str, str]],
    scores: dict[str, np.ndarray],
    min_quality: float,
    report: ExpandReport,
) -> list[dict[str, Any]]:
    """5. The records of ``items`` at or above ``min_quality`` (an original below it takes its
    variants along), counted into ``report``."""
    dropped_sources = {
        i
        for (i, s, _), qual in zip(items, scores["quality"], strict=True)
        if s == "original" and qual < min_quality
    }
    records: list[dict[str, Any]] = []
    strategies: Counter[str] = Counter()
    for k, (i, strategy, text) in enumerate(items):
        src = sources[i]
        if i in dropped_sources or scores["quality"][k] < min_quality:
            report.n_below_quality += 1
            continue
        original = strategy == "original"
        rec: dict[str, Any] = {
            "question": text,
            "answer": src.answer,
            "domain": src.domain,
            "source_id": f"s{i}",
            "variant_of": None if original else src.question,
            "strategy": strategy,
        }
        for name in ("relevance", "length_factor", "quality", "difficulty"):
            rec[name] = round(float(scores[name][k]), 4)
        rec["complexity"] = complexity(text, src.answer)
        if src.split is not None:
            rec["split"] = src.split
        records.append(rec)
        if original:
            report.n_originals += 1
        else:
            strategies[strategy] += 1
            report.n_variants += 1
    report.variants_by_strategy = dict(strategies)
    return records
