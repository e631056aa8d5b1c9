"""The run's splits in embedding space: every text embedded once by every teacher."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cellcube.config import Config
from cellcube.data.records import Split
from cellcube.embed.sharded import embed_sharded
from cellcube.objectives.multiteacher import TeacherView, standardize

SPLITS = ("train", "val", "test")


@dataclass
class EmbeddedSplit:
    """One split in embedding space.

    ``q``/``a``: (n, D) question and answer embeddings; ``answer_ids``: (n,) index of each row's
    answer in ``candidates`` (m, D), the split's distinct answers, in ``answers`` (texts) order.
    ``views``: the same split as seen by each non-primary teacher (multi-teacher distillation),
    by teacher label.
    """

    q: torch.Tensor
    a: torch.Tensor
    answer_ids: torch.Tensor
    candidates: torch.Tensor
    questions: list[str]
    answers: list[str]
    views: dict[str, TeacherView] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.q.shape[0]


def embed_splits(cfg: Config, split: Split, *, progress: bool = True) -> dict[str, EmbeddedSplit]:
    """Embed every split's questions and answers with every teacher, through the on-disk cache.

    Under ``torchrun`` every rank calls it with the same split: each embeds its shard of the
    texts and every rank gets all the embeddings (:func:`cellcube.embed.sharded.embed_sharded`).

    The primary teacher's embeddings fill each :class:`EmbeddedSplit`; every teacher of
    ``teachers.others`` adds a :class:`~cellcube.objectives.multiteacher.TeacherView` of the same
    rows (z-scored with train statistics when it has ``standardize``).
    """
    parts = {name: getattr(split, name) for name in SPLITS}
    texts = list(
        dict.fromkeys(t for ps in parts.values() for p in ps for t in (p.question, p.answer))
    )
    row = {t: i for i, t in enumerate(texts)}
    index = {}
    for name, ps in parts.items():
        answers = list(dict.fromkeys(p.answer for p in ps))
        index[name] = (
            [row[p.question] for p in ps],
            [row[p.answer] for p in ps],
            [row[t] for t in answers],
            answers,
        )
    spaces = [
        torch.from_numpy(embed_sharded(texts, t, cfg.cache, progress=progress))
        for t in (cfg.teacher, *cfg.teachers.others)
    ]
    vectors, others = spaces[0], spaces[1:]
    out = {}
    for name, ps in parts.items():
        qi, ai, ci, answers = index[name]
        aid = {t: i for i, t in enumerate(answers)}
        out[name] = EmbeddedSplit(
            q=vectors[qi],
            a=vectors[ai],
            answer_ids=torch.tensor([aid[p.answer] for p in ps], dtype=torch.long),
            candidates=vectors[ci],
            questions=[p.question for p in ps],
            answers=answers,
        )
    for t, space in zip(cfg.teachers.others, others, strict=True):
        views = {
            name: TeacherView(space[qi], space[ai], space[ci])
            for name, (qi, ai, ci, _) in index.items()
        }
        if t.standardize:
            views = standardize(views)
        for name, view in views.items():
            out[name].views[t.label] = view
    return out
