"""The report page's sections computed on the test split: wins and losses against ``identity``,
the cube at work (the lattice after every step, and the MRR each step reaches), and a 2D map of
where the predictions move. The numbers come from :mod:`cellcube.report.analysis`.
"""

from __future__ import annotations

import torch

from cellcube.embed.splits import EmbeddedSplit
from cellcube.models.cube import Cube
from cellcube.report import analysis, figures
from cellcube.report.markup import esc, para, section, table

N_MOVES = 6
"""Questions shown where the cube moved the true answer up the most (and as many down)."""
N_LATTICE = 3
"""Test questions whose lattice is drawn step by step."""
N_SPREAD = 64
"""Test questions whose states give the "depends on the question" picture."""
N_MAP = 200
"""Test questions on the 2D map."""


def _answers(items: list[tuple[str, float]], truth: str) -> str:
    """An ordered list of answers with scores; the true answer in bold."""
    rows = "".join(
        f"<li>{'<b>' if text == truth else ''}{esc(text)}{'</b>' if text == truth else ''} "
        f"<small>[{score:.3f}]</small></li>"
        for text, score in items
    )
    return f"<ol>{rows}</ol>"


def _moves_table(
    indices: list[int], changes: analysis.RankChanges, test: EmbeddedSplit, k: int = 3
) -> str:
    if not indices:
        return para("None.")
    ids = torch.tensor(indices)
    ident = analysis.top_answers(test.q[ids], test, k)
    cube = analysis.top_answers(changes.pred[ids], test, k)
    rows = []
    for row, i in enumerate(indices):
        truth = test.answers[int(test.answer_ids[i])]
        rows.append(
            [
                esc(test.questions[i]),
                esc(truth),
                f"{int(changes.identity[i])} → {int(changes.cube[i])}",
                _answers(ident[row], truth),
                _answers(cube[row], truth),
            ]
        )
    head = ["question", "true answer", "rank: identity → cube", "identity top-3", "cube top-3"]
    return table(head, rows, numeric=[2])


def wins_section(changes: analysis.RankChanges, test: EmbeddedSplit, seed: int) -> str:
    """How the true answer's rank changes from identity to the cube: a histogram over the test
    questions, counts, and the questions it moved up and down the most."""
    moved = changes.moved_up
    up, same, down = int((moved > 0).sum()), int((moved == 0).sum()), int((moved < 0).sum())
    best, worst = analysis.largest_moves(changes, N_MOVES, seed)
    summary = (
        f"Of {len(moved):,} test questions the cube ranks the true answer "
        f'<span class="up">higher than identity for {up:,}</span>, the same for {same:,}, and '
        f'<span class="down">lower for {down:,}</span>. Identity is the question embedding '
        "itself; ranks are among all distinct test answers."
    )
    return section(
        "wins",
        "Wins and losses against identity",
        para(summary),
        figures.rank_change_histogram(moved),
        f"<h3>Moved up the most ({len(best)})</h3>",
        _moves_table(best, changes, test),
        f"<h3>Moved down the most ({len(worst)})</h3>",
        _moves_table(worst, changes, test),
        para(
            f"<small>Largest changes of log2 rank; ties in a random order seeded with {seed}."
            "</small>"
        ),
    )


def cube_section(
    cube: torch.nn.Module, changes: analysis.RankChanges, test: EmbeddedSplit, seed: int
) -> str:
    """The cube at work: test MRR after each step, the question-dependent part of the lattice
    after each step, and the lattice of a few test questions step by step.

    The step curve needs a model with ``steps`` whose forward takes ``steps=t``; the lattice
    pictures a plain :class:`~cellcube.models.cube.Cube` (a cube variant wrapping one, e.g. a
    refinement of a linear map, gets the curve and a note)."""
    title = "The cube at work"
    if not isinstance(getattr(cube, "steps", None), int):
        return section("cube", title, para("This run's cube has no steps to show."))
    if not isinstance(cube, Cube):
        kind = type(cube).__name__
        note = f"The lattice pictures are drawn for a plain cube; this run's is a {kind}."
        return section("cube", title, _steps_part(cube, changes, test), para(esc(note)))
    x, y, z = cube.reshaper.lattice
    intro = (
        f"A {x}×{y}×{z} lattice, {cube.steps} steps of one shared cell rule. "
        f"Reshaper <b>{esc(cube.reshaper.mode)}</b>"
        + (
            ": the embedding enters the input face (z=0) and is read from the output face "
            f"(z={z - 1}); a signal crosses one layer per step."
            if cube.reshaper.mode == "faces"
            else "."
        )
    )
    return section(
        "cube",
        title,
        para(intro),
        _steps_part(cube, changes, test),
        _lattice_part(cube, changes, test, seed),
    )


def _steps_part(cube: torch.nn.Module, changes: analysis.RankChanges, test: EmbeddedSplit) -> str:
    """The test MRR read out after each step, beside identity's, as a curve and a table."""
    mrr = analysis.step_mrr(cube, test)
    identity = (1.0 / changes.identity.double()).mean().item()
    rows = [
        [str(t), f"{m:.3f}", "-" if t == 0 else f"{m - mrr[t - 1]:+.3f}"] for t, m in enumerate(mrr)
    ]
    return "".join(
        [
            "<h3>What each step adds: test MRR read out after t steps</h3>",
            '<div class="row">',
            figures.step_curve(mrr, identity, cube.steps),
            table(["steps t", "test MRR", "change"], rows),
            "</div>",
            para(f"Identity: {identity:.3f}. The same weights, stopped after t steps."),
        ]
    )


def _lattice_part(cube: Cube, changes: analysis.RankChanges, test: EmbeddedSplit, seed: int) -> str:
    """The spread of the states over a sample of test questions after each step, and the state
    norms of the first few of them, step by step."""
    picks = analysis.sample(len(test), N_SPREAD, seed)
    trace = analysis.lattice_trace(cube, test.q[torch.tensor(picks)])
    parts = [
        "<h3>Where the lattice depends on the question</h3>",
        para(
            f"Per cell, the spread (standard deviation over {len(picks)} test questions, norm "
            "over channels) of its state after each step: zero where every question leaves "
            "the same state."
        ),
        figures.lattice_grid(
            trace.spread, trace.spread.max().item() or 1.0, "spread over questions", "spread"
        ),
        "<h3>The lattice of single questions, step by step</h3>",
        para("Per cell, the norm of its state; one colour scale for every picture."),
    ]
    vmax = trace.norms[:, :N_LATTICE].max().item() or 1.0
    for b, i in enumerate(picks[:N_LATTICE]):
        ranks = f"rank of the true answer: identity {int(changes.identity[i])}, "
        ranks += f"cube {int(changes.cube[i])}"
        title = f"“{test.questions[i][:70]}” ({ranks})"
        parts.append(figures.lattice_grid(trace.norms[:, b], vmax, title, "state norm"))
    return "".join(parts)


def map_section(changes: analysis.RankChanges, test: EmbeddedSplit, seed: int) -> str:
    """A PCA map of a sample of test questions, the cube's predictions and the true answers."""
    picks = torch.tensor(analysis.sample(len(test), N_MAP, seed))
    truth = test.candidates[test.answer_ids[picks]]
    q, p, a = analysis.pca_2d(test.q[picks], changes.pred[picks], truth)
    return section(
        "map",
        "Where the predictions move",
        para(
            f"{len(picks)} test questions (seeded sample), the cube's prediction for each and "
            "its true answer, on the first two principal components of all three (unit "
            "vectors). Lines join a question to its prediction."
        ),
        figures.pca_map(q, p, a),
    )
