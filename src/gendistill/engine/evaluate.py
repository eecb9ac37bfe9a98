"""One way to run a model for evaluation: eval mode, no grad, batched, logits back on the CPU in float32."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024, device: torch.device | str | None = None) -> Tensor:
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(x[i : i + batch_size].to(device, non_blocking=True)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def select_device(name: str = "auto") -> torch.device:
    from .distributed import is_distributed, local_rank

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank()) if is_distributed() else torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return dev
