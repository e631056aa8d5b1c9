"""Embedding -> embedding maps: the cube and the baselines beside it.

* :mod:`~cellcube.models.cube`: the model (reshaper, cell rule, cube).
* :mod:`~cellcube.models.lattice`: where a cell's neighbours are.
* :mod:`~cellcube.models.cones`: the cells a ``faces`` cube can skip.
* :mod:`~cellcube.models.kernels`: the in-place inference path.
* :mod:`~cellcube.models.baselines`: the reference models every report includes.
"""

from cellcube.models.cube import CellRule, Cube, Reshaper

__all__ = ["CellRule", "Cube", "Reshaper"]
