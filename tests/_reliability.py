"""Counts produced by the fault-injection and fuzz tests, gathered into one JSON report.

Each test calls :func:`record` with what it actually did (kill points, examples, files checked);
the entries are merged into ``reliability_report.json`` in pytest's temporary base directory (or
in ``$CELLCUBE_RELIABILITY_REPORT`` when set), and ``conftest.py`` prints its path and contents
at the end of the session. The "Faults the test suite injects" table of docs/reliability.md
quotes this report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_REPORT: dict[str, dict[str, Any]] = {}
_PATH: list[Path] = []


def configure(default: Path) -> None:
    """Set where the report goes (called once per session by conftest)."""
    _PATH[:] = [Path(os.environ.get("CELLCUBE_RELIABILITY_REPORT", default))]


def record(name: str, **counts: Any) -> None:
    """Store ``counts`` under ``name`` and rewrite the report file."""
    _REPORT[name] = counts
    if _PATH:
        _PATH[0].parent.mkdir(parents=True, exist_ok=True)
        _PATH[0].write_text(json.dumps(_REPORT, indent=2, sort_keys=True) + "\n")


def summary() -> tuple[Path | None, dict[str, dict[str, Any]]]:
    """The report path and its entries (empty when no reliability test ran)."""
    return (_PATH[0] if _PATH else None), dict(_REPORT)
