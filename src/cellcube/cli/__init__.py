"""The `cellcube` command line."""

from cellcube.cli.main import main

__all__ = ["main"]
