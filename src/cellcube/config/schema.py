"""The configuration schema: one pydantic section per pipeline stage, and :class:`Config`.

Every section forbids unknown keys and rejects ``inf`` / ``nan``; cross-field rules live in the
sections' validators. Reading YAML into these models is :mod:`cellcube.config.loading`'s job.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `temperature: .nan` is a config error, not a NaN loss.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _corruption_spec(spec: str) -> str:
    """A corruption spec (``typo:0.05``, ``drop:0.2``) checked and in canonical form
    (:meth:`cellcube.data.corrupt.Corruption.parse`)."""
    # imported here: cellcube.data imports this module (a module-level import would be circular)
    from cellcube.data.corrupt import Corruption

    return str(Corruption.parse(spec))


CorruptionSpec = Annotated[str, AfterValidator(_corruption_spec)]
"""A config string naming one text corruption, ``kind:rate`` (:mod:`cellcube.data.corrupt`)."""


class DataConfig(_Section):
    """Where the question/answer pairs come from and how they are split."""

    corpus: Literal["chatterbot", "zaragoza", "tech", "chitchat"] = "chatterbot"
    # chitchat only: question turns and their replies, or every consecutive turn pair
    chitchat_turns: Literal["questions", "all"] = "questions"
    path: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    skip_invalid: bool = False
    context_turns: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(0, ge=0)
    fold: int = Field(0, ge=0)
    max_train: int | None = Field(None, ge=1)
    # mode denoise: one corrupted copy of every text per corruption (cellcube.data.corrupt)
    denoise: list[CorruptionSpec] = Field(default_factory=lambda: ["typo:0.2", "drop:0.3"])

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 10% of the pairs for training"
            )
        if self.folds == 1 or self.fold >= max(self.folds, 1):
            raise ValueError(
                f"folds must be 0 (no cross-validation) or >= 2 and fold in 0..folds-1, got "
                f"folds={self.folds}, fold={self.fold}"
            )
        return self


class TeacherConfig(_Section):
    """A frozen encoder that turns text into embeddings (the primary one, or one of
    ``teachers.others``)."""

    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = "all-MiniLM-L6-v2"
    kind: Literal["sentence-transformers", "transformers"] = "sentence-transformers"
    pooling: Literal["mean", "cls", "last"] = "mean"
    layer: int | None = None
    gguf_file: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"
    max_length: int = Field(256, ge=8)
    batch_size: int = Field(64, ge=1)
    standardize: bool = False

    @model_validator(mode="after")
    def _transformers_only(self) -> TeacherConfig:
        if self.kind == "sentence-transformers" and (
            self.pooling != "mean" or self.layer is not None or self.gguf_file is not None
        ):
            raise ValueError(
                "pooling, layer and gguf_file apply to kind 'transformers' only (a "
                "sentence-transformers model has its own pipeline)"
            )
        return self

    @property
    def label(self) -> str:
        """The teacher's short name: ``name``, or the last part of ``model``."""
        return self.name or self.model.rstrip("/").rsplit("/", 1)[-1]


class TeachersConfig(_Section):
    """Multi-teacher distillation: teachers besides the primary ``teacher``, and their weights.

    The cube works in the primary teacher's space; each other teacher gets a learned projection
    head from that space to its own, where its loss is computed (see "Multi-teacher" in the
    ``docs/multi_teacher.md`` and :mod:`cellcube.objectives.multiteacher`).
    """

    others: list[TeacherConfig] = Field(default_factory=list)
    weighting: Literal["adaptive", "uniform", "fixed"] = "adaptive"
    temperature: float = Field(1.0, gt=0)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self) -> TeachersConfig:
        if self.weighting == "fixed":
            if self.weights is None or len(self.weights) != len(self.others) + 1:
                raise ValueError(
                    f"weighting 'fixed' needs weights: one per teacher, the primary first "
                    f"({len(self.others) + 1} numbers)"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        elif self.weights is not None:
            raise ValueError("weights apply to weighting 'fixed' only")
        return self


class CacheConfig(_Section):
    """The on-disk embedding cache (SQLite), shared by all runs that point at it."""

    path: str = "~/.cache/cellcube/embeddings.sqlite"
    enabled: bool = True


class CubeConfig(_Section):
    """The 3D lattice of cells and its shared update rule."""

    lattice: tuple[int, int, int] = (4, 4, 4)
    channels: int = Field(16, ge=1)
    hidden: int = Field(64, ge=1)
    steps: int = Field(4, ge=0)
    neighbourhood: Literal[6, 26] = 6
    boundary: Literal["zero", "periodic"] = "zero"
    reshaper: Literal["faces", "learned", "plain"] = "faces"
    fire_rate: float = Field(1.0, gt=0, le=1)
    checkpointing: bool = False
    # variants (docs/cube.md "Variants"): the cube as a refinement of a residual linear map
    # (cellcube.models.refine), the input face clamped at every step, no residual path around
    # the lattice, and training at a step count drawn from a range with a loss at every step
    base: Literal["none", "linear"] = "none"
    reads: Literal["input", "base"] = "input"
    clamp: bool = False
    skip: bool = True
    steps_range: tuple[int, int] | None = None

    @field_validator("lattice")
    @classmethod
    def _lattice(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(n < 1 for n in value):
            raise ValueError(f"lattice sides must be >= 1, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _reach(self) -> CubeConfig:
        depth = self.lattice[2]
        if self.reshaper == "faces" and 0 < self.steps < depth - 1:
            raise ValueError(
                f"steps={self.steps} cannot carry information from the input face (z=0) to the "
                f"output face (z={depth - 1}); use steps >= {depth - 1}, a shallower lattice, "
                "or steps=0 for the ablation"
            )
        return self

    @model_validator(mode="after")
    def _variants(self) -> CubeConfig:
        if self.reads == "base" and self.base == "none":
            raise ValueError("reads=base needs a base map to read: set base=linear")
        if self.base == "linear" and not self.skip:
            raise ValueError("base=linear adds the cube's change to the base map: keep skip=true")
        if self.clamp and self.reshaper != "faces":
            raise ValueError("clamp rewrites the input face: it needs reshaper=faces")
        if self.steps_range is not None:
            lo, hi = self.steps_range
            reach = self.lattice[2] - 1 if self.reshaper == "faces" else 1
            if not reach <= lo <= hi:
                raise ValueError(
                    f"steps_range=[{lo}, {hi}]: need {reach} <= lo <= hi (lo >= {reach} steps "
                    "carry the input to the output)"
                )
        return self

    @property
    def n_cells(self) -> int:
        return math.prod(self.lattice)


TRAINED_MODELS = ("cube", "no_lattice", "linear", "mlp", "cube_0_steps")
"""The models a run trains (the cube, then its trained baselines), in training order: the names
``train.models`` accepts."""


class OptimiserConfig(_Section):
    """One model's own AdamW settings (``train.models.<name>``); an unset value falls back to
    ``train.lr`` / ``train.weight_decay``."""

    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)


TUNED_OPTIMISERS: dict[str, dict[str, float]] = {
    "no_lattice": {"weight_decay": 0.3},
    "cube_0_steps": {"weight_decay": 0.3},
}
"""``train.models``' defaults: the models whose validation-chosen (lr, weight decay) differ from
``train.lr`` / ``train.weight_decay``. A config file that sets ``train.models`` replaces them
(``models: {}``: every model at ``train.lr`` / ``train.weight_decay``); ``--set
train.models.<name>.<key>`` changes one entry and keeps the others."""


class TrainConfig(_Section):
    """Optimisation of the cube and of the trained baselines: the same budget, loss and early
    stopping for all; learning rate and weight decay per model (``models``) where set."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(3.0, ge=0)
    patience: int = Field(8, ge=1)
    # best checkpoint and early stopping by the mean val MRR of the last N epochs
    # (cellcube.train.selection); 1: the single best epoch
    select_window: int = Field(3, ge=1)
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    accelerator: str = "cpu"
    progress: bool = True
    # keep freed memory in the process for the next step instead of returning it to the system
    # (glibc malloc; cellcube.train.memory): the same numbers, fewer page faults
    keep_freed_memory: bool = True
    # process-group backend under torchrun (cellcube.train.distributed); auto: nccl on GPU, else
    # gloo
    ddp_backend: Literal["auto", "gloo", "nccl"] = "auto"
    # per-model lr / weight decay: {name: {lr: .., weight_decay: ..}}; unset: lr / weight_decay.
    # The defaults are the study's tuning grid's choices on validation (docs/study.md, plan tune)
    models: dict[str, OptimiserConfig] = Field(
        default_factory=lambda: {k: OptimiserConfig(**v) for k, v in TUNED_OPTIMISERS.items()}
    )
    # corrupted copies of the TRAIN questions, one per corruption, same answers (after the split)
    augment: list[CorruptionSpec] = Field(default_factory=list)
    # a run directory whose trained cube initialises this run's cube (same cube config and dim)
    init_from: str | None = None

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, OptimiserConfig]) -> dict[str, OptimiserConfig]:
        unknown = sorted(set(value) - set(TRAINED_MODELS))
        if unknown:
            raise ValueError(
                f"unknown model {unknown[0]!r}; expected one of {', '.join(TRAINED_MODELS)}"
            )
        return value

    def optimiser(self, model: str) -> tuple[float, float]:
        """``(lr, weight_decay)`` of ``model``: its ``models`` entry, else ``lr`` /
        ``weight_decay``."""
        own = self.models.get(model, OptimiserConfig())
        return (
            self.lr if own.lr is None else own.lr,
            self.weight_decay if own.weight_decay is None else own.weight_decay,
        )


class LossConfig(_Section):
    """The training objective (:mod:`cellcube.objectives.losses`), its mined negatives and
    curriculum.

    The weights ``infonce`` .. ``diversity`` scale the terms of the sum; 0 leaves a term out.
    """

    infonce: float = Field(1.0, ge=0)
    cosine: float = Field(1.0, ge=0)
    mse: float = Field(0.0, ge=0)
    triplet: float = Field(0.0, ge=0)
    diversity: float = Field(1.0, ge=0)
    temperature: float = Field(0.05, gt=0)
    margin: float = Field(0.2, ge=0)
    hard_negatives: int = Field(0, ge=0)
    random_negatives: int = Field(0, ge=0)
    refresh_every: int = Field(1, ge=1)
    mine_by: Literal["prediction", "answer"] = "prediction"
    curriculum: bool = False
    curriculum_epochs: int = Field(10, ge=1)
    curriculum_start: float = Field(0.2, gt=0, le=1)

    @model_validator(mode="after")
    def _something_to_fit(self) -> LossConfig:
        if self.infonce + self.cosine + self.mse + self.triplet == 0:
            raise ValueError("at least one of infonce, cosine, mse, triplet must have a weight > 0")
        return self

    @property
    def n_negatives(self) -> int:
        return self.hard_negatives + self.random_negatives


class EvalConfig(_Section):
    """What is measured on the held-out test split."""

    ridge_alphas: list[float] = Field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    ks: list[int] = Field(default_factory=lambda: [1, 10])
    baselines: bool = True
    # resamples of the percentile bootstrap over test pairs (confidence intervals); 0: off
    bootstrap: int = Field(1000, ge=0)
    # the teacher itself fine-tuned on train (sentence-transformers recipe), reported as
    # `finetuned_teacher` (cellcube.models.finetune); its epoch (1..finetune_epochs) by val MRR
    finetune_teacher: bool = False
    finetune_epochs: int = Field(3, ge=1, le=3)
    finetune_lr: float = Field(2e-5, gt=0)
    finetune_batch_size: int = Field(32, ge=2)
    finetune_warmup: float = Field(0.1, ge=0, lt=1)
    # every model's test MRR on corrupted test questions, one entry per corruption (report
    # `robustness`; cellcube.eval.robustness); empty: off
    robustness: list[CorruptionSpec] = Field(default_factory=list)
    # the `linear` baseline's rank (e + U V e + b; cellcube.models.baselines); None: full rank
    linear_rank: int | None = Field(None, ge=1)
    # the cube's test/val MRR at each of these step counts (report `confidence.steps`)
    steps_curve: list[int] = Field(default_factory=list)
    # K stochastic passes of the cube (cube.fire_rate < 1) averaged, and whether their spread
    # predicts a top-1 miss, beside every model's top-1/top-2 margin (cellcube.eval.confidence)
    passes: int = Field(0, ge=0)

    @field_validator("steps_curve")
    @classmethod
    def _steps_curve(cls, value: list[int]) -> list[int]:
        if any(t < 0 for t in value):
            raise ValueError(f"steps_curve: step counts must be >= 0, got {value}")
        return value


class Config(_Section):
    """A complete, validated cellcube run configuration."""

    seed: int = Field(0, ge=0)
    mode: Literal["dialogue", "autoencoder", "denoise"] = "dialogue"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    teachers: TeachersConfig = Field(default_factory=TeachersConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    cube: CubeConfig = Field(default_factory=CubeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _teacher_names(self) -> Config:
        if self.teacher.standardize:
            raise ValueError(
                "teacher.standardize: applies to teachers.others only (the primary teacher's "
                "space is the cube's)"
            )
        labels = [t.label for t in (self.teacher, *self.teachers.others)]
        repeated = sorted({n for n in labels if labels.count(n) > 1})
        if repeated:
            raise ValueError(
                f"teachers.others: teacher name {repeated[0]!r} is used twice; give each a "
                "distinct `name`"
            )
        return self

    @model_validator(mode="after")
    def _passes(self) -> Config:
        if self.eval.passes and self.cube.fire_rate >= 1.0:
            raise ValueError(
                "eval.passes: stochastic passes need cube.fire_rate < 1 (at 1 every pass is "
                "the same)"
            )
        return self

    @model_validator(mode="after")
    def _denoise(self) -> Config:
        if self.mode == "denoise" and not self.data.denoise:
            raise ValueError("data.denoise: mode denoise needs at least one corruption")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, not tuples) suitable for YAML and checkpoints."""
        return self.model_dump(mode="json")
