"""Loaded by every Python process started with this directory on PYTHONPATH (test-only).

When ``CELLCUBE_FAULT_LOG`` is set, installs :mod:`patches` (fault log and slow checkpoint
saves) so a ``python -m cellcube train`` subprocess can be killed inside checkpoint writing.
"""

import os

if os.environ.get("CELLCUBE_FAULT_LOG"):
    import patches

    patches.install()
