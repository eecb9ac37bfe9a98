"""User-facing errors.

Every error a user can cause by bad input (config, data folder, checkpoint, diverging loss) is a
:class:`GendistillError`. The CLI prints its message on one line and exits with code 2; the Python API
lets it propagate. Messages name the problem and the fix.
"""

from __future__ import annotations


class GendistillError(Exception):
    """Base class of errors caused by user input; the CLI exits with code 2 on these."""


class ConfigError(GendistillError):
    """A config key is unknown, has the wrong type, or is out of range."""


class DataError(GendistillError):
    """A dataset is missing, malformed, or does not match the models."""


class CheckpointError(GendistillError):
    """A checkpoint is missing, not safetensors, corrupt, or does not fit the model."""


class NonFiniteLossError(GendistillError):
    """A loss part became NaN or infinite during training."""

    def __init__(self, message: str, epoch: int, part: str):
        super().__init__(message)
        self.epoch = epoch
        self.part = part
