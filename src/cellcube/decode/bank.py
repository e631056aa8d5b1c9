"""Decoder: embedding -> text, by nearest neighbour over a phrase bank of answers.

The cube outputs an embedding in the teacher's space; the decoder returns the bank phrases whose
teacher embeddings have the highest cosine similarity to it. The bank is the run's answer texts
or a user file (``.txt``: one phrase per line; any data file :func:`cellcube.data.read_path`
reads: the answers of its pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cellcube.data.readers import read_path
from cellcube.errors import DataError
from cellcube.eval.similarity import topk_cosine, unit


class PhraseBank:
    """Distinct phrases with their (L2-normalised) teacher embeddings."""

    def __init__(self, phrases: Sequence[str], embeddings: torch.Tensor) -> None:
        if len(phrases) != embeddings.shape[0]:
            raise ValueError("phrases and embeddings differ in length")
        if not phrases:
            raise DataError("phrase bank is empty")
        self.phrases = list(phrases)
        self.embeddings = unit(embeddings)

    def search(self, queries: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` phrases and cosine scores for each row of ``queries`` (n, D), best first."""
        scores, indices = topk_cosine(queries, self.embeddings, k)
        return [
            [(self.phrases[i], s) for i, s in zip(idx, val, strict=True)]
            for idx, val in zip(indices.tolist(), scores.tolist(), strict=True)
        ]


def read_bank_file(path: str | Path) -> list[str]:
    """Distinct phrases from a ``.txt`` file (one per line), else the answers of a data file or
    directory read strictly by :func:`cellcube.data.read_path`."""
    p = Path(path)
    if p.suffix.lower() != ".txt":
        return list(dict.fromkeys(pair.answer for pair in read_path(p)[0]))
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: invalid UTF-8 at byte {exc.start}") from None
    phrases = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not phrases:
        raise DataError(f"{p}: no phrases found")
    return phrases
