"""One way to run a model for evaluation: eval mode, no grad, batched, logits back on the CPU in float32."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor | Any, batch_size: int = 1024,
                   device: torch.device | str | None = None) -> Tensor:
    """``model``'s outputs on ``x`` in order: a tensor of inputs, or a split with ``inputs(batch_size)``
    (an in-memory :class:`~gendistill.data.Split` or a :class:`~gendistill.data.DatasetSplit`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    chunks = (x[i : i + batch_size] for i in range(0, len(x), batch_size)) if isinstance(x, Tensor) else x.inputs(batch_size)
    was_training = model.training
    model.eval()
    try:
        out = [model(xb.to(device, non_blocking=True)).float().cpu() for xb in chunks]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str, key: str = "train.device") -> str:
    """``name`` when it is auto, cpu, cuda, cuda:N or mps, else a one-line :class:`ConfigError` naming ``key``."""
    from ..errors import ConfigError

    if not isinstance(name, str) or not _DEVICE.fullmatch(name.strip().lower()):
        raise ConfigError(f"{key} must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps, got {name!r}")
    return name.strip().lower()


def select_device(name: str = "auto", key: str = "train.device") -> torch.device:
    from ..errors import ConfigError
    from .distributed import is_distributed, local_rank

    name = check_device_name(name, key)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank()) if is_distributed() else torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{key} is {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                          f"use cuda:0..cuda:{torch.cuda.device_count() - 1} or 'auto'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{key} is 'mps' but no Apple MPS device is available; use 'auto' or 'cpu'")
    return dev
