"""The report page's pictures: matplotlib figures (Agg) as inline base64 PNG ``<img>`` tags.

Every function returns a complete ``<img>`` element whose ``src`` is a ``data:`` URL, so the page
needs no other file, no script and no network.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import torch

DPI = 80
"""Resolution of every figure: readable, and a page of a few hundred kB."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` element showing the PNG bytes ``png``, inline."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure_tag(fig: Any, alt: str) -> str:
    """The matplotlib figure ``fig`` as an inline PNG ``<img>``; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return png_tag(buffer.getvalue(), alt)


def rank_change_histogram(moved_up: torch.Tensor) -> str:
    """Histogram of ``log2(identity rank / cube rank)`` over the test questions: bars right of 0
    are questions whose true answer the cube ranks higher than identity does."""
    plt = _pyplot()
    values = moved_up.clamp(-8, 8).numpy()
    fig, ax = plt.subplots(figsize=(7, 3))
    bins = [b / 2 - 0.25 for b in range(-16, 18)]
    ax.hist(values[values > 0], bins=bins, color="#2a9d4b", label="cube ranks it higher")
    ax.hist(values[values < 0], bins=bins, color="#c8453c", label="cube ranks it lower")
    ax.hist(values[values == 0], bins=bins, color="#999999", label="same rank")
    ax.set(
        xlabel="log2(identity rank / cube rank) of the true answer (clipped to ±8)",
        ylabel="test questions",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_tag(fig, "histogram of the change in rank of the true answer")


def step_curve(mrr: Sequence[float], identity: float, trained_steps: int) -> str:
    """The cube's test MRR read out after each step, with identity's MRR as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(mrr)), mrr, marker="o", label="cube, read out after t steps")
    ax.axhline(identity, color="grey", linestyle="--", label="identity")
    ax.axvline(trained_steps, color="#cccccc", linewidth=6, zorder=0, label="trained steps")
    ax.set(xlabel="steps t", ylabel="test MRR", xticks=range(len(mrr)))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_tag(fig, "test MRR after each step")


def spread_indices(n: int, at_most: int) -> list[int]:
    """At most ``at_most`` indices of ``range(n)``, evenly spaced, first and last included."""
    if n <= at_most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def lattice_grid(cells: torch.Tensor, vmax: float, title: str, label: str) -> str:
    """One row per step, one column per ``z`` slice (input face z=0 on the left, output face
    on the right) of ``cells`` ``(T+1, X, Y, Z)``, on the fixed colour scale ``[0, vmax]``.
    Long runs and deep lattices show at most 9 steps and 8 slices, evenly spaced."""
    plt = _pyplot()
    steps = spread_indices(cells.shape[0], 9)
    slices = spread_indices(cells.shape[3], 8)
    fig, axes = plt.subplots(
        len(steps),
        len(slices),
        figsize=(1.1 * len(slices) + 1.2, 1.1 * len(steps) + 0.6),
        squeeze=False,
    )
    image = None
    for r, t in enumerate(steps):
        for c, z in enumerate(slices):
            ax = axes[r][c]
            image = ax.imshow(cells[t, :, :, z].numpy(), vmin=0, vmax=vmax, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"z={z}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"step {t}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6, label=label)
    return figure_tag(fig, title)


def pca_map(question: torch.Tensor, pred: torch.Tensor, answer: torch.Tensor) -> str:
    """2D map: each question (grey), the cube's prediction for it (orange, joined to its
    question) and its true answer (blue)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for q, p in zip(question.tolist(), pred.tolist(), strict=True):
        ax.plot([q[0], p[0]], [q[1], p[1]], color="#f4a261", linewidth=0.6, alpha=0.6)
    ax.scatter(*question.T.numpy(), s=10, color="#888888", label="question (identity)")
    ax.scatter(*pred.T.numpy(), s=10, color="#e76f51", label="cube prediction")
    ax.scatter(*answer.T.numpy(), s=10, color="#264653", marker="x", label="true answer")
    ax.set(xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_tag(fig, "PCA map of questions, predictions and answers")
