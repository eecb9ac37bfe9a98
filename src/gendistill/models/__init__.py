"""Bundled models and the model factory. From Python, any ``nn.Module`` (or a zero-argument factory) works."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import MODELS

ModelSpec = str | dict[str, Any] | nn.Module | Callable[[], nn.Module]


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("cnn1d", 10, (1, 40), width=32)``."""
    entry = MODELS.get(name)
    try:
        return entry.factory(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None


def build_model(spec: ModelSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A fresh model from a registry name, a ``{"name": ..., **kwargs}`` dict, a factory, or a module
    (deep-copied and re-initialized so each generation starts from scratch)."""
    if isinstance(spec, str):
        return create_model(spec, num_classes, input_shape)
    if isinstance(spec, dict):
        kw = dict(spec)
        return create_model(kw.pop("name"), num_classes, input_shape, **kw)
    if isinstance(spec, nn.Module):
        model = copy.deepcopy(spec)
        reset_parameters(model)
        return model
    if callable(spec):
        model = spec()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model factory returned {type(model).__name__}, expected an nn.Module")
        return model
    raise ConfigError(f"cannot build a model from {type(spec).__name__}")


def reset_parameters(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def describe_model(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({n:,} parameters)"


from . import cnn, mlp, resnet_cifar  # noqa: E402,F401  (register models)

__all__ = ["create_model", "build_model", "describe_model", "ModelSpec"]
