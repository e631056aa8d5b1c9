"""Answering questions with a trained run: text -> teacher -> cube -> nearest phrases.

Example::

    from pathlib import Path
    from cellcube.decode.answer import Answerer

    answerer = Answerer.load(Path("runs/demo"))
    for text, score in answerer.ask(["What is a building permit?"], k=3)[0]:
        print(f"[{score:.3f}] {text}")

Load once, answer many: :meth:`Answerer.answer` also gives the identity baseline's top-1 (the
bank phrase nearest to the question embedding itself), what ``cellcube ask`` shows beside the
cube's answers when the two differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cellcube.config import Config
from cellcube.decode.bank import PhraseBank, read_bank_file, stored_bank
from cellcube.embed.splits import SPLITS
from cellcube.embed.teachers import Teacher, load_teacher
from cellcube.errors import DataError
from cellcube.run.rundir import RunDir


@dataclass(frozen=True)
class Answer:
    """One question's answers: the cube's top-k bank phrases and the identity baseline's top-1,
    each as ``(text, cosine)``, best first."""

    question: str
    cube: list[tuple[str, float]]
    identity: tuple[str, float]

    @property
    def agree(self) -> bool:
        """Whether the cube's top answer is identity's."""
        return self.cube[0][0] == self.identity[0]

    @property
    def margin(self) -> float | None:
        """The cube's confidence: its top-1 minus top-2 cosine (None with one answer). In the
        study this margin predicts a top-1 miss better than the spread of stochastic passes
        (docs/study.md, plan variants)."""
        return self.cube[0][1] - self.cube[1][1] if len(self.cube) > 1 else None

    def to_json(self) -> dict[str, Any]:
        """The answer as plain data (what ``cellcube ask --json`` prints, one line each)."""
        return {
            "question": self.question,
            "cube": [{"text": t, "score": s} for t, s in self.cube],
            "identity": {"text": self.identity[0], "score": self.identity[1]},
            "agree": self.agree,
            "margin": self.margin,
        }


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
        or, by default, every distinct answer of the run's pairs; its texts are embedded once
        through the run's embedding cache and stored under ``RUN_DIR/bank/`` (docs/scale.md).
        """
        run = RunDir(Path(run_dir))
        cfg = run.read_config()
        teacher = load_teacher(cfg.teacher)
        if bank_file is not None:
            phrases = read_bank_file(bank_file)
        else:
            split = run.read_pairs()
            phrases = list(dict.fromkeys(p.answer for n in SPLITS for p in getattr(split, n)))
        bank = stored_bank(run.bank, phrases, teacher, cfg.cache)
        model = run.load_model("cube", cfg, bank.dim)
        return cls(cfg, teacher, model, bank)

    def ask(self, questions: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """The top-``k`` bank phrases with their cosine scores, for each question, best first."""
        return [answer.cube for answer in self.answer(questions, k)]

    def answer(self, questions: Sequence[str], k: int = 5) -> list[Answer]:
        """Each question's :class:`Answer`: the cube's top-``k`` and identity's top-1."""
        if any(not q.strip() for q in questions):
            raise DataError("question is empty")
        q = torch.from_numpy(self.teacher.encode(list(questions)))
        with torch.inference_mode():
            cube = self.bank.search(self.model(q), k)
        identity = self.bank.search(q, 1)
        return [
            Answer(text, answers, top[0])
            for text, answers, top in zip(questions, cube, identity, strict=True)
        ]

    def warm_up(self) -> None:
        """Load the teacher's weights now rather than at the first question (an interactive
        session then answers its first line as fast as the others)."""
        self.teacher.encode([])
