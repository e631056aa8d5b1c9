"""The study's plans: which runs a plan makes (corpora, seeds, folds, train sizes, variants).

A :class:`Run` is one planned ``cellcube train`` of :mod:`benchmarks.study`; its key is what
resume matches in the results file (:mod:`benchmarks.study_results`). :func:`plan_runs` lists a
plan's runs; :func:`cube_variants`, :func:`tune_variants`, :func:`model_variants` and
:func:`budget_variants` are the variants of plans ``cube``, ``tune``, ``variants`` and
``budget``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.study_results import overrides_hash
from cellcube.errors import CellcubeError

SMALL_CORPORA = ("chatterbot", "zaragoza", "tech")
CURVE_SIZES: tuple[int | str, ...] = (250, 500, 1000, 2000, 4000, 8000, "all")
FINETUNE_SIZES: tuple[int | str, ...] = (1000, "all")
CUBE_STEPS = (3, 4, 6, 8)
CUBE_LATTICES = ((4, 4, 4), (4, 4, 8), (8, 8, 4))
DEFAULT_CUBE = ((4, 4, 4), 4)  # the built-in default's lattice and steps: variant "default"
TUNE_LRS = (3e-4, 1e-3, 3e-3)
TUNE_WDS = (0.01, 0.3, 3.0)
TUNED_MODELS = ("cube", "no_lattice", "linear", "mlp", "cube_0_steps")
# plans `variants` and `budget` also run chitchat at this train size, seed 0 (when the plan's
# corpora and seeds are not replaced on the command line)
CHITCHAT_EXTRA = ("chitchat", 0, 4000)
# the cube read after these step counts in every `variants` run (report `confidence.steps`)
STEPS_CURVE = (0, 3, 4, 6, 8, 12, 16)
ANYTIME = ("cube.steps_range=[3,8]", "cube.fire_rate=0.5", "eval.passes=8")
# plan `budget`: (variant, lattice, channels, rank of the `linear` baseline); the rank gives the
# low-rank linear about the cube's parameter count (None: full rank, 147,840 parameters, the
# most a rank can usefully have); the mlp is sized by the cube in every run
BUDGET = (
    ("budget_c1", (4, 4, 4), 1, 17),
    ("budget_c2", (4, 4, 4), 2, 33),
    ("budget_c4", (4, 4, 4), 4, 67),
    ("budget_c8", (4, 4, 4), 8, 134),
    ("default", (4, 4, 4), 16, None),
    ("budget_c32", (4, 4, 4), 32, None),
    ("budget_8x8x4", (8, 8, 4), 16, None),
)


@dataclass(frozen=True)
class Variant:
    """A named config variant: ``--set`` overrides on top of the base config."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """One planned ``cellcube train`` run."""

    plan: str
    corpus: str
    seed: int
    variant: Variant
    train_size: int | str = "all"
    fold: int | None = None
    folds: int = 0
    extra: tuple[str, ...] = field(default=())

    @property
    def overrides(self) -> list[str]:
        """The variant's overrides, ``data.folds`` and ``--set`` extras (what the hash covers)."""
        folds = [f"data.folds={self.folds}"] if self.folds else []
        return [*self.variant.overrides, *folds, *self.extra]

    @property
    def key(self) -> tuple:
        """(corpus, seed, fold, train size, variant name, overrides hash): what resume matches."""
        return (
            self.corpus,
            self.seed,
            self.fold,
            self.train_size,
            self.variant.name,
            overrides_hash(self.overrides),
        )

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"_f{self.fold}"
        return (
            f"{self.corpus}/{self.variant.name}_s{self.seed}{fold}_n{self.train_size}"
            f"_{overrides_hash(self.overrides)}"
        )

    def sets(self) -> list[str]:
        """Every ``--set`` of the run's ``cellcube train``."""
        sets = [f"data.corpus={self.corpus}", f"seed={self.seed}", "train.progress=false"]
        if self.fold is not None:
            sets.append(f"data.fold={self.fold}")
        if self.train_size != "all":
            sets.append(f"data.max_train={self.train_size}")
        return [*sets, *self.overrides]


# -- plans -------------------------------------------------------------------------------------


def cube_variants() -> list[Variant]:
    """The default cube's steps x lattices that the faces reshaper allows (T >= Z-1)."""
    out = []
    for lattice in CUBE_LATTICES:
        for steps in CUBE_STEPS:
            if steps < lattice[2] - 1:
                continue  # the input face cannot reach the output face
            if (lattice, steps) == DEFAULT_CUBE:
                out.append(Variant("default"))
                continue
            x, y, z = lattice
            out.append(
                Variant(
                    f"T{steps}_{x}x{y}x{z}", (f"cube.lattice=[{x},{y},{z}]", f"cube.steps={steps}")
                )
            )
    return out


def tune_variants() -> list[Variant]:
    """The lr x weight-decay grid, each cell set for every trained model alike."""
    out = []
    for lr in TUNE_LRS:
        for wd in TUNE_WDS:
            sets = []
            for model in TUNED_MODELS:
                sets += [
                    f"train.models.{model}.lr={lr!r}",
                    f"train.models.{model}.weight_decay={wd!r}",
                ]
            out.append(Variant(f"lr{lr:g}_wd{wd:g}", tuple(sets)))
    return out


def model_variants() -> list[Variant]:
    """Plan ``variants`` (issue 16): the default cube, the cube refining a residual linear map
    (reading the question or the map's output), the clamped input face, and anytime training
    (T drawn from 3..8, a loss at every step, stochastic cells, K = 8 passes at inference),
    unclamped and clamped; every variant but the default also reads the cube at
    :data:`STEPS_CURVE` steps."""
    curve = f"eval.steps_curve=[{','.join(str(t) for t in STEPS_CURVE)}]"
    return [
        Variant("default"),
        Variant("refine_input", ("cube.base=linear", curve)),
        Variant("refine_base", ("cube.base=linear", "cube.reads=base", curve)),
        Variant("clamp", ("cube.clamp=true", curve)),
        Variant("anytime", (*ANYTIME, curve)),
        Variant("anytime_clamp", ("cube.clamp=true", *ANYTIME, curve)),
    ]


def large_variants() -> list[Variant]:
    """Plan ``large`` (issue 16, item 6): on the full chitchat corpus, the default cube, the
    default lattice at T = 12, and the largest lattice, 8x8x8 cells of 32 channels at T = 8 (the
    fewest steps that reach the output face), with an mlp of its size (1.6M parameters)."""
    return [
        Variant("T12", ("cube.steps=12",)),
        Variant("T8_8x8x8_c32", ("cube.lattice=[8,8,8]", "cube.channels=32", "cube.steps=8")),
        # today's default config, spelled as the headline's chitchat run was made (the key set to
        # its default value), so that run is this variant's: no second run of the same config
        Variant("default", ("train.select_window=3",)),
    ]


def budget_variants() -> list[Variant]:
    """Plan ``budget`` (issue 16): the cube from about 13k to 800k parameters (:data:`BUDGET`),
    with the mlp sized by it and the ``linear`` baseline at a rank of about its size."""
    out = []
    for name, (x, y, z), channels, rank in BUDGET:
        if name == "default":
            out.append(Variant("default"))
            continue
        sets = [f"cube.lattice=[{x},{y},{z}]", f"cube.channels={channels}"]
        out.append(Variant(name, (*sets, *([f"eval.linear_rank={rank}"] if rank else []))))
    return out


PLAN_DEFAULTS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "small": (SMALL_CORPORA, (0, 1, 2, 3, 4)),
    "curve": (("chitchat",), (0,)),
    "cube": (SMALL_CORPORA, (0, 1, 2)),
    "tune": (SMALL_CORPORA, (0, 1, 2)),
    "variants": (SMALL_CORPORA, (0, 1, 2)),
    "budget": (("chatterbot",), (0, 1, 2)),
    "large": (("chitchat",), (0,)),
}
PLAN_VARIANTS = {
    "small": lambda: [Variant("default")],
    "cube": cube_variants,
    "tune": tune_variants,
    "variants": model_variants,
    "budget": budget_variants,
    "large": large_variants,
}


def plan_runs(
    plan: str,
    corpora: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    folds: int = 0,
    extra: Sequence[str] = (),
) -> list[Run]:
    """Every run of ``plan`` (``corpora`` / ``seeds`` replace the plan's own; ``folds`` >= 2 runs
    each fold of every seed)."""
    if plan not in PLAN_DEFAULTS:
        raise CellcubeError(f"--plan: unknown plan {plan!r}; expected one of {', '.join(PLANS)}")
    extra_runs = corpora is None and seeds is None and plan in ("variants", "budget")
    corpora = tuple(corpora or PLAN_DEFAULTS[plan][0])
    seeds = tuple(PLAN_DEFAULTS[plan][1] if seeds is None else seeds)
    cells: list[tuple[Variant, int | str]]
    if plan == "curve":
        cells = [
            (
                Variant("finetune", ("eval.finetune_teacher=true",))
                if n in FINETUNE_SIZES
                else Variant("default"),
                n,
            )
            for n in CURVE_SIZES
        ]
    else:
        cells = [(v, "all") for v in PLAN_VARIANTS[plan]()]
    fold_ids: list[int | None] = list(range(folds)) if folds else [None]
    runs = [
        Run(plan, corpus, seed, variant, size, fold, folds, tuple(extra))
        for corpus in corpora
        for variant, size in cells
        for seed in seeds
        for fold in fold_ids
    ]
    if extra_runs:  # after the plan's own runs: one larger corpus at one train size
        corpus, seed, size = CHITCHAT_EXTRA
        runs += [
            Run(plan, corpus, seed, variant, size, fold, folds, tuple(extra))
            for variant, _ in cells
            for fold in fold_ids
        ]
    return runs


PLANS = tuple(PLAN_DEFAULTS)
