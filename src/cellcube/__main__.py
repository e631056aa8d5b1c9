"""``python -m cellcube`` runs the CLI (also what ``torchrun -m cellcube`` launches)."""

import sys

from cellcube.cli.main import main

sys.exit(main())
