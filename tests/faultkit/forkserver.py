"""A fork server for the kill -9 tests: pay Python + torch + Lightning imports once.

Starting ``python -m cellcube train`` costs 5-20 s of imports on a small shared CPU, which would
make ten kill/resume cycles far too slow for CI. This process imports cellcube (and the test
instrumentation, :mod:`patches`) once, then for each JSON request on stdin,
``{"args": [...], "cwd": DIR, "output": FILE, "fsize": BYTES, "pause": BOOL}``, forks a child
that runs the real CLI entry point ``cellcube.cli.main.main(args)`` with stdout/stderr going to
FILE and exits with its status. It prints ``{"pid": PID}`` when the child starts and
``{"pid": PID, "status": S}`` when it ends (S: the exit code, or minus the signal number, e.g.
-9). ``fsize`` (optional) caps the size of any file the child writes (``RLIMIT_FSIZE``, SIGXFSZ
ignored so a write fails with EFBIG): a stand-in for a full disk. ``pause`` (optional): the
child stops at each fault-log event until the test releases it (see :mod:`patches`). The parent
never runs torch code, so forking is safe; each child is a separate process that the test kills
with SIGKILL.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning  # noqa: F401 - the expensive imports, done once
import patches

import cellcube.run.pipeline  # noqa: F401
from cellcube.cli.main import main


def _child(request: dict) -> None:
    os.chdir(request["cwd"])
    os.environ["CELLCUBE_FAULT_PAUSE"] = "1" if request.get("pause") else "0"
    if request.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
    fd = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        code = main(request["args"])
    except BaseException:  # escaped the CLI: a bug the test must see
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    patches.install()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"pid": pid, "status": code}), flush=True)


if __name__ == "__main__":
    serve()
