"""How good a question/answer pair is, measured with the teacher: relevance times length sanity.

Shared by :mod:`cellcube.data.expand` (which writes the score into each record and can filter on
it) and :mod:`cellcube.data.inspect` (which plots it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from cellcube.eval.similarity import dot_blocks

__all__ = ["Embedder", "length_factor", "quality_scores", "unit_rows"]

Embedder = Callable[[list[str]], np.ndarray]
"""Texts -> (n, D) float embeddings (e.g. the teacher through the cache)."""


def _ramp(n: int, low: int, high: int, zero_at: int) -> float:
    """1 on ``[low, high]``, linear down to 0 at ``low - 1 -> 0 words`` and at ``zero_at``."""
    if n < low:
        return max(0.0, n / low) if low > 0 else 1.0
    if n <= high:
        return 1.0
    return max(0.0, 1.0 - (n - high) / max(zero_at - high, 1))


def length_factor(question: str, answer: str) -> float:
    """Length sanity in [0, 1]: questions of 2-40 words and answers of 3-120 words score 1.

    Shorter texts fall linearly towards 0 words, longer ones linearly to 0 at 120 / 400 words;
    an answer equal to its question scores 0 (it answers nothing).
    """
    if question.strip().lower() == answer.strip().lower():
        return 0.0
    nq, na = len(question.split()), len(answer.split())
    return min(_ramp(nq, 2, 40, 120), _ramp(na, 3, 120, 400))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` in float64 with every row scaled to unit L2 norm.

    The data stage's scores and thresholds are float64 numbers written to 4 decimals;
    :func:`cellcube.eval.similarity.unit` works in float32, which moves some of them in the last
    written digit, so expansion and inspection normalise here.
    """
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def quality_scores(
    q: np.ndarray,
    answer_ids: np.ndarray,
    bank: np.ndarray,
    questions: Sequence[str],
    answers: Sequence[str],
    temperature: float = 0.05,
) -> dict[str, np.ndarray]:
    """Per-pair ``relevance``, ``length_factor`` and ``quality`` (their product), all in [0, 1].

    Args:
        q: (n, D) question embeddings.
        answer_ids: (n,) each pair's answer row in ``bank``.
        bank: (m, D) embeddings of the distinct answers.
        questions: the pairs' question texts.
        answers: the pairs' answer texts.
        temperature: softmax temperature on the cosine.

    ``relevance`` is the softmax over the bank of ``cos(q, bank) / temperature`` at the true
    answer (1 when one answer is the only match, 1/m when all fit alike); ``length_factor`` is
    :func:`length_factor` of the texts.
    """
    relevance = np.empty(len(q))
    keys = torch.from_numpy(unit_rows(bank))
    for start, block in dot_blocks(torch.from_numpy(unit_rows(q)), keys):  # O(block * m) memory
        sims = block.numpy() / temperature
        sims -= sims.max(axis=1, keepdims=True)
        probs = np.exp(sims)
        probs /= probs.sum(axis=1, keepdims=True)
        rows = slice(start, start + len(sims))
        relevance[rows] = probs[np.arange(len(sims)), np.asarray(answer_ids)[rows]]
    lengths = np.array([length_factor(a, b) for a, b in zip(questions, answers, strict=True)])
    return {"relevance": relevance, "length_factor": lengths, "quality": relevance * lengths}
