"""Test-only instrumentation of a cellcube process for the fault-injection tests.

Installed in a child process (by ``sitecustomize.py`` or ``forkserver.py``) when
``CELLCUBE_FAULT_LOG`` is set; never part of the product. It

* appends ``<pid> epoch <model> <n>`` to the fault log when a model starts training epoch ``n``,
  and ``<pid> save <file>`` when a checkpoint's temporary file is complete but not yet renamed
  over its target (that is: inside :func:`cellcube.io.atomic_open`, at its ``fsync``);
* sleeps ``CELLCUBE_FAULT_SLOW_SAVE_S`` seconds (default 0) at that point, to widen the
  checkpoint-writing window so that a kill can land inside it reliably.
"""

from __future__ import annotations

import os
import time

_installed = False


def _log(line: str) -> None:
    path = os.environ.get("CELLCUBE_FAULT_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {line}\n".encode())
        finally:
            os.close(fd)


def install() -> None:
    """Patch ``os.fsync`` (checkpoint temp files only) and ``MapperModule.on_train_epoch_start``."""
    global _installed
    if _installed:
        return
    _installed = True
    from cellcube.train.fit import MapperModule

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if ".ckpt." in name and name.endswith(".tmp"):
            _log(f"save {name}")
            time.sleep(float(os.environ.get("CELLCUBE_FAULT_SLOW_SAVE_S", "0")))

    os.fsync = fsync

    def on_train_epoch_start(self: MapperModule) -> None:
        _log(f"epoch {self.name} {self.current_epoch}")

    MapperModule.on_train_epoch_start = on_train_epoch_start  # type: ignore[method-assign]
