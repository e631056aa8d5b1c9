"""Training a question->answer embedding map with Lightning.

One routine, :func:`fit`, trains the cube and the trained baselines (``mlp``, ``cube_0_steps``)
with the same loss, optimiser and budget, so their numbers are comparable. Lightning provides the
loop, progress bar, CSV/TensorBoard logging, precision flags, early stopping on validation MRR and
checkpointing; a checkpoint (``best.ckpt`` / ``last.ckpt``) holds model, optimiser, loop and
callback state plus cellcube's own config and the torch/numpy/python RNG states, so
``resume=True`` continues exactly where ``last.ckpt`` left off. Shuffling uses a sampler seeded by
``(seed, epoch)``, which makes runs deterministic on CPU and resumption exact at epoch boundaries.
Checkpoints are written at the end of every epoch, so resume granularity is one epoch: a run killed
mid-epoch loses at most that epoch's work. Every checkpoint is written atomically
(:class:`AtomicCheckpointIO`), and :class:`~cellcube.train.guards.FiniteGuard` stops training at the
first NaN/inf with a :class:`~cellcube.errors.TrainingError`.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from cellcube.config import Config
from cellcube.embed.splits import EmbeddedSplit
from cellcube.errors import CheckpointError
from cellcube.eval.metrics import retrieval_metrics
from cellcube.io import write_torch
from cellcube.objectives.curriculum import curriculum_weights, teacher_difficulty
from cellcube.objectives.losses import build_loss
from cellcube.objectives.multiteacher import (
    distillation_loss,
    module_key,
    pair_weights,
    ridge_head,
)
from cellcube.objectives.negatives import NegativeMiner
from cellcube.train import distributed
from cellcube.train.guards import FiniteGuard


def split_teacher_weights(split: EmbeddedSplit, cfg: Config) -> torch.Tensor:
    """(n, K) per-pair teacher weights of a split (primary first), as configured in
    ``teachers`` (see :mod:`cellcube.objectives.multiteacher`)."""
    tc = cfg.teachers
    spaces = [(split.q, split.candidates), *((v.q, v.candidates) for v in split.views.values())]
    return pair_weights(
        spaces, split.answer_ids, tc.weighting, tc.temperature, tc.weights, cfg.loss.temperature
    )


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``(seed, epoch)``: reproducible and resumable.

    Alone (``world_size=1``) it yields the whole permutation. Under torchrun
    (:mod:`cellcube.train.distributed`) rank ``r`` of ``world_size`` yields, for each full global
    batch ``k`` of ``batch_size`` rows of that same permutation, its slice
    ``perm[k*B + r*b : k*B + (r+1)*b]`` (``b = B / world_size``; the incomplete last batch is
    dropped, as the single-process loader drops it): the ranks' slices, gathered in rank order,
    are exactly the single-process batches.
    """

    def __init__(
        self, n: int, seed: int, *, batch_size: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size > 1 and (batch_size % world_size or not 0 < batch_size <= n):
            raise ValueError(f"batch_size={batch_size} cannot be split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.n, self.seed, self.epoch = n, seed, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.world_size > 1:
            full, b = self.n // self.batch_size, self.batch_size // self.world_size
            perm = perm[: full * self.batch_size].view(full, self.world_size, b)[:, self.rank]
        return iter(perm.reshape(-1).tolist())

    def __len__(self) -> int:
        if self.world_size > 1:
            return self.n // self.batch_size * (self.batch_size // self.world_size)
        return self.n


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes via temp file + fsync + rename (never a torn file)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        write_torch(path, checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's own read (``--resume``): a damaged file is one CheckpointError naming it."""
        return load_checkpoint(Path(path))


class MapperModule(L.LightningModule):
    """Wraps an embedding->embedding model with the cellcube loss and validation retrieval.

    The loss is :func:`cellcube.objectives.losses.build_loss` of ``cfg.loss``; with
    ``loss.hard_negatives``
    or ``loss.random_negatives`` each batch also gets negatives from the TRAIN answers
    (:class:`~cellcube.objectives.negatives.NegativeMiner`, a submodule, so its mined ids are
    checkpointed),
    and with ``loss.curriculum`` per-pair weights from :mod:`cellcube.objectives.curriculum`. When
    the
    splits carry other teachers' ``views``, each gets a projection head (``heads``, trained with
    the model, no weight decay) and the loss is
    :func:`cellcube.objectives.multiteacher.distillation_loss`
    with per-pair teacher weights (``teachers.weighting``).
    """

    def __init__(
        self, model: nn.Module, cfg: Config, name: str, train: EmbeddedSplit, val: EmbeddedSplit
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.name = name
        self.loss = build_loss(cfg.loss)
        self._train, self._val = train, val
        lc = cfg.loss
        self.negatives = (
            NegativeMiner(
                train.candidates,
                train.answer_ids,
                hard=lc.hard_negatives,
                random=lc.random_negatives,
                refresh_every=lc.refresh_every,
                mine_by=lc.mine_by,
                seed=cfg.seed,
            )
            if lc.n_negatives
            else None
        )
        self._difficulty = (
            teacher_difficulty(train.q, train.a, train.answer_ids, train.candidates)
            if lc.curriculum
            else None
        )
        self.labels = [cfg.teacher.label, *train.views]  # the primary teacher first
        self.heads = nn.ModuleDict()
        self._teacher_w: torch.Tensor | None = None
        if train.views:
            src = torch.cat([train.q, train.a])
            for label, view in train.views.items():
                self.heads[module_key(label)] = ridge_head(src, torch.cat([view.q, view.a]))
            self._teacher_w = split_teacher_weights(train, cfg)

    @property
    def teacher_weights(self) -> torch.Tensor | None:
        """(n_train, K) per-pair teacher weights (primary first), or None with one teacher."""
        return self._teacher_w

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.model(q)

    def on_train_epoch_start(self) -> None:
        """Re-mine hard negatives when due: by the model's current predictions (or answers)."""
        miner = self.negatives
        if miner is None or not miner.due(self.current_epoch):
            return
        queries = self._train.a.to(self.device)
        if miner.mine_by == "prediction":
            was_training = self.model.training
            self.model.eval()  # the expected update: no randomness, so no global RNG draws
            with torch.no_grad():
                queries = self.model(self._train.q.to(self.device))
            self.model.train(was_training)
        miner.mine(queries, self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        q, a, ids, rows = batch
        # under torchrun: the GLOBAL batch, predictions with their gradient
        # (cellcube.train.distributed)
        pred, a, ids, rows = distributed.gather_batch(self.model(q), a, ids, rows)
        negatives = negative_ids = weights = None
        if self.negatives is not None:
            negative_ids = self.negatives.sample(rows, self.current_epoch, batch_idx)
            negatives = self.negatives.bank[negative_ids]  # unit-norm train answers
        if self._difficulty is not None:
            lc = self.cfg.loss
            weights = curriculum_weights(
                self._difficulty[rows.cpu()],
                self.current_epoch,
                lc.curriculum_epochs,
                lc.curriculum_start,
            ).to(q.device)
            self.log("train_curriculum_fraction", weights.mean(), on_step=False, on_epoch=True)
        if self._teacher_w is None:
            total, parts = self.loss(pred, a, ids, negatives, negative_ids, weights)
        else:
            total, parts = self._distillation(pred, a, ids, rows, negatives, negative_ids, weights)
        if not total.requires_grad:  # e.g. a plain-reshaper cube with 0 steps: nothing to learn
            return distributed.skipped_step(self)  # None (a zero loss under DDP)
        self.log("train_loss", total, prog_bar=True, on_step=False, on_epoch=True)
        for key, value in parts.items():
            self.log(f"train_{key}", value, on_step=False, on_epoch=True)
        return total

    def _distillation(
        self,
        pred: torch.Tensor,
        a: torch.Tensor,
        ids: torch.Tensor,
        rows: torch.Tensor,
        negatives: torch.Tensor | None,
        negative_ids: torch.Tensor | None,
        curriculum: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The multi-teacher loss of a batch; logs each teacher's mean weight and loss share."""
        assert self._teacher_w is not None
        cpu_rows = rows.cpu()
        tw = self._teacher_w[cpu_rows].to(pred.device)
        views = self._train.views
        targets = [a, *(views[label].a[cpu_rows].to(pred.device) for label in self.labels[1:])]
        heads = [self.heads[module_key(label)] for label in self.labels[1:]]
        total, terms = distillation_loss(
            self.loss, pred, targets, heads, ids, tw, curriculum, negatives, negative_ids
        )
        parts = {}
        for t, label in enumerate(self.labels):
            parts[f"loss_{label}"] = terms[t]
            self.log(f"train_weight_{label}", tw[:, t].mean(), on_step=False, on_epoch=True)
        return total, parts

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        (q,) = batch
        pred = self.model(q)
        val = self._val
        m = retrieval_metrics(pred, val.answer_ids, val.candidates, self.cfg.eval.ks)
        for key, value in m.items():
            self.log(f"val_{key}", value, prog_bar=key == "mrr", batch_size=q.shape[0])
        for label in self.labels[1:]:  # each other teacher's retrieval, through its head
            head = self.heads[module_key(label)]
            mt = retrieval_metrics(head(pred), val.answer_ids, val.views[label].candidates)
            self.log(f"val_mrr_{label}", mt["mrr"], batch_size=q.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        if len(self.heads):  # heads translate between spaces: no decay towards zero
            groups.append({"params": list(self.heads.parameters()), "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add cellcube's config and the torch/numpy/python RNG states to Lightning's checkpoint.

        Lightning stores model, optimiser, loops and callbacks; the batch order is a function of
        (seed, epoch) (:class:`EpochSeededSampler`); the RNG states make the random parts of
        training (``cube.fire_rate < 1``) continue after ``--resume`` exactly as without the
        interruption.
        """
        checkpoint["cellcube"] = {
            "config": self.cfg.to_dict(),
            "model": self.name,
            "rng": _rng_states(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the RNG states saved by :meth:`on_save_checkpoint` (when present)."""
        rng = checkpoint.get("cellcube", {}).get("rng")
        if rng is not None:
            try:
                _set_rng_states(rng)
            except (TypeError, ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(
                    f"checkpoint of {self.name}: unreadable RNG state ({exc.__class__.__name__})"
                ) from None


def _rng_states() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and python RNG states."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_states(rng: dict[str, Any]) -> None:
    """Inverse of :func:`_rng_states`."""
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fit(
    model: nn.Module,
    name: str,
    cfg: Config,
    train: EmbeddedSplit,
    val: EmbeddedSplit,
    out_dir: Path,
    *,
    resume: bool = False,
) -> Path:
    """Train ``model`` on ``train``, early-stopping on ``val`` MRR; return the best checkpoint path.

    Checkpoints go to ``out_dir/checkpoints/{best,last}.ckpt`` and logs to ``out_dir/logs``.
    With ``resume=True`` training continues from ``last.ckpt`` (which must exist). Under torchrun
    every process calls this and they train as one DDP run on the global ``train.batch_size``
    (:mod:`cellcube.train.distributed`); rank 0 writes the checkpoints and logs.
    """
    _quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_dir = out_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.exists():
        raise CheckpointError(f"{last}: nothing to resume from (no such checkpoint)")
    if not resume and distributed.is_rank_zero():
        for stale in (ckpt_dir / "best.ckpt", last):
            stale.unlink(missing_ok=True)
    world = distributed.world_size()
    loader = DataLoader(
        TensorDataset(train.q, train.a, train.answer_ids, torch.arange(len(train))),
        batch_size=distributed.check_batch_size(cfg.train.batch_size, len(train)),
        sampler=EpochSeededSampler(
            len(train),
            cfg.seed,
            batch_size=cfg.train.batch_size,
            rank=distributed.rank(),
            world_size=world,
        ),
        drop_last=world == 1 and len(train) > cfg.train.batch_size,
    )
    val_loader = DataLoader(TensorDataset(val.q), batch_size=len(val))
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_mrr",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # last.ckpt at the end of EVERY epoch (Lightning's own save_last only rewrites it when `best`
    # improves, so a resume could repeat many epochs). Lightning runs checkpoint callbacks after
    # the others, so it also holds this epoch's early-stopping state.
    every_epoch = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        **distributed.trainer_kwargs(cfg.train.ddp_backend, cfg.train.accelerator),
        precision=cfg.train.precision,
        deterministic=True,
        callbacks=[
            checkpoint,
            every_epoch,
            EarlyStopping(monitor="val_mrr", mode="max", patience=cfg.train.patience),
            FiniteGuard(name, ckpt_dir),
        ],
        logger=[
            CSVLogger(out_dir / "logs", name="", version=""),
            TensorBoardLogger(out_dir / "logs", name="tensorboard", version=""),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.train.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=out_dir,
    )
    module = MapperModule(model, cfg, name, train, val)
    trainer.fit(module, loader, val_loader, ckpt_path=last if resume else None)
    best = ckpt_dir / "best.ckpt"
    return best if best.exists() else last


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a cellcube checkpoint; a missing, truncated or foreign file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "cellcube" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a cellcube checkpoint")
    return ckpt


def load_heads(path: Path) -> dict[str, nn.Linear]:
    """The projection heads of a multi-teacher checkpoint, by module key (empty if none)."""
    state = load_checkpoint(path)["state_dict"]
    heads: dict[str, nn.Linear] = {}
    for key, weight in state.items():
        if key.startswith("heads.") and key.endswith(".weight"):
            name = key[len("heads.") : -len(".weight")]
            head = nn.Linear(weight.shape[1], weight.shape[0])
            head.load_state_dict({"weight": weight, "bias": state[f"heads.{name}.bias"]})
            heads[name] = head.eval()
    return heads


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a checkpoint's weights into ``model`` (built with the same config) and set eval mode."""
    state = load_checkpoint(path)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not match the configured model ({first})"
        ) from None
    return model.eval()
