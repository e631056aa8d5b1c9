"""kill -9 during training, checkpoint writing and everything else; then --resume to the end.

A tiny config (2x2x2 lattice, 6 epochs, cube + mlp + 0-step cube, ``fire_rate=0.5`` so the RNG
matters) trains on 120 real zaragoza pairs with a pre-filled embedding cache. An uninterrupted run
is the reference. Then runs are SIGKILLed at seeded random events (the n-th epoch start, the n-th
checkpoint write between its fsync and its rename, or the n-th write of another run file: config,
pairs, DONE, ridge, plot, report) and resumed with ``--resume`` (or started again when the kill
came before ``config.yaml`` existed) until they finish. The instrumented child stops at each event
until the test releases it (``faultkit/patches.py``), so every kill lands exactly where it was
aimed: no timing, no sleeps; pytest-timeout bounds every wait. After every kill: every ``.ckpt``
loads with :func:`cellcube.train.checkpoints.load_checkpoint`, every ``report.json`` /
``pairs.jsonl`` / ``config.yaml`` present parses, and at most one epoch of the model in training
is lost. At the end: no ``.tmp`` file is left and every test metric equals the reference within
1e-6.

One kill hits a real ``python -m cellcube train`` subprocess (instrumented through
``faultkit/sitecustomize.py``); the others hit children of ``faultkit/forkserver.py``, which runs
the same CLI entry point in forked processes so that each cycle does not pay 5-20 s of imports.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import _reliability
from _reports import assert_same_model_metrics
from cellcube.config import TRAINED_MODELS
from cellcube.data import load_builtin
from cellcube.train.checkpoints import load_checkpoint
from faultkit.patches import release_file

pytestmark = [pytest.mark.fault, pytest.mark.slow]

FAULTKIT = Path(__file__).parent / "faultkit"
KILLS = 12  # kill points over all chains (>= 10 required)
PER_CHAIN = 6  # kills before a chain is allowed to finish
MODELS = TRAINED_MODELS
TINY = [
    "cube.lattice=[2,2,2]",
    "cube.channels=4",
    "cube.hidden=8",
    "cube.steps=2",
    "cube.fire_rate=0.5",
    "train.epochs=6",
    "train.batch_size=16",
    "train.progress=false",
    "train.patience=100",
]


def _env(log: Path, pause: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(FAULTKIT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        CELLCUBE_FAULT_LOG=str(log),
        CELLCUBE_FAULT_PAUSE="1" if pause else "0",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


class ForkServer:
    """Client of ``faultkit/forkserver.py``: start CLI children, kill them, collect statuses."""

    def __init__(self, log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(FAULTKIT / "forkserver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(log, pause=False),
            text=True,
            bufsize=1,
        )
        assert json.loads(self._readline()) == {"ready": True}

    def _readline(self) -> str:
        """The server's next line (blocking: pytest-timeout bounds the wait)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "fork server died"
        return line

    def start(
        self, args: list[str], cwd: Path, output: Path, fsize: int = 0, pause: bool = False
    ) -> int:
        """Start a child running ``cellcube`` with ``args``; its pid."""
        assert self.proc.stdin is not None
        request = {"args": args, "cwd": str(cwd), "output": str(output), "fsize": fsize}
        self.proc.stdin.write(json.dumps({**request, "pause": pause}) + "\n")
        return int(json.loads(self._readline())["pid"])

    def finished(self) -> int | None:
        """The exit status of the running child if it has ended, else None (does not wait)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 0)
        return self.wait() if ready else None

    def wait(self) -> int:
        """The exit status of the running child, once it ends."""
        return int(json.loads(self._readline())["status"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def _events(log: Path, pid: int) -> list[list[str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == str(pid):
            out.append(parts[1:])
    return out


def _train_args(run: Path, data: Path, cache: Path) -> list[str]:
    """``--resume`` once the run's config exists (else the kill came first: start again)."""
    if (run / "config.yaml").exists():
        return ["train", "--resume", "--out", str(run)]
    args = ["train", "--out", str(run), "--set", f"data.path={data}"]
    args += ["--set", f"cache.path={cache}"]
    for item in TINY:
        args += ["--set", item]
    return args


def _check_files(run: Path) -> dict[str, int]:
    """Everything a killed run left must be whole: checkpoints, report, pairs, config."""
    counts = {"ckpt": 0, "json": 0}
    for ckpt in run.rglob("*.ckpt"):
        load_checkpoint(ckpt)  # raises CheckpointError on a torn or foreign file
        counts["ckpt"] += 1
    if (run / "report.json").exists():
        json.loads((run / "report.json").read_text())
        counts["json"] += 1
    if (run / "pairs.jsonl").exists():
        for line in (run / "pairs.jsonl").read_text().splitlines():
            json.loads(line)
        counts["json"] += 1
    if (run / "config.yaml").exists():
        assert isinstance(yaml.safe_load((run / "config.yaml").read_text()), dict)
    return counts


def _lost_epochs(run: Path, events: list[list[str]]) -> int:
    """Epochs of work the kill threw away: last epoch started minus last epoch checkpointed."""
    started = [(e[1], int(e[2])) for e in events if e[0] == "epoch"]
    if not started:
        return 0
    model, epoch = started[-1]
    if (run / "models" / model / "DONE").exists():
        return 0
    last = run / "models" / model / "checkpoints" / "last.ckpt"
    saved = int(load_checkpoint(last)["epoch"]) if last.exists() else -1
    return epoch - saved


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "report.json").read_text())["models"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    with (root / "pairs.jsonl").open("w") as fh:
        for p in load_builtin("zaragoza")[:120]:
            fh.write(json.dumps({"question": p.question, "answer": p.answer}) + "\n")
    return root


def _kill_plan(rng: random.Random) -> tuple[str, int]:
    """Which event to kill at: the n-th epoch start, checkpoint save or other file write."""
    kind = rng.choice(["epoch", "save", "save", "write"])
    return kind, rng.randint(1, 6 if kind == "write" else 8)


def _drive(
    log: Path, pid: int, stop_at: Callable[[list[str]], bool], done: Callable[[], bool]
) -> bool:
    """Release a paused child event by event until ``stop_at(event)`` (then leave it paused there
    and return True) or ``done()`` (it ended; False). Waits by polling the fault log."""
    released = 0
    while True:
        if done():
            return False
        events = _events(log, pid)
        for k in range(released, len(events)):
            if stop_at(events[k]):
                return True
            release_file(log, pid, k).touch()
        released = len(events)
        time.sleep(0.01)


def _run_until_killed(
    server: ForkServer, rng: random.Random, run: Path, ws: Path, log: Path, kill: bool
) -> tuple[int, str, list[list[str]]]:
    """Start one child and kill it at its planned event (``kill``) or let it finish.

    Returns (exit status, the plan, the child's fault-log events).
    """
    out = ws / "child.log"
    args = _train_args(run, ws / "pairs.jsonl", ws / "cache.sqlite")
    if not kill:
        pid = server.start(args, ws, out)
        return server.wait(), "none", _events(log, pid)
    kind, target = _kill_plan(rng)
    pid = server.start(args, ws, out, pause=True)
    seen = [0]
    status: list[int] = []

    def stop_at(event: list[str]) -> bool:
        seen[0] += event[0] == kind
        return seen[0] == target

    def done() -> bool:
        ended = server.finished()
        if ended is not None:
            status.append(ended)
        return ended is not None

    if not _drive(log, pid, stop_at, done):
        return status[0], f"{kind}:{target} (finished first)", _events(log, pid)
    os.kill(pid, signal.SIGKILL)
    return server.wait(), f"{kind}:{target}", _events(log, pid)


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[ForkServer]:
    srv = ForkServer(workspace / "fault.log")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def reference(workspace: Path, server: ForkServer) -> dict[str, Any]:
    """Test metrics of one uninterrupted run (it also fills the embedding cache for the rest)."""
    ws = workspace
    ref = ws / "reference"
    pid = server.start(_train_args(ref, ws / "pairs.jsonl", ws / "cache.sqlite"), ws, ws / "r")
    assert server.wait() == 0, (ws / "r").read_text()[-3000:]
    assert sum(e[0] == "epoch" for e in _events(ws / "fault.log", pid)) == 6 * len(MODELS)
    return _metrics(ref)


def _assert_same_metrics(run: Path, reference: dict[str, Any]) -> None:
    assert_same_model_metrics(_metrics(run), reference, abs_tol=1e-6)


@pytest.mark.timeout(900)
def test_disk_full_is_one_line_and_resumable(
    workspace: Path, server: ForkServer, reference: dict[str, Any]
) -> None:
    """Files capped at 100 kB (checkpoints are ~180 kB): one error line, nothing torn, and
    ``--resume`` finishes the run once there is room again."""
    ws, run, out = workspace, workspace / "full", workspace / "full.log"
    server.start(_train_args(run, ws / "pairs.jsonl", ws / "cache.sqlite"), ws, out, 100_000)
    assert server.wait() == 2
    text = out.read_text()  # the child's stdout (progress lines) and stderr
    err = text.strip().splitlines()[-1]
    assert err.startswith("error: ") and text.count("error") == 1 and "Traceback" not in text
    assert ".ckpt: cannot write (File too large)" in err, err
    assert not list(run.rglob("*.tmp"))
    _check_files(run)
    out.unlink()
    server.start(_train_args(run, ws / "pairs.jsonl", ws / "cache.sqlite"), ws, out)
    assert server.wait() == 0, out.read_text()[-3000:]
    _assert_same_metrics(run, reference)
    _reliability.record("disk_full", error_lines=1, torn_files=0, resumed_to_equal_metrics=True)


@pytest.mark.timeout(1800)
def test_kill9_at_random_points_then_resume(
    workspace: Path, server: ForkServer, reference: dict[str, Any]
) -> None:
    ws, log = workspace, workspace / "fault.log"
    rng = random.Random(20260401)
    started = time.monotonic()
    stats = {"kill_points": 0, "during_checkpoint_write": 0, "subprocess_kills": 0}
    stats |= {"resumes": 0, "checkpoints_checked": 0, "max_epochs_lost": 0, "chains": 0}

    # One kill of a real `python -m cellcube train` subprocess, inside a checkpoint write.
    run = ws / "chain0"
    args = _train_args(run, ws / "pairs.jsonl", ws / "cache.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellcube", *args],
        cwd=ws,
        env=_env(log, pause=True),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stopped = _drive(log, proc.pid, lambda e: e[0] == "save", lambda: proc.poll() is not None)
    assert stopped, "the subprocess ended before its first checkpoint save"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert list(run.rglob(".*.ckpt.*.tmp")), "the kill must land inside a save"
    stats |= {"subprocess_kills": 1, "kill_points": 1, "during_checkpoint_write": 1}
    stats["checkpoints_checked"] += _check_files(run)["ckpt"]
    assert _lost_epochs(run, _events(log, proc.pid)) <= 1

    chain, in_chain = 0, 1
    while True:
        kill = in_chain < PER_CHAIN and stats["kill_points"] < KILLS
        status, plan, events = _run_until_killed(server, rng, run, ws, log, kill)
        if status == -signal.SIGKILL:
            stats["kill_points"] += 1
            in_chain += 1
            if list(run.rglob(".*.ckpt.*.tmp")):
                stats["during_checkpoint_write"] += 1
            stats["checkpoints_checked"] += _check_files(run)["ckpt"]
            lost = _lost_epochs(run, events)
            assert lost <= 1, (plan, lost)
            stats["max_epochs_lost"] = max(stats["max_epochs_lost"], lost)
            stats["resumes"] += 1
            continue
        assert status == 0, (plan, (ws / "child.log").read_text()[-3000:])
        # Finished: nothing torn or stray, same numbers as the uninterrupted run.
        _check_files(run)
        assert not list(run.rglob("*.tmp")), list(run.rglob("*.tmp"))
        _assert_same_metrics(run, reference)
        stats["chains"] += 1
        if stats["kill_points"] >= KILLS:
            break
        chain += 1
        in_chain = 0
        run = ws / f"chain{chain}"
        assert chain < 5, "too many chains finished before their kill points"
    assert stats["during_checkpoint_write"] >= 3, stats
    stats["seconds"] = round(time.monotonic() - started, 1)
    _reliability.record("kill9_resume", **stats)
