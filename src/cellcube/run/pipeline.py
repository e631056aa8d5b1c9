"""The end-to-end job: data -> teacher embeddings -> train cube and baselines -> evaluate.

:func:`train_run` reads top to bottom::

    claim the run directory (its lock)                      rank 0
    read + split the data                                   rank 0, shared with all ranks
    embed the split                                         every rank its shard, all gathered
    prepare: check the models' config, write                rank 0, result shared with all ranks
             pairs.jsonl/config.yaml
    train every model not yet done, timed                   every rank (DDP under torchrun)
    finish: fit ridge, plot the curves, evaluate on test    rank 0

The models of a run are named in one place: :func:`model_names` (what is trained) and
:func:`model_entries` (what is reported, with its parameter count, optimiser settings and
training time). A model evaluated in an embedding space of its own adds a
:class:`~cellcube.eval.evaluate.ModelEntry` holding its
:class:`~cellcube.eval.evaluate.Precomputed` outputs there.

Every path of the run directory comes from :class:`~cellcube.run.rundir.RunDir`. The test split
is only ever read by evaluation (:mod:`cellcube.eval.evaluate`); every choice (early stopping,
ridge alpha) is made on validation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellcube.config import Config
from cellcube.data import (
    QAPair,
    Split,
    augment_pairs,
    autoencoder_pairs,
    denoise_pairs,
    fold_context,
    load_builtin,
    parse_corruptions,
    read_path,
    split_dataset,
)
from cellcube.embed.splits import EmbeddedSplit, embed_splits
from cellcube.errors import CellcubeError, CheckpointError, ConfigError
from cellcube.eval.evaluate import ModelEntry, Precomputed, evaluate
from cellcube.eval.plots import plot_training
from cellcube.eval.robustness import robustness
from cellcube.models.baselines import build_model, fit_ridge, mean_answer, trained_models
from cellcube.models.finetune import FinetunedEncoder, finetune_teacher, read_record
from cellcube.models.params import effective_params
from cellcube.objectives.curriculum import teacher_difficulty
from cellcube.report import write_report_html
from cellcube.run.rundir import RunDir
from cellcube.train import distributed
from cellcube.train.checkpoints import load_checkpoint
from cellcube.train.fit import fit

__all__ = [
    "Prepared",
    "evaluate_run",
    "initialise_from",
    "model_entries",
    "model_names",
    "read_pairs",
    "train_run",
]

Log = Callable[[str], None]


def read_pairs(cfg: Config, log: Log | None = None) -> list[QAPair]:
    """The configured pairs: a user file or directory when ``data.path`` is set (through
    :func:`cellcube.data.readers.read_path`; its skip report goes to ``log``), else the built-in
    corpus; in ``autoencoder`` mode each text paired with itself, in ``denoise`` mode each text's
    corrupted versions (``data.denoise``) paired with it
    (:func:`cellcube.data.corrupt.denoise_pairs`)."""
    d = cfg.data
    if d.path is not None:
        pairs, report = read_path(d.path, d)
        pairs = fold_context(pairs)
        if log is not None and (report.skipped or report.n_duplicates or report.ignored_files):
            log(f"import: {report.summary()}")
            for skip in report.skipped[:5]:
                log(f"  skipped {skip.message}")
    else:
        pairs = load_builtin(d.corpus, chitchat_turns=d.chitchat_turns)
    if cfg.mode == "autoencoder":
        return autoencoder_pairs(pairs)
    if cfg.mode == "denoise":
        return denoise_pairs(pairs, parse_corruptions(d.denoise), cfg.seed)
    return pairs


@dataclass
class Prepared:
    """What rank 0's preparation hands every rank: which models are already trained (``done``)
    or continue from their last checkpoint (``resume``)."""

    done: frozenset[str]
    resume: frozenset[str]


def model_names(cfg: Config) -> tuple[str, ...]:
    """The trained models of a run, in training order: the cube, and its trained baselines when
    ``eval.baselines`` (:func:`cellcube.models.baselines.trained_models`)."""
    return trained_models(cfg) if cfg.eval.baselines else ("cube",)


def train_run(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Train the cube and every baseline into ``run_dir``, then evaluate on test; the report.

    Data, teacher and model configuration are all checked before anything is written, so a bad
    input leaves no run directory behind. ``resume`` continues an interrupted run (its own
    pairs, finished models skipped, unfinished ones from ``last.ckpt``); a fresh run refuses a
    directory holding a previous run unless ``overwrite`` is set. Only one process works on a
    run directory at a time (:meth:`RunDir.claim`).

    Under ``torchrun`` every process calls this (:mod:`cellcube.train.distributed`): rank 0 alone
    holds the lock, reads the data, prepares, writes, logs and evaluates, handing its results (or
    its error) to the others; all ranks embed (each its shard) and train together (DDP).
    """
    run = RunDir(Path(run_dir))
    t = cfg.train
    with (
        distributed.process_group(t.ddp_backend, t.accelerator, t.batch_size),
        contextlib.ExitStack() as held,
    ):
        if not distributed.is_rank_zero():
            log = _silent
        distributed.on_rank_zero(lambda: held.enter_context(run.claim()))
        clock = StageClock()
        split = distributed.on_rank_zero(partial(_read_split, cfg, run, resume, overwrite, log))
        log(f"data: {len(split.train)} train / {len(split.val)} val / {len(split.test)} test pairs")
        clock.lap("read and split")
        emb = embed_splits(cfg, split, progress=t.progress)  # every rank embeds its shard
        clock.lap("embed")
        prep = distributed.on_rank_zero(partial(_prepare, cfg, run, split, emb, resume))
        clock.lap("prepare")
        for name in model_names(cfg):
            if name in prep.done:
                log(f"{name}: already trained, skipping")
                continue
            dim = emb["train"].q.shape[1]
            model = _build(name, dim, cfg)
            lr, weight_decay = t.optimiser(name)
            log(
                f"training {name} ({effective_params(model, dim):,} parameters, lr {lr:g}, "
                f"weight decay {weight_decay:g})"
            )
            start = time.perf_counter()
            fit(
                model,
                name,
                cfg,
                emb["train"],
                emb["val"],
                run.model(name),
                resume=name in prep.resume,
            )
            seconds = time.perf_counter() - start
            distributed.on_rank_zero(partial(run.mark_done, name, seconds))
        clock.lap("train")
        return distributed.on_rank_zero(partial(_finish, cfg, run, emb, log, clock))


class StageClock:
    """Wall seconds of a job's stages, in order: :meth:`lap` closes the stage running since the
    last lap (or since the clock started)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


def _silent(message: str) -> None:
    """The log of ranks other than 0: they print nothing."""


def _prepare(
    cfg: Config, run: RunDir, split: Split, emb: dict[str, EmbeddedSplit], resume: bool
) -> Prepared:
    """Rank 0's work before training, once every rank holds the embedded split: the checks,
    the run's files."""
    train = emb["train"]
    distributed.check_batch_size(cfg.train.batch_size, len(train))
    names = model_names(cfg)
    for name in names:  # config errors surface here, before anything is written
        _build(name, train.q.shape[1], cfg)
    if resume:
        run.write_config(cfg)
    else:
        difficulty = teacher_difficulty(train.q, train.a, train.answer_ids, train.candidates)
        run.start(cfg, split, difficulty)
    done = frozenset(n for n in names if resume and run.is_done(n))
    can_resume = frozenset(n for n in names if resume and run.model(n).last.exists())
    return Prepared(done, can_resume - done)


def _read_split(cfg: Config, run: RunDir, resume: bool, overwrite: bool, log: Log) -> Split:
    """The run's split: its own pairs.jsonl on resume, else the configured data, freshly split."""
    if resume:
        return run.read_pairs()
    if run.holds_run() and not overwrite:
        raise CellcubeError(
            f"{run.root}: already holds a run; use --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    split, n_dropped = split_dataset(read_pairs(cfg, log), cfg.data, cfg.seed)
    if n_dropped:
        log(
            f"data: {n_dropped} synthetic variant(s) left out (of validation/test questions, "
            "or of train pairs that data.max_train did not keep)"
        )
    return _augment(cfg, split, log) if cfg.train.augment else split


def _augment(cfg: Config, split: Split, log: Log) -> Split:
    """``train.augment``: corrupted copies of the TRAIN questions join train, with their answers
    (:func:`cellcube.data.corrupt.augment_pairs`); validation and test are untouched, and a copy
    equal to one of their texts is left out."""
    held_out = {t for p in (*split.val, *split.test) for t in (p.question, p.answer)}
    extra = augment_pairs(split.train, parse_corruptions(cfg.train.augment), cfg.seed, held_out)
    log(f"data: {len(extra)} corrupted copies of train questions added (train.augment)")
    return Split(split.train + extra, split.val, split.test)


def _build(name: str, dim: int, cfg: Config) -> nn.Module:
    """:func:`~cellcube.models.baselines.build_model`; the cube then takes the weights of the
    cube of ``train.init_from`` when that is set (:func:`initialise_from`)."""
    model = build_model(name, dim, cfg)
    if name == "cube" and cfg.train.init_from is not None:
        initialise_from(model, Path(cfg.train.init_from))
    return model


def initialise_from(cube: nn.Module, run_dir: Path) -> None:
    """Load the best cube checkpoint of the run in ``run_dir`` into ``cube`` (e.g. a cube
    pre-trained with ``mode: denoise``), before training.

    Raises:
        ConfigError: one line naming ``train.init_from`` when the run has no readable cube
            checkpoint (read with ``weights_only=True``), or when a parameter is missing,
            extra or of another shape there (the two runs' cube configs or teachers differ).
    """
    path = RunDir(run_dir).model("cube").best
    try:
        state = load_checkpoint(path)["state_dict"]
    except CheckpointError as exc:
        raise ConfigError(f"train.init_from: {exc}") from None
    theirs = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    ours = cube.state_dict()
    for key in sorted(set(ours) | set(theirs)):
        here, there = ours.get(key), theirs.get(key)
        if here is None or there is None or here.shape != there.shape:
            raise ConfigError(
                f"train.init_from: {path}: cube parameter {key!r} is "
                f"{_shape(there)} there and {_shape(here)} here (the cube configs or "
                "teachers differ)"
            )
    cube.load_state_dict(theirs)


def _shape(tensor: torch.Tensor | None) -> str:
    """``shape [a, b]``, or ``missing`` for None (for :func:`initialise_from`'s error)."""
    return "missing" if tensor is None else f"shape {list(tensor.shape)}"


def _finish(
    cfg: Config, run: RunDir, emb: dict[str, EmbeddedSplit], log: Log, clock: StageClock
) -> dict[str, Any]:
    """After training: fit the ridge baseline (and fine-tune the teacher when
    ``eval.finetune_teacher``), plot the training curves, evaluate on test, write the report
    page (:mod:`cellcube.report`)."""
    if cfg.eval.baselines:
        train, val = emb["train"], emb["val"]
        run.write_ridge(
            fit_ridge(
                train.q, train.a, val.q, val.answer_ids, val.candidates, cfg.eval.ridge_alphas
            )
        )
    if cfg.eval.finetune_teacher and not run.finetuned.exists():
        _finetune(cfg, run, log)
    plot_training({name: run.model(name).metrics_csv for name in model_names(cfg)}, run.plot)
    clock.lap("ridge, fine-tuning, plots")
    report = _evaluate(cfg, run, emb, clock)
    log(f"report page: {write_report_html(run.root, emb=emb)}")
    return report


def _finetune(cfg: Config, run: RunDir, log: Log) -> None:
    """The ``finetuned_teacher`` baseline: the teacher itself fine-tuned on the run's train pairs
    (:func:`cellcube.models.finetune.finetune_teacher`), saved into the run directory."""
    e, split = cfg.eval, run.read_pairs()
    log(f"fine-tuning the teacher ({e.finetune_epochs} epoch(s), lr {e.finetune_lr:g})")
    result = finetune_teacher(
        cfg.teacher,
        split.train,
        split.val,
        run.finetuned,
        epochs=e.finetune_epochs,
        lr=e.finetune_lr,
        batch_size=e.finetune_batch_size,
        warmup=e.finetune_warmup,
        seed=cfg.seed,
        progress=cfg.train.progress,
    )
    log(f"finetuned_teacher: epoch {result.best_epoch} kept, {result.train_seconds:.0f} s")


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """(Re)compute every model's test metrics from the run's saved checkpoints; the report
    (also written to ``report.json``)."""
    run = RunDir(Path(run_dir))
    cfg = run.read_config()
    clock = StageClock()
    emb = embed_splits(cfg, run.read_pairs(), progress=cfg.train.progress)
    clock.lap("embed")
    return _evaluate(cfg, run, emb, clock)


def _evaluate(
    cfg: Config, run: RunDir, emb: dict[str, EmbeddedSplit], clock: StageClock
) -> dict[str, Any]:
    """The report of every model of the run (:func:`cellcube.eval.evaluate.evaluate`), with
    the wall seconds of each stage of the job that wrote it (``stage_seconds``), written to
    ``report.json``."""
    heads = run.load_heads() if cfg.teachers.others else None
    entries = model_entries(cfg, run, emb)
    report = evaluate(cfg, emb, entries, heads)
    if cfg.eval.robustness:
        report["robustness"] = robustness(cfg, emb, entries, partial(model_entries, cfg, run))
    clock.lap("evaluate")
    report["stage_seconds"] = clock.seconds
    run.write_report(report)
    return report


def model_entries(
    cfg: Config, run: RunDir, emb: Mapping[str, EmbeddedSplit]
) -> dict[str, ModelEntry]:
    """Every model of the report, in report order: the trained ones (from their best
    checkpoints, with their optimiser settings and training time), then, when
    ``eval.baselines``, ``identity``, ``mean_answer`` and ``ridge``. Parameter counts are those
    that affect the output (:func:`cellcube.models.params.effective_params`; identity: 0;
    mean_answer: its D-vector; ridge: D*D + D)."""
    dim = emb["test"].q.shape[1]
    entries: dict[str, ModelEntry] = {}
    for name in model_names(cfg):
        model = run.load_model(name, cfg, dim)
        lr, weight_decay = cfg.train.optimiser(name)
        seconds = run.train_seconds(name)
        entries[name] = ModelEntry(model, effective_params(model, dim), lr, weight_decay, seconds)
    if cfg.eval.baselines:
        entries["identity"] = ModelEntry(lambda q: q, 0)
        entries["mean_answer"] = ModelEntry(mean_answer(emb["train"].a), dim)
        ridge = run.load_ridge()
        entries["ridge"] = ModelEntry(ridge, ridge.n_params, train_seconds=ridge.fit_seconds)
    if cfg.eval.finetune_teacher:
        entries["finetuned_teacher"] = _finetuned_entry(cfg, run, emb)
    return entries


def _finetuned_entry(cfg: Config, run: RunDir, emb: Mapping[str, EmbeddedSplit]) -> ModelEntry:
    """The fine-tuned teacher as a report entry: its own embeddings of each split's questions and
    distinct answers (in the order the split's ``answer_ids`` index)."""
    encoder = FinetunedEncoder.load(run.finetuned)
    test, val = emb["test"], emb["val"]
    outputs = Precomputed(
        encoder.encode(test.questions),
        encoder.encode(test.answers),
        encoder.encode(val.questions),
        encoder.encode(val.answers),
    )
    record = read_record(run.finetuned)
    return ModelEntry(
        outputs,
        encoder.params,
        cfg.eval.finetune_lr,
        record["recipe"]["weight_decay"],
        record["train_seconds"],
    )
