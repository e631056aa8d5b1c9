"""The numbers behind the report page, computed on the run's test split (this is evaluation).

* :func:`rank_changes`: the rank of every test question's true answer under ``identity`` (the
  question embedding itself) and under the cube, among the test split's distinct answers,
  exactly as :func:`cellcube.eval.evaluate.evaluate` ranks them.
* :func:`largest_moves`: the questions whose true answer the cube moved up (or down) the most.
* :func:`step_mrr`: the cube's test MRR read out after each step ``0..T`` of its forward pass.
* :func:`lattice_trace`: the lattice after every step, as per-cell state norms.
* :func:`pca_2d`: a 2D map (PCA) of questions, predictions and true answers.

Samples are drawn with a ``torch.Generator`` seeded from the run's seed, so the page of a run is
the same every time it is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cellcube.embed.splits import EmbeddedSplit
from cellcube.eval.metrics import retrieval_metrics
from cellcube.eval.similarity import topk_cosine, true_ranks, unit
from cellcube.models.cube import Cube


@dataclass(frozen=True)
class RankChanges:
    """Per test question: the true answer's rank under identity and under the cube (1 = first),
    and the cube's prediction ``(n, D)``."""

    identity: torch.Tensor
    cube: torch.Tensor
    pred: torch.Tensor

    @property
    def moved_up(self) -> torch.Tensor:
        """``log2(identity rank / cube rank)``: > 0 where the cube moved the true answer up."""
        return torch.log2(self.identity.double()) - torch.log2(self.cube.double())


def rank_changes(cube: torch.nn.Module, test: EmbeddedSplit) -> RankChanges:
    """Identity's and the cube's rank of every test question's true answer."""
    with torch.inference_mode():
        pred = cube(test.q)
    identity, _ = true_ranks(test.q, test.candidates, test.answer_ids)
    ranks, _ = true_ranks(pred, test.candidates, test.answer_ids)
    return RankChanges(identity, ranks, pred)


def largest_moves(changes: RankChanges, n: int, seed: int) -> tuple[list[int], list[int]]:
    """The ``n`` questions whose true answer the cube moved up the most, and the ``n`` it moved
    down the most (by :attr:`RankChanges.moved_up`; ties in a seeded random order). Questions
    whose rank did not change are in neither list."""
    moved = changes.moved_up
    order = torch.randperm(len(moved), generator=torch.Generator().manual_seed(seed))
    ranked = order[torch.sort(moved[order], descending=True, stable=True).indices].tolist()
    up = [i for i in ranked if moved[i] > 0][:n]
    down = [i for i in reversed(ranked) if moved[i] < 0][:n]
    return up, down


def top_answers(
    queries: torch.Tensor, test: EmbeddedSplit, k: int
) -> list[list[tuple[str, float]]]:
    """The ``k`` test answers nearest (cosine) to each query row, with their scores."""
    scores, indices = topk_cosine(queries, test.candidates, k)
    return [
        [(test.answers[i], s) for i, s in zip(idx, val, strict=True)]
        for idx, val in zip(indices.tolist(), scores.tolist(), strict=True)
    ]


def step_mrr(cube: torch.nn.Module, test: EmbeddedSplit) -> list[float]:
    """The cube's test MRR with its output read after ``t`` steps, for ``t = 0 .. cube.steps``
    (``cube(e, steps=t)``: the same weights, stopped early; a :class:`Cube` or a model built
    around one that takes ``steps`` the same way)."""
    with torch.inference_mode():
        return [
            retrieval_metrics(cube(test.q, steps=t), test.answer_ids, test.candidates)["mrr"]
            for t in range(cube.steps + 1)
        ]


@dataclass(frozen=True)
class LatticeTrace:
    """The lattice of a few questions after every step.

    ``norms``: ``(T+1, B, X, Y, Z)``, the L2 norm of each cell's state after step ``t`` (row 0:
    the encoded input); ``spread``: ``(T+1, X, Y, Z)``, the norm over channels of the standard
    deviation of each cell's state over the ``B`` questions: where the lattice holds something
    that depends on the question. ``output``: ``(B, D)``, the read-out of the last state.
    """

    norms: torch.Tensor
    spread: torch.Tensor
    output: torch.Tensor


def lattice_trace(cube: Cube, e: torch.Tensor) -> LatticeTrace:
    """Run the cube on embeddings ``e`` ``(B, D)`` one step at a time over the whole lattice
    (``Reshaper.encode``, ``Cube.step`` ``T`` times, ``Reshaper.decode``): the states the light
    cone lets :meth:`Cube.forward` skip are computed too, so every cell is shown. Under
    ``cube.clamp`` the input face is rewritten after every step, as the forward pass does."""
    norms, spread = [], []
    with torch.inference_mode():
        x0 = x = cube.reshaper.encode(e)
        for t in range(cube.steps + 1):
            if t:
                x = cube.step(x)
                if getattr(cube, "clamp", False):
                    x = cube.reshaper.clamp(x, x0)
            norms.append(x.norm(dim=-1))
            spread.append(x.std(dim=0, correction=0).norm(dim=-1))
        output = cube.reshaper.decode(x, e)
    return LatticeTrace(torch.stack(norms), torch.stack(spread), output)


def pca_2d(*groups: torch.Tensor) -> list[torch.Tensor]:
    """Each group of embeddings ``(n_i, D)`` (unit-normalised) projected on the first two
    principal components of all groups together: ``(n_i, 2)`` each."""
    rows = torch.cat([unit(g) for g in groups])
    centred = rows - rows.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    flat = centred @ vh[:2].T
    return list(flat.split([g.shape[0] for g in groups]))


def sample(n: int, size: int, seed: int) -> list[int]:
    """A seeded sample of ``min(size, n)`` distinct indices of ``range(n)``, in ascending order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:size].tolist())
