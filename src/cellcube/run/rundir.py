"""The run directory: every path and file of a run, read and written in one place.

A run directory holds everything needed to evaluate or query a run again::

    RUN/config.yaml                          the resolved, validated config
    RUN/pairs.jsonl                          every pair with its split (train / val / test);
                                             train pairs also with their curriculum difficulty
    RUN/models/<name>/checkpoints/best.ckpt  the best epoch by validation MRR (every trained
    RUN/models/<name>/checkpoints/last.ckpt  model: cube, no_lattice, linear, mlp,
                                             cube_0_steps), the last epoch (for --resume),
    RUN/models/<name>/logs/                  Lightning's CSV and TensorBoard logs,
    RUN/models/<name>/DONE                   and a marker written once the model is trained
                                             (JSON: its training wall time, train_seconds)
    RUN/models/ridge.pt                      the ridge baseline (alpha chosen on validation;
                                             its fit time)
    RUN/report.json                          test metrics of every model
    RUN/report.html                          the report page (cellcube report)
    RUN/plots/training.png                   validation MRR and training loss per epoch

No other module spells these paths: the pipeline, evaluation and answering go through
:class:`RunDir`. Every file is written atomically (:mod:`cellcube.io`), and every reading error is
one :class:`~cellcube.errors.CheckpointError` line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellcube.config import Config, dump_config, load_config
from cellcube.data.records import QAPair, Split, pair_from_record, pair_to_record
from cellcube.embed.splits import SPLITS
from cellcube.errors import CheckpointError
from cellcube.io import (
    atomic_open,
    remove_stale_temps,
    run_lock,
    write_json,
    write_text,
    write_torch,
)
from cellcube.models.baselines import Ridge, build_model
from cellcube.train.checkpoints import load_heads, load_weights
from cellcube.train.modeldir import ModelDir

REPORT_KEYS = {
    "models",
    "n_test",
    "n_candidates",
    "n_train",
    "n_val",
    "teacher",
    "cellcube_version",
}
"""The keys every report.json holds (:meth:`RunDir.read_report` checks them)."""


@dataclass(frozen=True)
class RunDir:
    """A run directory (see the module docstring for its layout) and its reading and writing.

    Example::

        run = RunDir(Path("runs/demo"))
        cfg = run.read_config()
        split = run.read_pairs()
        cube = run.load_model("cube", cfg, dim=384)
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.jsonl"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def ridge(self) -> Path:
        return self.models / "ridge.pt"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def report_html(self) -> Path:
        """The report page (:mod:`cellcube.report`)."""
        return self.root / "report.html"

    @property
    def bank(self) -> Path:
        """Stored phrase banks (:mod:`cellcube.decode.bank`), one directory per bank."""
        return self.root / "bank"

    @property
    def plot(self) -> Path:
        return self.root / "plots" / "training.png"

    @property
    def finetuned(self) -> Path:
        """The fine-tuned teacher (``eval.finetune_teacher``): a SentenceTransformer directory
        with its ``finetune.json`` record."""
        return self.models / "finetuned_teacher"

    def model(self, name: str) -> ModelDir:
        """The directory of trained model ``name`` (one of
        :data:`~cellcube.config.TRAINED_MODELS`)."""
        return ModelDir(self.models / name)

    # -- the run as a whole ---------------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether a run was already started here (its config.yaml exists)."""
        return self.config.exists()

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the run directory's lock (:func:`cellcube.io.run_lock`) for the body, after
        removing the temporary files a killed earlier process left behind."""
        with run_lock(self.root):
            remove_stale_temps(self.root)
            yield

    def start(self, cfg: Config, split: Split, difficulty: torch.Tensor) -> None:
        """Begin a fresh run: old models removed, then pairs.jsonl and config.yaml written."""
        shutil.rmtree(self.models, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_pairs(split, difficulty)
        self.write_config(cfg)

    # -- config.yaml ----------------------------------------------------------------------------

    def read_config(self, overrides: Sequence[str] = ()) -> Config:
        """The run's resolved config, with ``--set`` style ``overrides`` applied."""
        self._require(self.config)
        return load_config(self.config, overrides)

    def write_config(self, cfg: Config) -> None:
        write_text(self.config, dump_config(cfg))

    # -- pairs.jsonl ----------------------------------------------------------------------------

    def write_pairs(self, split: Split, difficulty: torch.Tensor) -> None:
        """One JSON line per pair with its split and every field of the pair
        (:func:`cellcube.data.records.pair_to_record`); train pairs also carry
        their curriculum ``difficulty`` (see
        :func:`cellcube.objectives.curriculum.teacher_difficulty`)."""
        with atomic_open(self.pairs, "w") as fh:
            for name in SPLITS:
                for i, pair in enumerate(getattr(split, name)):
                    rec = pair_to_record(pair, name)
                    if name == "train":
                        rec["difficulty"] = round(float(difficulty[i]), 4)
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def read_pairs(self) -> Split:
        """The run's own split, every pair field kept (what resume, evaluate and ask use)."""
        self._require(self.pairs)
        buckets: dict[str, list[QAPair]] = {name: [] for name in SPLITS}
        with self.pairs.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                    buckets[rec["split"]].append(pair_from_record(rec))
                except (ValueError, KeyError, TypeError):
                    raise CheckpointError(f"{self.pairs}:{n}: corrupt run record") from None
        return Split(**buckets)

    # -- models ---------------------------------------------------------------------------------

    def is_done(self, name: str) -> bool:
        return self.model(name).done.exists()

    def mark_done(self, name: str, train_seconds: float | None = None) -> None:
        """Mark model ``name`` trained; the marker records ``train_seconds``, the wall time of
        the training that finished it (after ``--resume``: of the resumed part only)."""
        write_json(self.model(name).done, {"train_seconds": train_seconds})

    def train_seconds(self, name: str) -> float | None:
        """The training time recorded by :meth:`mark_done` (None: not recorded, e.g. a marker
        of an older run, or a model not marked done)."""
        try:
            record = json.loads(self.model(name).done.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return None
        except ValueError:
            raise CheckpointError(f"{self.model(name).done}: corrupt training record") from None
        seconds = record.get("train_seconds") if isinstance(record, dict) else None
        return float(seconds) if isinstance(seconds, int | float) else None

    def load_model(self, name: str, cfg: Config, dim: int) -> nn.Module:
        """Trained model ``name`` from its best checkpoint, in eval mode."""
        return load_weights(build_model(name, dim, cfg), self.model(name).best)

    def load_heads(self) -> dict[str, nn.Linear]:
        """The cube's projection heads into the other teachers' spaces (multi-teacher runs)."""
        return load_heads(self.model("cube").best)

    def write_ridge(self, ridge: Ridge) -> None:
        write_torch(self.ridge, ridge.state_dict())

    def load_ridge(self) -> Ridge:
        """The ridge baseline; tensors only (``weights_only=True``): a pickle is refused."""
        try:
            state = torch.load(self.ridge, map_location="cpu", weights_only=True)
            return Ridge(**state)
        except FileNotFoundError:
            raise CheckpointError(f"{self.ridge}: no such file") from None
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"{self.ridge}: refused: the file holds Python objects other than tensors and "
                "plain data; nothing in it was run"
            ) from None
        except Exception as exc:
            raise CheckpointError(
                f"{self.ridge}: corrupt ridge baseline ({exc.__class__.__name__})"
            ) from None

    # -- report ---------------------------------------------------------------------------------

    def write_report(self, report: dict[str, Any]) -> None:
        write_json(self.report, report)

    def read_report(self) -> dict[str, Any]:
        """The run's report.json (written by ``cellcube train`` or ``cellcube evaluate``)."""
        self._require(self.report)
        try:
            report = json.loads(self.report.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            report = None
        if not (isinstance(report, dict) and report.keys() >= REPORT_KEYS and report["models"]):
            raise CheckpointError(f"{self.report}: corrupt report; run `cellcube evaluate` again")
        return report

    def _require(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; is {self.root} a cellcube run directory?")
