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


def describe_os_error(e: OSError) -> str:
    """One line for a file-system error on a user's path: the path, what went wrong, and what to do."""
    import errno

    path = e.filename if e.filename is not None else "a file"
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    code = e.errno
    if code == errno.ENOSPC:
        return (f"no space left on the device while writing {path}; free some space (or choose another --out) and "
                "run the same command with --resume: everything finished so far is kept")
    if code == errno.EDQUOT:
        return f"disk quota exceeded while writing {path}; free some space and run the same command with --resume"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path}; choose a folder you can write to (--out) or fix its permissions"
    if code == errno.EROFS:
        return f"{path} is on a read-only file system; choose a writable folder (--out)"
    if code == errno.EISDIR:
        return f"{path} is a folder, but a file was expected there; give the path of a file"
    if code == errno.ENOTDIR:
        return f"{path}: part of this path is a file, not a folder; choose another path"
    if code == errno.EEXIST:
        return f"{path} already exists and is not a folder; choose another path"
    if code == errno.ENOENT:
        return f"{path} does not exist; check the path"
    return f"{path}: {e.strerror or e}"
