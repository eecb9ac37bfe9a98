"""Feature taps: forward hooks on named submodules, so no model has to return its features.

>>> with FeatureTap(model, ["layer2", "fc"]) as tap:
...     logits = model(x)
...     h = tap.features["layer2"]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .base import Outputs


def available_layers(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def resolve_module(model: nn.Module, name: str, role: str = "model") -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        names = available_layers(model)
        raise ConfigError(
            f"{role} has no layer {name!r} to tap; available layers: {', '.join(names) or '(none)'}"
        )
    return modules[name]


def penultimate_module(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in registration order: its input is taken as the penultimate representation."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to read penultimate features from")
    return last


class FeatureTap:
    """Records the outputs (or, with ``inputs=True``, the first input) of named submodules during forward."""

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model", inputs: bool = False):
        self.features: dict[str, Tensor] = {}
        self._handles = []
        self._inputs = inputs
        for name in names:
            module = resolve_module(model, name, role)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(_module, args, output):
            value = args[0] if self._inputs else output
            if isinstance(value, (tuple, list)):
                value = value[0]
            self.features[name] = value

        return hook

    def clear(self) -> None:
        self.features.clear()  # in place: a compiled forward keeps writing into the dict it was traced with

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class TappedModel:
    """A network run through its feature taps: ``tapped(x)`` returns ``Outputs(logits, {layer: features})``.

    The one way tasks and teachers run a model whose intermediate features a knowledge term reads. With no
    layers it is a plain call. Not an ``nn.Module``: holding one never registers the model twice."""

    def __init__(self, model: nn.Module, layers: Iterable[str] = (), role: str = "model"):
        self.model = model
        layers = tuple(layers)
        self.tap = FeatureTap(model, layers, role=role) if layers else None

    def __call__(self, *inputs: Any, **kwargs: Any) -> Outputs:
        if self.tap is not None:
            self.tap.clear()
        logits = self.model(*inputs, **kwargs)
        return Outputs(logits, dict(self.tap.features) if self.tap is not None else {})

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
