"""The ``finetuned_teacher`` baseline: the teacher itself fine-tuned on the train split.

What a user would do instead of training a cube: fine-tune the sentence-transformers teacher on
the (question, answer) train pairs with the library's standard recipe, and retrieve with it.
:func:`finetune_teacher` runs that recipe as one plain loop (the readable version is the code
that runs):

- loss: ``sentence_transformers.losses.MultipleNegativesRankingLoss`` (cosine similarity, scale
  20; every other answer of the batch is a negative);
- optimiser: AdamW, lr 2e-5, weight decay 0.01 except on biases and LayerNorm weights, gradient
  norm clipped at 1 (``SentenceTransformer.fit``'s defaults);
- schedule: ``transformers.get_linear_schedule_with_warmup``: linear warm-up over the first 10%
  of all steps, then linear decay to 0 at the end of the last epoch;
- batches of 32 pairs, reshuffled every epoch by a generator seeded with ``seed``;
- after every epoch, validation MRR of the questions against the validation split's distinct
  answers, both embedded by the model being trained. The weights of the best epoch in
  ``1 .. epochs`` are kept (the first on ties). Epoch 0, the untouched teacher, is measured and
  recorded but never chosen: the untouched teacher is already the report's ``identity`` row.

The sentence-transformers ``SentenceTransformerTrainer`` is not used: it needs the ``datasets``
package, which cellcube does not depend on, and its model card and logging integrations are not
wanted offline. Training is in float32 on the teacher's device, whatever ``teacher.dtype`` says.

Example::

    from cellcube.config import load_config
    from cellcube.data import split_dataset
    from cellcube.models.finetune import answer_candidates, finetune_teacher, retrieval_on_texts
    from cellcube.run.pipeline import read_pairs

    cfg = load_config()
    split, _ = split_dataset(read_pairs(cfg), cfg.data, cfg.seed)
    result = finetune_teacher(cfg.teacher, split.train, split.val, "runs/ft/finetuned_teacher")
    print(result.best_epoch, result.val_mrr, result.train_seconds)
    print(retrieval_on_texts(result.encoder, *answer_candidates(split.test))["mrr"])
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cellcube.config import TeacherConfig
from cellcube.data.records import QAPair
from cellcube.embed.locate import resolve_device, resolve_model_path
from cellcube.errors import CellcubeError, ConfigError, TeacherError, TrainingError
from cellcube.eval.metrics import retrieval_metrics
from cellcube.io import write_json

__all__ = [
    "FinetuneResult",
    "FinetunedEncoder",
    "answer_candidates",
    "finetune_teacher",
    "read_record",
    "retrieval_on_texts",
    "save_model",
]

RESULT_FILE = "finetune.json"
"""The file in the saved model directory recording the recipe, the epochs and the timing."""

_NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


class FinetunedEncoder:
    """Texts -> unit-norm float32 embeddings with a (fine-tuned) SentenceTransformer.

    Args:
        model: the ``SentenceTransformer``.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 64):
        """Load a model directory written by :func:`finetune_teacher`, without network access."""
        from sentence_transformers import SentenceTransformer

        if not (Path(path) / "modules.json").is_file():
            raise TeacherError(f"{path}: not a fine-tuned teacher directory (no modules.json)")
        return cls(SentenceTransformer(str(path), device=device, local_files_only=True), batch_size)

    @property
    def params(self) -> int:
        """The number of parameters of the model (the whole teacher is trained)."""
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``: a ``(len(texts), dim)`` float32 CPU tensor with unit-norm rows."""
        self.model.eval()
        with torch.inference_mode():
            emb = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return torch.nn.functional.normalize(emb.float().cpu(), dim=1)


@dataclass
class FinetuneResult:
    """What :func:`finetune_teacher` returns.

    Attributes:
        best_epoch: the chosen epoch (1-based; the argmax of ``val_mrr[1:]``).
        val_mrr: validation MRR per epoch; ``val_mrr[0]`` is the untouched teacher.
        train_loss: mean training loss per epoch (``train_loss[0]`` is epoch 1).
        train_seconds: wall time of the training steps of all epochs, excluding loading, the
            validation passes and saving.
        path: the directory the chosen model was saved to.
        encoder: the chosen model, ready to embed texts.
        recipe: the hyper-parameters used.
    """

    best_epoch: int
    val_mrr: list[float]
    train_loss: list[float]
    train_seconds: float
    path: Path
    encoder: FinetunedEncoder
    recipe: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The result as JSON-ready data (everything but the encoder)."""
        return {
            "best_epoch": self.best_epoch,
            "val_mrr": self.val_mrr,
            "train_loss": self.train_loss,
            "train_seconds": self.train_seconds,
            "recipe": self.recipe,
        }


def answer_candidates(pairs: Sequence[QAPair]) -> tuple[list[str], list[str], torch.Tensor]:
    """A split as retrieval sees it: its questions, its distinct answers (first-occurrence
    order, as :func:`cellcube.embed.splits.embed_splits` orders them) and each question's answer
    index."""
    answers = list(dict.fromkeys(p.answer for p in pairs))
    index = {a: i for i, a in enumerate(answers)}
    ids = torch.tensor([index[p.answer] for p in pairs], dtype=torch.long)
    return [p.question for p in pairs], answers, ids


def retrieval_on_texts(
    encoder: FinetunedEncoder,
    questions: Sequence[str],
    answers: Sequence[str],
    answer_ids: torch.Tensor,
    ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """:func:`cellcube.eval.metrics.retrieval_metrics` of ``encoder``: each question's
    embedding ranks the embeddings of the distinct ``answers``; ``answer_ids[i]`` is the index
    of question i's true answer in ``answers``."""
    return retrieval_metrics(encoder.encode(questions), answer_ids, encoder.encode(answers), ks)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``finetune.json`` record of a saved model directory (what
    :meth:`FinetuneResult.summary` returned when it was saved)."""
    file = Path(path) / RESULT_FILE
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CellcubeError(f"{file}: cannot read the fine-tuning record ({exc})") from None


def _load_trainable(cfg: TeacherConfig) -> Any:
    """The teacher as a float32 SentenceTransformer on its device (offline for local models),
    truncating texts at ``cfg.max_length`` tokens (or the model's own, lower limit)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(cfg.model)
    model = SentenceTransformer(
        path, device=resolve_device(cfg.device), local_files_only=os.path.isdir(path)
    )
    model.max_seq_length = min(cfg.max_length, model.max_seq_length or cfg.max_length)
    return model


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on every weight but biases and LayerNorm parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {
            "params": [p for n, p in named if not any(k in n for k in _NO_DECAY)],
            "weight_decay": weight_decay,
        },
        {"params": [p for n, p in named if any(k in n for k in _NO_DECAY)], "weight_decay": 0.0},
    ]


def _train_epoch(
    model: Any,
    loss_fn: torch.nn.Module,
    pairs: Sequence[QAPair],
    batch_size: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    """One pass over ``pairs`` in a seeded random order; the mean batch loss."""
    model.train()
    order = torch.randperm(len(pairs), generator=generator).tolist()
    losses = []
    for start in range(0, len(order), batch_size):
        batch = [pairs[i] for i in order[start : start + batch_size]]
        features = [
            _to_device(model.preprocess([p.question for p in batch]), model.device),
            _to_device(model.preprocess([p.answer for p in batch]), model.device),
        ]
        loss = loss_fn(features, torch.empty(0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _to_device(features: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}


def _check_args(cfg: TeacherConfig, n_train: int, n_val: int, epochs: int, batch_size: int) -> None:
    """One error line for what cannot be fine-tuned, before anything is loaded."""
    if cfg.kind != "sentence-transformers":
        raise ConfigError(
            "eval.finetune_teacher: needs a teacher of kind 'sentence-transformers', "
            f"not {cfg.kind!r}"
        )
    if epochs < 1:
        raise ConfigError("eval.finetune_epochs: must be >= 1")
    if batch_size < 2:
        raise ConfigError("eval.finetune_batch_size: must be >= 2 (in-batch negatives)")
    if n_train < 2:
        raise CellcubeError("eval.finetune_teacher: needs at least 2 train pairs")
    if n_val < 1:
        raise CellcubeError("eval.finetune_teacher: needs validation pairs to choose the epoch")


def finetune_teacher(
    cfg_teacher: TeacherConfig,
    train_pairs: Sequence[QAPair],
    val_pairs: Sequence[QAPair],
    out_dir: str | os.PathLike[str],
    *,
    epochs: int = 3,
    lr: float = 2e-5,
    batch_size: int = 32,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune the teacher on ``train_pairs``; keep and save its best epoch on validation.

    Args:
        cfg_teacher: the run's (primary) teacher; must be of kind ``sentence-transformers``.
            ``"all-MiniLM-L6-v2"`` resolves to the packaged MiniLM, so this works offline.
        train_pairs: the (question, answer) pairs trained on.
        val_pairs: the pairs the epoch is chosen on (MRR among their distinct answers).
        out_dir: where the chosen model is saved (e.g. ``RUN/models/finetuned_teacher``): a
            SentenceTransformer directory plus ``finetune.json``. Written to a temporary sibling
            and renamed into place, replacing a previous one.
        epochs: epochs trained; the best of ``1 .. epochs`` on validation MRR is kept.
        lr: AdamW's peak learning rate.
        batch_size: pairs per batch (the in-batch negatives of each question).
        warmup: the fraction of all steps the learning rate warms up over.
        weight_decay: AdamW weight decay (not on biases and LayerNorm parameters).
        seed: seeds the batch order and dropout; on CPU a run is reproducible.
        progress: print one line per epoch.

    Returns:
        A :class:`FinetuneResult`; its ``encoder`` holds the chosen weights.
    """
    _check_args(cfg_teacher, len(train_pairs), len(val_pairs), epochs, batch_size)
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = _load_trainable(cfg_teacher)
    encoder = FinetunedEncoder(model, cfg_teacher.batch_size)
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    total = epochs * math.ceil(len(train_pairs) / batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(warmup * total), total)
    val = answer_candidates(val_pairs)

    val_mrr = [retrieval_on_texts(encoder, *val)["mrr"]]
    losses: list[float] = []
    seconds = 0.0
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        losses.append(
            _train_epoch(model, loss_fn, train_pairs, batch_size, generator, optimizer, scheduler)
        )
        seconds += time.perf_counter() - start
        if not math.isfinite(losses[-1]):
            raise TrainingError(f"finetuned_teacher: epoch {epoch}: training loss {losses[-1]}")
        val_mrr.append(retrieval_on_texts(encoder, *val)["mrr"])
        if epoch == 1 or val_mrr[epoch] > max(val_mrr[1:epoch]):
            best_state = copy.deepcopy(model.state_dict())
        if progress:
            print(
                f"finetuned_teacher: epoch {epoch}/{epochs} loss {losses[-1]:.4f} "
                f"val_mrr {val_mrr[epoch]:.4f} ({seconds:.0f} s)"
            )
    model.load_state_dict(best_state)
    result = FinetuneResult(
        best_epoch=max(range(1, epochs + 1), key=lambda e: (val_mrr[e], -e)),
        val_mrr=val_mrr,
        train_loss=losses,
        train_seconds=seconds,
        path=Path(out_dir),
        encoder=encoder,
        recipe={
            "model": cfg_teacher.model,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "warmup": warmup,
            "weight_decay": weight_decay,
            "seed": seed,
            "n_train": len(train_pairs),
            "n_val": len(val_pairs),
        },
    )
    save_model(model, Path(out_dir), result.summary())
    return result


def save_model(model: Any, out_dir: Path, summary: dict[str, Any]) -> None:
    """Save ``model`` and ``summary`` (as ``finetune.json``) to ``out_dir``: written into a
    temporary sibling directory, then renamed into place (an old ``out_dir`` is replaced)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700 directories; the usual mode for a model directory
    old = tmp.with_name(tmp.name + ".old")
    try:
        model.save(str(tmp), create_model_card=False)
        write_json(tmp / RESULT_FILE, summary)
        for path in tmp.rglob("*"):  # the usual modes (safetensors writes 0600 weights)
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except OSError as exc:
        raise CellcubeError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    finally:
        for leftover in (tmp, old):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(leftover)
