"""Checkpoints. Model weights are safetensors (never pickled); resume state is ``torch.save``'d and read
back only with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..errors import CheckpointError
from ..io import atomic_torch_save, atomic_write_bytes


def save_model(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write a model's ``state_dict`` as safetensors, atomically. Shared tensors are stored once per name."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, st_save(state, metadata=meta))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.suffix in {".pt", ".pth", ".pkl", ".bin", ".ckpt"}:
        raise CheckpointError(
            f"checkpoint {str(path)!r} looks like a pickle file; gendistill only loads safetensors and never "
            "unpickles files. Convert it where you trust it: "
            "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')"
        )
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, Exception) as e:  # header or payload unreadable
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e}); "
            "gendistill never unpickles files, so save the weights with safetensors"
        ) from None


def load_model(model: nn.Module, path: str | Path, role: str = "model") -> nn.Module:
    """Load safetensors weights into ``model``, checking names, shapes and the class count first."""
    state = read_safetensors(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(
            f"{role} checkpoint {str(path)!r} does not match the {type(model).__name__} architecture "
            f"({'; '.join(detail)}); configure the architecture the checkpoint was trained with"
        )
    # the class count is the first dimension of the last layer's weight
    last_w = [k for k in own if k.endswith("weight") and own[k].ndim == 2]
    if last_w:
        k = last_w[-1]
        if state[k].shape[0] != own[k].shape[0]:
            raise CheckpointError(
                f"{role} checkpoint {str(path)!r} predicts {state[k].shape[0]} classes but the dataset has "
                f"{own[k].shape[0]}; use a checkpoint trained on this dataset"
            )
    token_embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    for k, v in own.items():
        if state[k].shape != v.shape and token_embedding is not None and k.endswith(".weight") and \
                dict(model.named_modules()).get(k[: -len(".weight")]) is token_embedding:
            raise CheckpointError(
                f"{role} checkpoint {str(path)!r} reads a vocabulary of {state[k].shape[0]} tokens but the data's "
                f"tokenizer has {v.shape[0]}; teacher, student and data must share one vocabulary (use a "
                "checkpoint trained on this task)"
            )
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"{role} checkpoint {str(path)!r}: tensor {k!r} has shape {tuple(state[k].shape)}, the model "
                f"expects {tuple(v.shape)}; configure the architecture (and width) the checkpoint was trained with"
            )
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()})
    return model


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    atomic_torch_save(path, state)


def load_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"resume checkpoint {str(path)!r} is unreadable ({type(e).__name__}); delete it to restart "
            "that generation from scratch"
        ) from None
