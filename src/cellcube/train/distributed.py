"""Multi-process data-parallel training under ``torchrun``: who this process is, and collectives.

cellcube never starts processes itself: ``torchrun --nproc_per_node=N -m cellcube train ...``
starts N copies of the command, each with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` in its environment. Every copy runs the whole pipeline; this module makes
them behave as ONE run:

* :func:`process_group` joins torchrun's process group (``gloo`` on CPU, ``nccl`` on GPU; see
  :func:`resolve_backend`) before anything else, so the pipeline can coordinate the ranks.
* :func:`on_rank_zero` runs a step on rank 0 only (reading and splitting the data, writing
  every file, evaluation) and hands its result to every rank; an exception on rank 0 is
  raised on every rank, so no rank is left waiting for the others.
* :func:`on_every_rank` runs a step on every rank (each its shard of the texts to embed) and
  raises on every rank if it failed on any; :func:`all_gather_rows` then hands every rank all
  ranks' rows as tensors (no pickle): :func:`cellcube.embed.sharded.embed_sharded`.
* :func:`trainer_kwargs` turns Lightning's Trainer into a DDP trainer, and
  :class:`~cellcube.train.datamodule.EpochSeededSampler` gives each rank its slice of every
  GLOBAL batch (``train.batch_size`` rows, ``batch_size / WORLD_SIZE`` per rank) of the same
  seeded permutation a single process uses.
* :func:`gather_batch` reassembles the global batch before the loss through Lightning's
  ``all_gather``, the model's predictions WITH their gradient (``sync_grads=True``: the
  backward sums every rank's gradient for each row). Every rank then computes
  the same loss over the global batch, exactly the single-process loss: InfoNCE sees all
  ``train.batch_size`` in-batch negatives, and mined and random negatives, curriculum weights and
  other teachers' targets are looked up by the global rows. Gradient scale: the gather's backward
  SUMS the ``WORLD_SIZE`` identical losses' gradients for the local rows, and DDP AVERAGES the
  parameter gradients over the ranks, so the update equals the single-process gradient of the
  global batch.

Not identical to one process: ``cube.fire_rate < 1``, whose random firing masks each rank draws
for its own rows. Without torchrun (``WORLD_SIZE`` unset or 1) every helper is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist

from cellcube.errors import CellcubeError, ConfigError, DataError

__all__ = [
    "AllGather",
    "PeerFailed",
    "all_gather_rows",
    "check_batch_size",
    "gather_batch",
    "in_process_group",
    "is_distributed",
    "is_rank_zero",
    "local_world_size",
    "on_every_rank",
    "on_rank_zero",
    "process_group",
    "rank",
    "resolve_backend",
    "skipped_step",
    "trainer_kwargs",
    "world_size",
]

T = TypeVar("T")

# How long a rank waits for the others at a collective (e.g. while rank 0 evaluates).
_TIMEOUT = timedelta(minutes=60)
# The group used for Python-object collectives (gloo: works whatever the training backend).
_control_group: Any = None


class PeerFailed(CellcubeError):
    """Raised on the other ranks when rank 0 failed (or will fail) a step; rank 0 reports it.

    ``quiet`` tells the CLI not to print it again on every rank.
    """

    quiet = True


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={raw!r} must be >= 0")
    return value


def world_size() -> int:
    """Number of processes of the run (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (torchrun's ``RANK``; 0 without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_world_size() -> int:
    """Processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", world_size()))


def is_distributed() -> bool:
    """Whether this process is one of several (started by torchrun)."""
    return world_size() > 1


def in_process_group() -> bool:
    """Whether this process is one of several AND has joined their process group (collectives
    work)."""
    return is_distributed() and dist.is_available() and dist.is_initialized()


def is_rank_zero() -> bool:
    """Whether this process is rank 0, the one that writes files and prints (always true alone)."""
    return rank() == 0


def resolve_backend(backend: str, accelerator: str) -> str:
    """The process-group backend for ``train.ddp_backend`` (``auto``, ``gloo`` or ``nccl``).

    ``auto`` is ``nccl`` when training runs on CUDA GPUs (``train.accelerator`` ``gpu``/``cuda``,
    or ``auto`` with a GPU present) and ``gloo`` otherwise; ``nccl`` without CUDA is a ConfigError.
    """
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if backend == "auto":
        return "nccl" if on_gpu else "gloo"
    if backend == "nccl" and not (on_gpu and torch.cuda.is_available()):
        raise ConfigError(
            f"train.ddp_backend: nccl needs CUDA GPUs (train.accelerator={accelerator!r}, "
            f"CUDA available: {torch.cuda.is_available()}); use gloo on CPU"
        )
    return backend


def check_batch_size(batch_size: int, n_train: int | None = None) -> int:
    """The per-rank batch of the GLOBAL ``train.batch_size``; one-line errors when it cannot work.

    Under torchrun the batch size must be a multiple of ``WORLD_SIZE`` and the train split must
    hold at least one full global batch (each rank needs the same number of equal batches).
    """
    world = world_size()
    if world == 1:
        return batch_size
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size: {batch_size} is not divisible by the {world} torchrun processes "
            "(WORLD_SIZE); it is the GLOBAL batch, split evenly over the processes"
        )
    if n_train is not None and n_train < batch_size:
        raise DataError(
            f"train split: {n_train} pairs, fewer than one global batch (train.batch_size="
            f"{batch_size}) for {world} torchrun processes; lower train.batch_size"
        )
    return batch_size // world


@contextlib.contextmanager
def process_group(backend: str, accelerator: str, batch_size: int) -> Iterator[None]:
    """Join torchrun's process group for the body; a no-op in a single process.

    The config is checked first (``batch_size`` divisible by ``WORLD_SIZE``, a usable backend),
    so a bad setting is one ConfigError on every rank before any rank waits for another. A group
    that is already initialised (by the caller, or by Lightning) is used as it is.
    """
    global _control_group
    if not is_distributed() or dist.is_initialized():
        yield
        return
    try:
        check_batch_size(batch_size)
        name = resolve_backend(backend, accelerator)
    except CellcubeError as exc:  # the same on every rank: rank 0 alone prints it
        if rank() != 0:
            raise PeerFailed(str(exc)) from None
        raise
    if name == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    dist.init_process_group(backend=name, timeout=_TIMEOUT)
    _control_group = dist.new_group(backend="gloo", timeout=_TIMEOUT) if name != "gloo" else None
    try:
        yield
    finally:
        _control_group = None
        with contextlib.suppress(Exception):  # a peer that already died cannot be waited for
            dist.destroy_process_group()


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (Python objects, through the gloo control group)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control_group)
    return box[0]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a CellcubeError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return CellcubeError(f"{exc.__class__.__name__}: {exc}")
    return exc


def on_rank_zero(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    For the steps that read the user's files or write the run directory. If ``fn`` raises on
    rank 0, rank 0 re-raises it and every other rank raises :class:`PeerFailed` with the same
    message (a CellcubeError, so the CLI exits 2 on every rank, printing the error once). The
    result must be picklable; in a single process this is just ``fn()``.
    """
    if not (is_distributed() and dist.is_initialized()):
        return fn()
    if rank() == 0:
        try:
            result = fn()
        except Exception as exc:
            _broadcast((False, _portable(exc)))
            raise
        _broadcast((True, result))
        return result
    ok, payload = _broadcast(None)
    if not ok:
        kind = payload.__class__.__name__
        raise PeerFailed(f"rank 0 failed ({kind}): {payload}") from payload
    return payload


def on_every_rank(fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank and return this rank's result, once every rank has finished.

    For a step each rank does its own share of (embedding its shard of the texts). If ``fn``
    raises on some rank, that rank re-raises it and every other rank raises
    :class:`PeerFailed` naming the first failed rank and its message, so no rank is left
    waiting at the next collective. In a single process this is just ``fn()``.
    """
    if not in_process_group():
        return fn()
    try:
        result, error = fn(), None
    except Exception as exc:
        result, error = None, exc
    failures: list[Any] = [None] * dist.get_world_size()
    mine = None if error is None else (error.__class__.__name__, str(error))
    dist.all_gather_object(failures, mine, group=_control_group)
    if error is not None:
        raise error
    for peer, failure in enumerate(failures):
        if failure is not None:
            kind, message = failure
            raise PeerFailed(f"rank {peer} failed ({kind}): {message}")
    return result  # type: ignore[return-value]


def all_gather_rows(local: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's 2-D CPU tensor ``local``, in rank order, on every rank.

    The ranks may hold different numbers of rows (0 included: such a rank's ``local`` may be
    any empty tensor); the others must agree on the width and dtype. The row counts go round
    first (a few integers), then the rows themselves as one padded tensor per rank through the
    gloo group (``all_gather``; no pickling of the rows). Alone: ``[local]``.
    """
    if not in_process_group():
        return [local]
    shapes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shapes, (tuple(local.shape), str(local.dtype)), group=_control_group)
    counts = [shape[0] for shape, _ in shapes]
    width, dtype = next(
        ((shape[1], kind) for shape, kind in shapes if shape[0]), (0, str(local.dtype))
    )
    padded = torch.zeros(max(counts), width, dtype=getattr(torch, dtype.removeprefix("torch.")))
    if local.shape[0]:
        padded[: local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded, group=_control_group)
    return [rows[:n] for rows, n in zip(out, counts, strict=True)]


class AllGather(Protocol):
    """Anything with Lightning's ``all_gather``: a ``LightningModule`` in a Trainer, or a
    ``DDPStrategy`` (both end in ``lightning.fabric``'s gather, which returns ``(world, ...)``)."""

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any: ...


def gather_batch(
    gatherer: AllGather, pred: torch.Tensor, *data: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The global batch from every rank's slice, in rank order: ``(pred, *data)``.

    Gathered with Lightning's ``all_gather``; ``pred`` with ``sync_grads=True``, so it keeps its
    gradient: the backward hands each rank the SUM over ranks of its rows' gradients (see the
    module docstring for why the update then equals the single-process one); ``data`` (answers,
    ids, row indices) are plain copies. Identity in a single process.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return (pred, *data)
    gathered = [gatherer.all_gather(pred, sync_grads=True)]
    gathered += [gatherer.all_gather(t) for t in data]
    return tuple(t.flatten(0, 1) for t in gathered)


def skipped_step(module: torch.nn.Module) -> torch.Tensor | None:
    """What ``training_step`` returns for a batch with nothing to learn (a loss without gradient,
    e.g. the plain-reshaper cube with 0 steps).

    Alone: None, and Lightning skips the optimiser step. Lightning refuses None under DDP (every
    rank must join the gradient all-reduce), so there it is a zero attached to every trainable
    parameter: all gradients are 0. Such a model's forward uses none of its parameters, so its
    predictions and metrics are those of the single-process run (only AdamW's decoupled weight
    decay shrinks the unused parameters).
    """
    if not is_distributed():
        return None
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.stack([p.sum() * 0.0 for p in params]).sum()


def trainer_kwargs(backend: str, accelerator: str) -> dict[str, Any]:
    """Lightning ``Trainer`` arguments for this process: one device alone, DDP under torchrun.

    Under torchrun: ``devices`` per machine and ``num_nodes`` from torchrun's environment, a
    ``DDPStrategy`` with the resolved backend, and no DistributedSampler (the cellcube sampler
    shards the global batches itself; validation runs on the whole split on every rank, so all
    ranks reach the same early-stopping decision). Buffers are not broadcast: every rank computes
    the same ones (mined negatives) from the same weights.
    """
    if not is_distributed():
        return {"devices": 1}
    from lightning.pytorch.strategies import DDPStrategy

    world, local = world_size(), local_world_size()
    return {
        "devices": local,
        "num_nodes": max(1, world // local),
        "strategy": DDPStrategy(
            process_group_backend=resolve_backend(backend, accelerator),
            broadcast_buffers=False,
            # the parameters a model uses never change (the 0-step cube never uses its cell
            # rule): a static graph lets DDP skip those without searching for them every step
            static_graph=True,
            timeout=_TIMEOUT,
        ),
        "use_distributed_sampler": False,
    }
