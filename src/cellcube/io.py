"""Crash-safe file writing.

All files cellcube produces (checkpoints, reports, resolved configs) are written to a temporary
file in the destination directory, flushed and fsync'ed, then moved over the target with
``os.replace``. A reader therefore sees either the old file or the complete new one, never a
partial write, and a failed write leaves no stray temporary file behind. A process killed by
``kill -9`` mid-write can leave a temporary file; :func:`remove_stale_temps` deletes those when
the run is resumed, under the run directory's :func:`run_lock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cellcube.errors import CellcubeError


def _umask() -> int:
    """The process umask (it can only be read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success, atomically replace ``path``.

    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"`` (binary). If the body raises, the temporary
    file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise CellcubeError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; give the usual umask-based mode
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CellcubeError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_open` leaves when its process is killed (-9).

    Only names of the form ``.NAME.XXXXXXXX.tmp`` (``mkstemp``'s 8 random characters) are
    removed. Call it only while holding the
    directory's :func:`run_lock`, so no live writer's temporary file is touched. Returns the
    removed paths.
    """
    removed: list[Path] = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for tmp in root.rglob(".*.tmp"):
        if tmp.is_file() and _TEMP_NAME.match(tmp.name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (a ``.NAME.lock`` file beside it) for the body.

    A second process using the same run directory fails at once with a CellcubeError instead
    of interleaving its writes with the first one's. The lock is an ``flock``, so the kernel
    releases it when its holder dies, even by ``kill -9``; the small lock file stays.
    """
    import fcntl

    target = Path(run_dir)
    lock = target.parent / f".{target.name}.lock"
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a+b")  # noqa: SIM115 - held for the duration of the body
    except OSError as exc:
        raise CellcubeError(
            f"{target}: cannot use as run directory ({exc.strerror or exc}: {exc.filename})"
        ) from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CellcubeError(
                f"{target}: in use by another cellcube process (lock {lock}); wait for it to "
                "finish or choose another --out"
            ) from None
        yield
    finally:
        fh.close()


def write_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``torch.save(obj)`` to ``path``.

    The object is serialised in memory first: ``torch.save`` into a file that fails mid-way
    (disk full) raises an opaque ``RuntimeError`` from its zip writer, whereas a plain write gives
    the OSError (ENOSPC, EFBIG) that :func:`atomic_open` turns into one clear CellcubeError.
    """
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())
