"""Answering questions with a trained run: text -> teacher -> cube -> nearest phrases.

Example::

    from pathlib import Path
    from cellcube.decode.answer import Answerer

    answerer = Answerer.load(Path("runs/demo"))
    for text, score in answerer.ask(["What is a building permit?"], k=3)[0]:
        print(f"[{score:.3f}] {text}")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cellcube.config import Config
from cellcube.decode.bank import PhraseBank, read_bank_file
from cellcube.embed.encode import embed
from cellcube.embed.splits import SPLITS
from cellcube.embed.teachers import Teacher, load_teacher
from cellcube.errors import DataError
from cellcube.run.rundir import RunDir


@dataclass
class Answerer:
    """A trained run ready to answer: the run's teacher and cube, and a phrase bank.

    ``cfg`` is the run's config, ``teacher`` encodes the questions, ``model`` (the cube, from its
    best checkpoint) maps them to predicted answer embeddings, and ``bank`` holds the candidate
    answers with their teacher embeddings.
    """

    cfg: Config
    teacher: Teacher
    model: torch.nn.Module
    bank: PhraseBank

    @classmethod
    def load(cls, run_dir: Path, bank_file: str | Path | None = None) -> Answerer:
        """The answerer of run directory ``run_dir``.

        The bank is ``bank_file`` (``.txt`` one phrase per line, or a Q&A ``.jsonl``/``.csv``)
        or, by default, every distinct answer of the run's pairs; its texts are embedded through
        the run's embedding cache.
        """
        run = RunDir(Path(run_dir))
        cfg = run.read_config()
        teacher = load_teacher(cfg.teacher)
        if bank_file is not None:
            phrases = read_bank_file(bank_file)
        else:
            split = run.read_pairs()
            phrases = list(dict.fromkeys(p.answer for n in SPLITS for p in getattr(split, n)))
        vectors = torch.from_numpy(embed(phrases, teacher, cfg.cache))
        model = run.load_model("cube", cfg, vectors.shape[1])
        return cls(cfg, teacher, model, PhraseBank(phrases, vectors))

    def ask(self, questions: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """The top-``k`` bank phrases with their cosine scores, for each question, best first."""
        if any(not q.strip() for q in questions):
            raise DataError("question is empty")
        q = torch.from_numpy(self.teacher.encode(list(questions)))
        with torch.inference_mode():
            return self.bank.search(self.model(q), k)
