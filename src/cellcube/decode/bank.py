"""Decoder: embedding -> text, by nearest neighbour over a phrase bank of answers.

The cube outputs an embedding in the teacher's space; the decoder returns the bank phrases whose
teacher embeddings have the highest cosine similarity to it. The bank is the run's answer texts
or a user file (``.txt``: one phrase per line; ``.jsonl``: the ``answer`` field of each record).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from cellcube.data.pairs import load_pairs
from cellcube.errors import DataError


class PhraseBank:
    """Distinct phrases with their (L2-normalised) teacher embeddings."""

    def __init__(self, phrases: Sequence[str], embeddings: torch.Tensor) -> None:
        if len(phrases) != embeddings.shape[0]:
            raise ValueError("phrases and embeddings differ in length")
        if not phrases:
            raise DataError("phrase bank is empty")
        self.phrases = list(phrases)
        self.embeddings = F.normalize(embeddings.float(), dim=-1)

    def search(self, queries: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` phrases and cosine scores for each row of ``queries`` (n, D), best first."""
        scores = F.normalize(queries.float(), dim=-1) @ self.embeddings.T
        top = scores.topk(min(k, len(self.phrases)), dim=-1)
        return [
            [(self.phrases[i], s) for i, s in zip(idx.tolist(), val.tolist(), strict=True)]
            for idx, val in zip(top.indices, top.values, strict=True)
        ]


def read_bank_file(path: str | Path) -> list[str]:
    """Distinct phrases from a ``.txt`` file (one per line) or a Q&A file's answers."""
    p = Path(path)
    if p.suffix.lower() != ".txt":
        return list(dict.fromkeys(pair.answer for pair in load_pairs(p)))
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
