"""The light cone and the signal front: the cells a ``faces`` cube can skip without changing
anything.

Under the ``faces`` reshaper with zero walls only the input face (z = 0) depends on the
embedding and only the output face (z = Z-1) is read, and a cell influences the cell above it one
step later. Two regions of the lattice therefore need no per-embedding computation:

* **Light cone.** At step ``t`` of ``T``, the layers ``z < Z - (T - t)`` can no longer reach the
  output face: they are skipped and dropped (the lattice shrinks from the bottom).
* **Signal front.** The layers above the input face start empty, so after ``t`` steps the layers
  ``z > t`` hold the same states for every embedding (the rule applied to zeros). They are
  computed once per batch (batch size 1), and only the layers up to the front per embedding.

Skipping them leaves the output and every gradient those of the full update of every cell
(tested against it). The plan applies when the signal can reach the output face
(``steps >= Z - 1``) and every embedding follows the same rule, i.e. not under stochastic firing.
:func:`propagate` runs a plan with any step function: the readable rule in training, the
in-place kernels (:mod:`cellcube.models.kernels`) at inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Plan = list[tuple[range, range]]

Step = Callable[[torch.Tensor, int, "int | None", "torch.Tensor | None"], torch.Tensor]
"""``step(x, start, stop, top)``: the new states of the layers ``[start, stop)`` of ``x``
``(B, X, Y, Z, C)``, with ``top`` ``(1, X, Y, T, C)`` stacked on it (see
:func:`cellcube.models.lattice.lattice_rows`), as a ``(B, X, Y, stop - start, C)`` tensor."""


def update_plan(depth: int, steps: int, cones: bool) -> Plan:
    """The ``z`` layers each step updates: ``(per embedding, once for the whole batch)``.

    Without ``cones``, or when ``steps < depth - 1`` (the signal never reaches the output face),
    every step updates every layer for every embedding. With them, a step updates, for each
    embedding, the layers the input signal has reached that can still reach the output face,
    and once for the batch the layers above the signal front that can. Layers absent from both
    are never computed again.

    Example (depth 4, 4 steps): ``own`` grows from the input face and the light cone cuts it
    from below; ``shared`` is what lies above the front::

        >>> [(list(own), list(shared)) for own, shared in update_plan(4, 4, cones=True)]
        [([0, 1], [2, 3]), ([1, 2], [3]), ([2, 3], []), ([3], [])]
    """
    if not cones or steps < depth - 1:
        return [(range(depth), range(depth, depth))] * steps
    own, shared = range(0, 1), range(1, depth)  # the input face; the empty layers above it
    plan = []
    for t in range(steps):
        first = max(0, depth - (steps - t))  # the lowest layer that can still reach the output
        # the signal front moves up one layer per step: the first shared layer joins `own`
        new_own = range(max(own.start, first), min(own.stop + 1, depth))
        new_shared = range(max(shared.start + bool(own), first), depth) if shared else shared
        plan.append((new_own, new_shared))
        own, shared = new_own, new_shared
    return plan


def propagate(
    face: torch.Tensor, depth: int, steps: int, step: Step, shared_step: Step | None = None
) -> torch.Tensor:
    """The output face ``(B, X, Y, 1, C)`` after ``steps`` updates of a lattice whose input face
    is ``face`` ``(B, X, Y, 1, C)`` and whose other ``depth - 1`` layers start empty.

    Follows :func:`update_plan` (``steps >= depth - 1``): ``x`` holds each embedding's own
    layers, ``above`` the layers above the signal front, once for the batch. When the front
    moves up, the first two shared layers are stacked on ``x`` (``top``) so that the layer
    joining ``x`` reads its neighbours above. ``shared_step`` updates ``above`` (default:
    ``step``).
    """
    shared_step = shared_step or step
    own, shared = range(0, 1), range(1, depth)
    x = face
    above = face.new_zeros(1, *face.shape[1:3], depth - 1, face.shape[4]) if shared else None
    for new_own, new_shared in update_plan(depth, steps, cones=True):
        top = above[:, :, :, :2] if new_own.stop > own.stop else None
        new_x = step(x, new_own.start - own.start, new_own.stop - own.start, top)
        new_above = None
        if new_shared:
            new_above = shared_step(above, new_shared.start - shared.start, None, None)
        x, above, own, shared = new_x, new_above, new_own, new_shared
    return x
