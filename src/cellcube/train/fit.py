"""Training one model: :func:`fit` assembles the Lightning pieces and runs them.

One routine, :func:`fit`, trains the cube and the trained baselines (``no_lattice``, ``linear``,
``mlp``, ``cube_0_steps``) with the same objective, optimiser, budget and early stopping, so their
numbers are comparable; only the learning rate and weight decay may differ per model
(``train.models``). It puts together

* the data: :class:`~cellcube.train.datamodule.PairsDataModule` (batches drawn by a sampler
  seeded by ``(seed, epoch)``: deterministic on CPU, and resumption exact at epoch boundaries);
* the objective: :class:`~cellcube.objectives.objective.Objective` (loss terms, negatives,
  curriculum, teacher weights and heads);
* the training itself: :class:`~cellcube.train.module.MapperModule`;
* Lightning's Trainer: loop, progress bar, CSV/TensorBoard logging, precision flags, early
  stopping on validation MRR, :class:`~cellcube.train.guards.FiniteGuard` (the first NaN/inf is a
  :class:`~cellcube.errors.TrainingError`), and ``best.ckpt`` / ``last.ckpt`` written atomically
  at the end of every epoch (:mod:`cellcube.train.checkpoints`).

A checkpoint holds model, objective, optimiser, loop and callback state plus cellcube's config and
the torch/numpy/python RNG states, so ``resume=True`` continues exactly where ``last.ckpt`` left
off; a run killed mid-epoch loses at most that epoch's work.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.errors import CheckpointError
from cellcube.objectives.objective import Objective
from cellcube.train import distributed
from cellcube.train.checkpoints import AtomicCheckpointIO
from cellcube.train.datamodule import PairsDataModule
from cellcube.train.guards import FiniteGuard
from cellcube.train.memory import freed_memory_kept
from cellcube.train.modeldir import ModelDir
from cellcube.train.module import MapperModule
from cellcube.train.selection import MONITOR, SmoothedValidation

__all__ = ["fit"]


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Lightning's all_gather(sync_grads=True) is built on this torch function
    warnings.filterwarnings("ignore", message=".*nn.functional.all_gather is deprecated")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _trainer(cfg: Config, name: str, files: ModelDir) -> L.Trainer:
    """The Lightning Trainer of one model: early stopping on validation MRR, the best and the
    last (every epoch) checkpoints, CSV + TensorBoard logs, atomic checkpoint files, the NaN
    guard, DDP under torchrun."""
    best = ModelCheckpoint(
        dirpath=files.checkpoints,
        filename=files.best.stem,
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # last.ckpt at the end of EVERY epoch (Lightning's own save_last only rewrites it when `best`
    # improves, so a resume could repeat many epochs). Lightning runs checkpoint callbacks after
    # the others, so it also holds this epoch's early-stopping state.
    every_epoch = ModelCheckpoint(
        dirpath=files.checkpoints,
        filename=files.last.stem,
        save_top_k=1,
        enable_version_counter=False,
    )
    t = cfg.train
    return L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        **distributed.trainer_kwargs(t.ddp_backend, t.accelerator),
        precision=t.precision,
        deterministic=True,
        callbacks=[
            SmoothedValidation(t.select_window),
            best,
            every_epoch,
            EarlyStopping(monitor=MONITOR, mode="max", patience=t.patience),
            FiniteGuard(name, files.last),
        ],
        logger=[
            CSVLogger(files.logs, name="", version=""),
            TensorBoardLogger(files.logs, name="tensorboard", version=""),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=files.root,
    )


def fit(
    model: nn.Module,
    name: str,
    cfg: Config,
    train: EmbeddedSplit,
    val: EmbeddedSplit,
    out: ModelDir | str | os.PathLike[str],
    *,
    resume: bool = False,
) -> Path:
    """Train ``model`` on ``train``, early-stopping on ``val`` MRR; return the best checkpoint path.

    Args:
        model: the model to train (its weights are trained in place).
        name: its report name (one of :data:`~cellcube.config.TRAINED_MODELS`): its optimiser
            settings (``train.models.<name>``), messages and checkpoints.
        cfg: the run's validated config.
        train: the embedded train split (the objective is built from it).
        val: the embedded validation split (early stopping and ``best.ckpt`` by its MRR).
        out: where its checkpoints and logs go (:class:`~cellcube.train.modeldir.ModelDir`, or
            its directory).
        resume: continue from the last checkpoint, which must exist.

    Under torchrun every process calls this and they train as one DDP run on the global
    ``train.batch_size`` (:mod:`cellcube.train.distributed`); rank 0 writes the checkpoints and
    logs.
    """
    _quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    files = out if isinstance(out, ModelDir) else ModelDir(Path(out))
    if resume and not files.last.exists():
        raise CheckpointError(f"{files.last}: nothing to resume from (no such checkpoint)")
    if not resume and distributed.is_rank_zero():
        for stale in (files.best, files.last):
            stale.unlink(missing_ok=True)
    data = PairsDataModule(train, val, cfg.train.batch_size, cfg.seed)
    trainer = _trainer(cfg, name, files)
    module = MapperModule(model, Objective(cfg, train), cfg, name, val)
    with freed_memory_kept(cfg.train.keep_freed_memory):
        trainer.fit(module, datamodule=data, ckpt_path=files.last if resume else None)
    return files.best if files.best.exists() else files.last
