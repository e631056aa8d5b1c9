"""The study's results file: one JSON line per finished run, keyed so an interrupted study resumes.

A run's key is (corpus, seed, fold, train size, variant name, hash of its overrides);
:func:`read_results` reads the file (tolerating a torn last line), :func:`append_result` appends
one row under a lock (cutting off a torn last line first), :func:`pending` keeps the runs that
have no row yet.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cellcube.errors import CellcubeError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "study" / "results.jsonl"
KEY_FIELDS = ("corpus", "seed", "fold", "train_size", "variant", "overrides_hash")


class Keyed(Protocol):
    """Anything with a run key (a :class:`benchmarks.study.Run`)."""

    @property
    def key(self) -> tuple: ...


K = TypeVar("K", bound=Keyed)


def overrides_hash(overrides: Sequence[str]) -> str:
    """The first 12 hex digits of the SHA-256 of the overrides list (order matters)."""
    return hashlib.sha256(json.dumps(list(overrides)).encode()).hexdigest()[:12]


def row_key(row: dict[str, Any]) -> tuple:
    """A results row's key, comparable with :attr:`benchmarks.study.Run.key`."""
    return tuple(row.get(k) for k in KEY_FIELDS)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file. A torn last line (a process killed mid-write) is ignored with
    a warning; any other line that is not a JSON object is a CellcubeError naming file and line.
    A key seen twice keeps its first row."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows, seen = [], set()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            if i == len(lines):  # no newline after it: the write was cut short
                warnings.warn(f"{path}:{i}: ignoring a torn last line", stacklevel=2)
                continue
            raise CellcubeError(f"{path}:{i}: not a JSON object ({exc})") from None
        if row_key(row) in seen:
            warnings.warn(
                f"{path}:{i}: run {row_key(row)} repeated; keeping the first", stacklevel=2
            )
            continue
        seen.add(row_key(row))
        rows.append(row)
    return rows


def append_result(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` as one line: locked, a single write, flushed and fsync'ed. A torn last line
    left by a killed writer is cut off first, so the file stays one JSON object per line."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(0)
            data = fh.read()
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                warnings.warn(f"{path}: cutting off a torn last line", stacklevel=2)
                fh.truncate(keep)
        fh.seek(0, os.SEEK_END)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def pending(runs: Iterable[K], rows: Iterable[dict[str, Any]]) -> list[K]:
    """The runs whose key has no row yet (each key once)."""
    done = {row_key(r) for r in rows}
    out = []
    for run in runs:
        if run.key not in done:
            done.add(run.key)
            out.append(run)
    return out
