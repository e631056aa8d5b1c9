"""The end-to-end job: data -> teacher embeddings -> train cube and baselines -> evaluate -> decode.

A run directory holds everything needed to evaluate or query it again::

    RUN/config.yaml            the resolved, validated config
    RUN/pairs.jsonl            every pair with its split (train / val / test); train pairs
                               also with their curriculum difficulty
    RUN/models/<name>/         checkpoints/{best,last}.ckpt and logs/ for cube, mlp, cube_0_steps
    RUN/models/ridge.pt        the ridge baseline (alpha chosen on validation)
    RUN/report.json            test metrics of every model (written by train and evaluate)
    RUN/plots/training.png     validation MRR and training loss per epoch

The test split is only ever read by :func:`evaluate_run`; every choice (early stopping, ridge
alpha) is made on validation.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cellcube import __version__
from cellcube.config import Config, dump_config, load_config
from cellcube.data.pairs import QAPair, Split, autoencoder_pairs, load_builtin, split_dataset
from cellcube.data.readers import fold_context, import_path
from cellcube.decode.bank import PhraseBank, read_bank_file
from cellcube.embed.cache import embed_texts
from cellcube.embed.encode import make_teacher, open_cache
from cellcube.embed.splits import SPLITS, EmbeddedSplit, embed_splits
from cellcube.embed.teachers import Teacher
from cellcube.errors import CellcubeError, CheckpointError, DataError
from cellcube.eval.metrics import retrieval_metrics, score_metrics
from cellcube.io import (
    atomic_open,
    remove_stale_temps,
    run_lock,
    write_json,
    write_text,
    write_torch,
)
from cellcube.models.baselines import (
    TRAINED_MODELS,
    Ridge,
    build_model,
    fit_ridge,
    mean_answer,
    n_params,
)
from cellcube.objectives.curriculum import teacher_difficulty
from cellcube.objectives.multiteacher import ensemble_scores, module_key
from cellcube.train import distributed
from cellcube.train.fit import fit, load_heads, load_weights, split_teacher_weights


def read_pairs(cfg: Config, log: Callable[[str], None] | None = None) -> list[QAPair]:
    """The configured pairs: a user file or directory when ``data.path`` is set (through
    :func:`cellcube.data.readers.import_path`; its skip report goes to ``log``), else the built-in
    corpus."""
    d = cfg.data
    if d.path is not None:
        pairs, report = import_path(
            d.path,
            question_field=d.question_field,
            answer_field=d.answer_field,
            context_turns=d.context_turns,
            skip_invalid=d.skip_invalid,
        )
        pairs = fold_context(pairs)
        if log is not None and (report.skipped or report.n_duplicates or report.ignored_files):
            log(f"import: {report.summary()}")
            for skip in report.skipped[:5]:
                log(f"  skipped {skip.message}")
    else:
        pairs = load_builtin(d.corpus)
    return autoencoder_pairs(pairs) if cfg.mode == "autoencoder" else pairs


def write_pairs(path: Path, split: Split, difficulty: torch.Tensor) -> None:
    """One JSON line per pair with its split; train pairs also carry their curriculum
    ``difficulty`` (see :func:`cellcube.objectives.curriculum.teacher_difficulty`)."""
    with atomic_open(path, "w") as fh:
        for name in SPLITS:
            for i, p in enumerate(getattr(split, name)):
                rec = {
                    "split": name,
                    "question": p.question,
                    "answer": p.answer,
                    "origin": p.origin,
                }
                if p.variant_of is not None:
                    rec["variant_of"] = p.variant_of
                if name == "train":
                    rec["difficulty"] = round(float(difficulty[i]), 4)
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def read_run_pairs(run_dir: Path) -> Split:
    path = run_dir / "pairs.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {run_dir} a cellcube run directory?")
    buckets: dict[str, list[QAPair]] = {name: [] for name in SPLITS}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                buckets[rec["split"]].append(QAPair(rec["question"], rec["answer"], rec["origin"]))
            except (ValueError, KeyError, TypeError):
                raise CheckpointError(f"{path}:{n}: corrupt run record") from None
    return Split(**buckets)


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {run_dir} a cellcube run directory?")
    return load_config(path, overrides)


def train_run(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate into ``run_dir`` (see :func:`_train_run`) holding its run lock.

    Only one process works on a run directory at a time (:func:`cellcube.io.run_lock`); under
    the lock, temporary files left by a killed earlier process are removed before anything else.

    Under ``torchrun`` every process calls this (:mod:`cellcube.train.distributed`): they join one
    process group, rank 0 alone holds the lock, reads the data, embeds it, writes every file,
    logs and evaluates, handing its results to the others; all ranks train together (DDP).
    """
    t = cfg.train
    with (
        distributed.process_group(t.ddp_backend, t.accelerator, t.batch_size),
        contextlib.ExitStack() as held,
    ):

        def claim() -> None:
            held.enter_context(run_lock(run_dir))
            remove_stale_temps(run_dir)

        distributed.on_rank_zero(claim)
        if not distributed.is_rank_zero():
            log = _silent
        return _train_run(cfg, run_dir, resume=resume, overwrite=overwrite, log=log)


def _silent(message: str) -> None:
    """The log of ranks other than 0: they print nothing."""


def _train_run(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the cube and every baseline into ``run_dir``, then evaluate on test.

    Data, teacher and model configuration are all checked before anything is written, so a bad
    input leaves no run directory behind. ``resume`` continues an interrupted run (its own
    pairs, finished models skipped, unfinished ones from ``last.ckpt``); a fresh run refuses a
    directory holding a previous run unless ``overwrite`` is set. Under torchrun, rank 0 reads,
    embeds, writes and evaluates (:func:`cellcube.train.distributed.on_rank_zero`); every rank
    trains.
    """
    split = distributed.on_rank_zero(partial(_read_split, cfg, run_dir, resume, overwrite, log))
    log(f"data: {len(split.train)} train / {len(split.val)} val / {len(split.test)} test pairs")
    emb = distributed.on_rank_zero(partial(embed_splits, cfg, split, progress=cfg.train.progress))
    distributed.check_batch_size(cfg.train.batch_size, len(emb["train"]))
    dim = emb["train"].q.shape[1]
    names = TRAINED_MODELS if cfg.eval.baselines else ("cube",)
    models = {name: build_model(name, dim, cfg) for name in names}  # config errors surface here
    distributed.on_rank_zero(partial(_write_run_files, cfg, run_dir, split, emb, resume))
    for name, model in models.items():
        model_dir = run_dir / "models" / name
        done = model_dir / "DONE"
        if resume and distributed.on_rank_zero(done.exists):
            log(f"{name}: already trained, skipping")
            continue
        log(f"training {name} ({n_params(model):,} parameters)")
        can_resume = resume and (model_dir / "checkpoints" / "last.ckpt").exists()
        fit(model, name, cfg, emb["train"], emb["val"], model_dir, resume=can_resume)
        distributed.on_rank_zero(partial(write_text, done, ""))
    return distributed.on_rank_zero(partial(_finish_run, cfg, run_dir, emb, names))


def _read_split(
    cfg: Config, run_dir: Path, resume: bool, overwrite: bool, log: Callable[[str], None]
) -> Split:
    """The run's split: its own pairs.jsonl on resume, else the configured data, freshly split."""
    if resume:
        split = read_run_pairs(run_dir)
    else:
        if (run_dir / "config.yaml").exists() and not overwrite:
            raise CellcubeError(
                f"{run_dir}: already holds a run; use --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        split, n_dropped = split_dataset(
            read_pairs(cfg, log),
            seed=cfg.seed,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
            folds=cfg.data.folds,
            fold=cfg.data.fold,
        )
        if n_dropped:
            log(f"data: {n_dropped} synthetic variant(s) of validation/test questions left out")
    return split


def _write_run_files(
    cfg: Config, run_dir: Path, split: Split, emb: dict[str, EmbeddedSplit], resume: bool
) -> None:
    """A fresh run's pairs.jsonl (old models removed), and the resolved config.yaml."""
    if not resume:
        if run_dir.exists():
            shutil.rmtree(run_dir / "models", ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        tr = emb["train"]
        difficulty = teacher_difficulty(tr.q, tr.a, tr.answer_ids, tr.candidates)
        write_pairs(run_dir / "pairs.jsonl", split, difficulty)
    write_text(run_dir / "config.yaml", dump_config(cfg))


def _finish_run(
    cfg: Config, run_dir: Path, emb: dict[str, EmbeddedSplit], names: Sequence[str]
) -> dict[str, Any]:
    """After training: fit the ridge baseline, plot the training curves, evaluate on test."""
    if cfg.eval.baselines:
        ridge = fit_ridge(
            emb["train"].q,
            emb["train"].a,
            emb["val"].q,
            emb["val"].answer_ids,
            emb["val"].candidates,
            cfg.eval.ridge_alphas,
        )
        write_torch(run_dir / "models" / "ridge.pt", ridge.state_dict())
    plot_training(run_dir, names)
    return evaluate_embedded(cfg, run_dir, emb)


def _predictors(
    cfg: Config, run_dir: Path, emb: dict[str, EmbeddedSplit], dim: int
) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
    """Each model of the report as (prediction function, trainable parameter count)."""
    preds: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] = {}
    names = TRAINED_MODELS if cfg.eval.baselines else ("cube",)
    for name in names:
        ckpt = run_dir / "models" / name / "checkpoints" / "best.ckpt"
        model = load_weights(build_model(name, dim, cfg), ckpt)
        preds[name] = (model, n_params(model))
    if cfg.eval.baselines:
        preds["identity"] = (lambda q: q, 0)
        preds["mean_answer"] = (mean_answer(emb["train"].a), 0)
        path = run_dir / "models" / "ridge.pt"
        try:
            ridge = Ridge(**torch.load(path, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        except Exception as exc:
            raise CheckpointError(
                f"{path}: corrupt ridge baseline ({exc.__class__.__name__})"
            ) from None
        preds["ridge"] = (ridge, dim * dim + dim)
    return preds


def evaluate_embedded(cfg: Config, run_dir: Path, emb: dict[str, EmbeddedSplit]) -> dict[str, Any]:
    test = emb["test"]
    dim = test.q.shape[1]
    models: dict[str, Any] = {}
    with torch.inference_mode():
        for name, (predict, params) in _predictors(cfg, run_dir, emb, dim).items():
            metrics = retrieval_metrics(
                predict(test.q), test.answer_ids, test.candidates, cfg.eval.ks
            )
            val = emb["val"]
            val_mrr = retrieval_metrics(predict(val.q), val.answer_ids, val.candidates)["mrr"]
            models[name] = {**metrics, "val_mrr": val_mrr, "params": params}
    report = {
        "n_test": len(test),
        "n_candidates": test.candidates.shape[0],
        "n_train": len(emb["train"]),
        "n_val": len(emb["val"]),
        "teacher": make_teacher(cfg).identity,
        "cellcube_version": __version__,
        "models": models,
    }
    if cfg.teachers.others:
        report["teachers"] = teacher_report(cfg, run_dir, emb)
    write_json(run_dir / "report.json", report)
    return report


def teacher_report(cfg: Config, run_dir: Path, emb: dict[str, EmbeddedSplit]) -> dict[str, Any]:
    """Test metrics per teacher and of the ensembles, for a multi-teacher run.

    For each teacher (the primary first): its own identity retrieval in its space (``teacher``:
    its question embedding ranking its answer embeddings), the cube's retrieval in that space
    (``cube``: the prediction, through the teacher's projection head), and its mean weight over
    the training pairs. ``ensemble`` ranks answers by the mean cosine over all teachers' spaces,
    for the teachers themselves and for the cube.
    """
    test, ks = emb["test"], cfg.eval.ks
    labels = [cfg.teacher.label, *test.views]
    ckpt = run_dir / "models" / "cube" / "checkpoints" / "best.ckpt"
    cube = load_weights(build_model("cube", test.q.shape[1], cfg), ckpt)
    heads = load_heads(ckpt)
    weights = split_teacher_weights(emb["train"], cfg)
    with torch.inference_mode():
        pred = cube(test.q)
        preds = [pred, *(heads[module_key(label)](pred) for label in labels[1:])]
        own = [test.q, *(v.q for v in test.views.values())]
        cands = [test.candidates, *(v.candidates for v in test.views.values())]
        per_teacher = {
            label: {
                "dim": cands[t].shape[1],
                "teacher": retrieval_metrics(own[t], test.answer_ids, cands[t], ks),
                "cube": retrieval_metrics(preds[t], test.answer_ids, cands[t], ks),
                "mean_weight": weights[:, t].mean().item(),
            }
            for t, label in enumerate(labels)
        }
        ensemble = {
            "teacher": score_metrics(ensemble_scores(own, cands), test.answer_ids, ks),
            "cube": score_metrics(ensemble_scores(preds, cands), test.answer_ids, ks),
        }
    return {"weighting": cfg.teachers.weighting, "per_teacher": per_teacher, "ensemble": ensemble}


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """(Re)compute every model's test metrics from the run's saved checkpoints."""
    cfg = load_run_config(run_dir)
    emb = embed_splits(cfg, read_run_pairs(run_dir), progress=cfg.train.progress)
    return evaluate_embedded(cfg, run_dir, emb)


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report, best test MRR first (and, for a multi-teacher run, a
    second table of each teacher's space and the ensembles)."""
    ks = sorted(
        int(k.split("@")[1])
        for k in next(iter(report["models"].values()))
        if k.startswith("recall@")
    )
    metric_head = ["MRR", *[f"R@{k}" for k in ks], "cosine"]

    def cells(m: dict[str, float]) -> list[str]:
        return [f"{m['mrr']:.3f}", *[f"{m[f'recall@{k}']:.3f}" for k in ks], f"{m['cosine']:.3f}"]

    rows = sorted(report["models"].items(), key=lambda kv: -kv[1]["mrr"])
    lines = [f"test: {report['n_test']} pairs, {report['n_candidates']} candidate answers"]
    lines += _table(
        ["model", *metric_head, "params"],
        [[name, *cells(m), f"{m['params']:,}"] for name, m in rows],
    )
    teachers = report.get("teachers")
    if teachers:
        body = []
        for label, t in teachers["per_teacher"].items():
            w = f"{t['mean_weight']:.3f}"
            body.append([f"{label} ({t['dim']}-d)", "teacher", *cells(t["teacher"]), w])
            body.append(["", "cube", *cells(t["cube"]), ""])
        for who in ("teacher", "cube"):
            body.append(
                ["ensemble" if who == "teacher" else "", who, *cells(teachers["ensemble"][who]), ""]
            )
        lines.append(f"teachers ({teachers['weighting']} weights), each in its own space:")
        lines += _table(["space", "model", *metric_head, "weight"], body)
    return "\n".join(lines)


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    """Rows of a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *body]
    ]


@dataclass
class Answerer:
    """A trained run ready to answer: question text -> cube -> nearest phrases."""

    cfg: Config
    teacher: Teacher
    model: torch.nn.Module
    bank: PhraseBank

    @classmethod
    def load(cls, run_dir: Path, bank_file: str | Path | None = None) -> Answerer:
        cfg = load_run_config(run_dir)
        teacher = make_teacher(cfg)
        if bank_file is not None:
            phrases = read_bank_file(bank_file)
        else:
            split = read_run_pairs(run_dir)
            phrases = list(dict.fromkeys(p.answer for n in SPLITS for p in getattr(split, n)))
        cache = open_cache(cfg)
        try:
            vectors = torch.from_numpy(embed_texts(teacher, phrases, cache))
        finally:
            if cache is not None:
                cache.close()
        ckpt = run_dir / "models" / "cube" / "checkpoints" / "best.ckpt"
        model = load_weights(build_model("cube", vectors.shape[1], cfg), ckpt)
        return cls(cfg, teacher, model, PhraseBank(phrases, vectors))

    def ask(self, questions: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` answers with cosine scores for each question."""
        if any(not q.strip() for q in questions):
            raise DataError("question is empty")
        q = torch.from_numpy(self.teacher.encode(list(questions)))
        with torch.inference_mode():
            return self.bank.search(self.model(q), k)


def _epoch_series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(epoch + 1, value) points of one metric from Lightning's metrics.csv rows.

    The log is appended to, not written atomically, so after a kill -9 and ``--resume`` it can
    hold a torn last line and repeated epochs: unparsable rows are skipped and the last value of
    an epoch wins.
    """
    points: dict[int, float] = {}
    for row in rows:
        try:
            points[int(row["epoch"]) + 1] = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(points.items())


def plot_training(run_dir: Path, names: Sequence[str]) -> None:
    """Validation MRR and training loss per epoch for each trained model -> plots/training.png."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mrr, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name in names:
        path = run_dir / "models" / name / "logs" / "metrics.csv"
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.DictReader(fh))
        val, loss = _epoch_series(rows, "val_mrr"), _epoch_series(rows, "train_loss")
        if val:
            ax_mrr.plot(*zip(*val, strict=True), label=name)
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=name)
    ax_mrr.set(xlabel="epoch", ylabel="validation MRR", title="Validation MRR")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Training loss")
    for ax in (ax_mrr, ax_loss):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(run_dir / "plots" / "training.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
