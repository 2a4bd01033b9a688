"""Errors raised by kf_core.

Every error a user can cause says what was wrong and what to do about it. None of them knows about HTTP:
the service maps them to status codes in one place.

    KfError
    ├── ConfigError                 a recipe or config value is invalid
    ├── UnknownNameError            a name that is not registered (LookupError)
    │   ├── UnknownArchitectureError
    │   ├── UnknownRecipeError
    │   ├── UnknownTaskError
    │   └── UnknownOutputError
    ├── EmptyTaskListError          no task was given
    ├── InputShapeError             data does not fit a network's or teacher's input
    ├── DataError                   a data file or array is malformed
    │   └── LabelError              a label array has the wrong length, dtype or range
    ├── ModelFileError              a model file is corrupt, of the wrong format or unsafe
    ├── CheckpointError             a checkpoint cannot be used to resume this run
    ├── ExportMismatchError         an exported graph disagrees with its torch module
    └── TrainingCancelled           a callback asked the training loop to stop
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EmptyTaskListError",
    "ExportMismatchError",
    "InputShapeError",
    "KfError",
    "LabelError",
    "ModelFileError",
    "TrainingCancelled",
    "UnknownArchitectureError",
    "UnknownNameError",
    "UnknownOutputError",
    "UnknownRecipeError",
    "UnknownTaskError",
]


class KfError(Exception):
    """Base class of every error kf_core raises on purpose."""


class ConfigError(KfError, ValueError):
    """A recipe or configuration value is invalid."""


class UnknownNameError(KfError, LookupError):
    """A name that is not known; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        shown = ", ".join(sorted(self.known)) or "(none)"
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {shown}")


class UnknownArchitectureError(UnknownNameError):
    """No network architecture is registered under this name."""


class UnknownRecipeError(UnknownNameError):
    """No built-in recipe has this name (and it is not a recipe file)."""


class UnknownTaskError(UnknownNameError):
    """A task name that the factor set, dataset or teacher does not have."""


class UnknownOutputError(UnknownNameError):
    """A teacher output name that the teacher model does not produce."""


class EmptyTaskListError(KfError, ValueError):
    """An operation that needs at least one task got none."""


class InputShapeError(KfError, ValueError):
    """Data whose shape does not fit the network or teacher input."""


class DataError(KfError, ValueError):
    """A data file or array is malformed."""


class LabelError(DataError):
    """A label array has the wrong length, dtype or value range."""


class ModelFileError(KfError, ValueError):
    """A model file is corrupt, not of the expected format, or unsafe to load."""


class CheckpointError(KfError):
    """A checkpoint does not belong to this run or cannot be read."""


class ExportMismatchError(KfError):
    """An exported or assembled ONNX graph does not reproduce the torch module's outputs."""


class TrainingCancelled(KfError):
    """Raised inside the training loop when a callback requests cancellation."""
