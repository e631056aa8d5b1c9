"""``python -m cellcube`` runs the CLI (also what ``torchrun -m cellcube`` launches)."""

import sys

from .cli import main

sys.exit(main())
