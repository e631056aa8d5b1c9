"""Test-only instrumentation of a cellcube process for the fault-injection tests.

Installed in a child process (by ``sitecustomize.py`` or ``forkserver.py``) when
``CELLCUBE_FAULT_LOG`` is set; never part of the product. It WRAPS product code (the wrapped
function still runs, first) and

* appends ``<pid> epoch <model> <n>`` to the fault log when a model starts training epoch ``n``
  (after :meth:`MapperModule.on_train_epoch_start`, the hook that re-mines hard negatives, ran),
  ``<pid> save <file>`` when a checkpoint's temporary file is complete but not yet renamed over
  its target (inside :func:`cellcube.io.atomic_open`, right after its ``fsync``), and
  ``<pid> write <file>`` at the same point for every other file of the run (config, pairs,
  DONE markers, ridge, plot, report);
* with ``CELLCUBE_FAULT_PAUSE=1``, stops at each of these events until the test releases it:
  event ``k`` (counted from 0 per process) waits for the file ``<fault log>.<pid>.<k>.go``. A
  test therefore kills the process exactly at the event it chose (a readiness signal, not a
  timed guess) and releases every other one.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

_installed = False
_events = [0]  # events logged by this process (the pause counter)


def release_file(log: Path, pid: int, event: int) -> Path:
    """The file that lets process ``pid`` go on past its ``event``-th logged event."""
    return log.parent / f"{log.name}.{pid}.{event}.go"


def _event(line: str) -> None:
    """Log ``line``; with pausing on, wait until the test releases (or kills) this process."""
    path = os.environ.get("CELLCUBE_FAULT_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {line}\n".encode())
    finally:
        os.close(fd)
    k = _events[0]
    _events[0] += 1
    if os.environ.get("CELLCUBE_FAULT_PAUSE") == "1":
        go = release_file(Path(path), os.getpid(), k)
        while not go.exists():  # polled; the test's pytest-timeout bounds the wait
            time.sleep(0.005)


def install() -> None:
    """Wrap ``os.fsync`` (checkpoint temp files only) and ``MapperModule.on_train_epoch_start``."""
    global _installed
    if _installed:
        return
    _installed = True
    from cellcube.train.module import MapperModule

    real_fsync = os.fsync

    @functools.wraps(real_fsync)
    def fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if name.endswith(".tmp"):
            _event(f"{'save' if '.ckpt.' in name else 'write'} {name}")

    os.fsync = fsync

    real_epoch_start = MapperModule.on_train_epoch_start

    @functools.wraps(real_epoch_start)
    def on_train_epoch_start(self: MapperModule) -> None:
        real_epoch_start(self)
        _event(f"epoch {self.name} {self.current_epoch}")

    MapperModule.on_train_epoch_start = on_train_epoch_start  # type: ignore[method-assign]
