"""Hard-negative mining from the TRAIN answer bank, plus random negatives.

For every training pair the miner keeps the ``hard`` train answers closest (by cosine) to a
query vector, never the pair's own answer (the bank holds each distinct answer text once, so a
duplicate text is the answer itself). The query is, with ``mine_by``:

* ``prediction`` (default): the model's current prediction for the pair's question, re-mined
  every ``refresh_every`` epochs: the answers the model *currently* confuses with the true one
  (ANCE-style), which is what makes a refresh meaningful.
* ``answer``: the true answer's teacher embedding: answers that resemble the true one. The
  teacher is frozen, so this set is mined once and never changes.

Each batch then gets, per row, its mined ids plus ``random`` uniformly drawn other train
answers, drawn from a generator seeded by ``(seed, epoch, batch)``: runs are deterministic and
resumption is exact. The mined ids and the epoch they were mined at are buffers, so they are
saved in and restored from Lightning checkpoints. Validation and test answers are never in the
bank.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cellcube.eval.similarity import cosine_blocks, unit


class NegativeMiner(nn.Module):
    """Mined hard negatives and random negatives for the rows of a training split.

    Args:
        bank: (m, D) the train split's distinct answer embeddings; ids index its rows.
        answer_ids: (n,) each training pair's answer id.
        hard: mined negatives per pair (capped at m - 1).
        random: random negatives per pair (0 when the bank has a single answer).
        refresh_every: re-mine when this many epochs have passed since the last mining.
        mine_by: ``prediction`` or ``answer`` (see the module docstring).
        seed: seeds the random negatives together with epoch and batch index.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        answer_ids: torch.Tensor,
        *,
        hard: int,
        random: int,
        refresh_every: int,
        mine_by: Literal["prediction", "answer"],
        seed: int,
    ) -> None:
        super().__init__()
        m = bank.shape[0]
        self.hard = min(hard, m - 1)
        self.random = random if m > 1 else 0
        self.refresh_every, self.mine_by, self.seed = refresh_every, mine_by, seed
        self.register_buffer("answers", bank, persistent=False)  # as given: what mining ranks
        self.register_buffer("bank", unit(bank), persistent=False)  # unit rows: the negatives
        self.register_buffer("answer_ids", answer_ids.clone(), persistent=False)
        self.register_buffer("mined", torch.zeros(len(answer_ids), self.hard, dtype=torch.long))
        self.register_buffer("mined_at", torch.tensor(-1))

    def due(self, epoch: int) -> bool:
        """Whether mining is due at the start of ``epoch`` (never mined, or the period passed)."""
        if self.hard == 0:
            return False
        if self.mine_by == "answer":
            return int(self.mined_at) < 0
        return int(self.mined_at) < 0 or epoch - int(self.mined_at) >= self.refresh_every

    @torch.no_grad()
    def mine(self, queries: torch.Tensor, epoch: int) -> None:
        """Keep, per pair, the ``hard`` bank answers most similar to ``queries`` (n, D) row (by
        cosine, in blocks of rows: memory ``O(block * m)``), never the pair's own answer."""
        for start, sims in cosine_blocks(queries, self.answers):
            rows = slice(start, start + sims.shape[0])
            sims[torch.arange(sims.shape[0]), self.answer_ids[rows]] = -torch.inf
            self.mined[rows] = sims.topk(self.hard, dim=1).indices
        self.mined_at.fill_(epoch)

    def sample(self, rows: torch.Tensor, epoch: int, batch_idx: int) -> torch.Tensor:
        """(B, hard + random) negative answer ids for the training pairs ``rows`` (B,)."""
        own = self.answer_ids[rows]
        g = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 10_007 + batch_idx)
        high = max(self.bank.shape[0] - 1, 1)  # a one-answer bank draws nothing (random = 0)
        draw = torch.randint(0, high, (len(rows), self.random), generator=g)
        draw = draw.to(own.device)
        draw = draw + (draw >= own[:, None]).long()  # skip the row's own answer
        return torch.cat([self.mined[rows], draw], dim=1)
