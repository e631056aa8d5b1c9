"""The one configuration object, validated at the edge.

A run is described by a single YAML file (``configs/default.yaml`` is the shipped default) whose
sections mirror the pipeline: ``data`` -> ``teacher`` (and ``teachers`` for multi-teacher
distillation) -> ``cache`` -> ``cube`` -> ``train`` -> ``loss`` -> ``eval``.
:func:`load_config` reads it, applies ``--set section.key=value`` overrides, and validates
everything with pydantic: an unknown key or a bad value becomes one :class:`ConfigError` line
naming the key, so no stage ever sees an unchecked setting. Every key is documented in
``docs/configuration.md``.
"""

from cellcube.config.loading import apply_overrides, dump_config, load_config
from cellcube.config.schema import (
    TRAINED_MODELS,
    CacheConfig,
    Config,
    CubeConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    OptimiserConfig,
    TeacherConfig,
    TeachersConfig,
    TrainConfig,
)

__all__ = [
    "TRAINED_MODELS",
    "CacheConfig",
    "Config",
    "CubeConfig",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "OptimiserConfig",
    "TeacherConfig",
    "TeachersConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
]
