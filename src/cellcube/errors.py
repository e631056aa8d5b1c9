"""User-facing errors.

Every problem a user can cause (a malformed data line, an unknown config key, a missing model
directory, a corrupt checkpoint) is raised as a :class:`CellcubeError` whose message names the
file, line or field at fault. The CLI prints that message on one line and exits with status 2,
without a traceback; anything else escaping is a bug in cellcube.
"""

from __future__ import annotations


class CellcubeError(Exception):
    """Base class for errors caused by the user's input, configuration or files."""


class ConfigError(CellcubeError):
    """An invalid configuration key or value."""


class DataError(CellcubeError):
    """A malformed or unusable data file or record."""


class TeacherError(CellcubeError):
    """A teacher encoder that cannot be found or loaded."""


class CheckpointError(CellcubeError):
    """A missing, truncated or otherwise unreadable checkpoint or run directory."""


class TrainingError(CellcubeError):
    """Training cannot go on, e.g. a NaN/inf loss or embedding (usually a too-large learning rate
    or a broken teacher); the message names the model, epoch and batch, and the last good
    checkpoint to resume from."""
