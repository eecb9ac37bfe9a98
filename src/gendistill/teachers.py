"""What produces the targets. The student never needs to know which kind of teacher it learns from.

A teacher is called with a batch of inputs (and their indices) and returns :class:`Outputs` without
gradients. Every teacher model is frozen: ``requires_grad=False`` and eval mode, always.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .knowledge.base import Outputs
from .knowledge.taps import FeatureTap


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FrozenTeacher:
    """A single frozen model. ``layers`` are tapped so feature-based terms can read them."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = ()):
        self.model = freeze(model)
        self.layers = tuple(layers)
        self._tap = FeatureTap(model, self.layers, role="teacher") if self.layers else None

    @property
    def models(self) -> list[nn.Module]:
        return [self.model]

    def to(self, device: torch.device) -> FrozenTeacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: Tensor, index: Tensor | None = None) -> Outputs:
        self.model.eval()  # stays in eval mode even if someone called .train() on it
        if self._tap is not None:
            self._tap.clear()
        logits = self.model(x)
        feats = dict(self._tap.features) if self._tap is not None else {}
        return Outputs(logits, feats)

    def close(self) -> None:
        if self._tap is not None:
            self._tap.remove()


class EnsembleTeacher:
    """Mean of the members' probabilities; its logits are ``log(mean_m softmax(z_m))``."""

    def __init__(self, models: Sequence[nn.Module], layers: Sequence[str] = ()):
        if not models:
            raise ValueError("an ensemble teacher needs at least one model")
        if layers:
            raise ConfigError(
                "feature-based terms need one teacher network, but the teacher is an ensemble; "
                "use generations.teacher=previous or a logit-based objective"
            )
        self.members = [FrozenTeacher(m) for m in models]
        self.layers = ()

    @property
    def models(self) -> list[nn.Module]:
        return [m.model for m in self.members]

    def to(self, device: torch.device) -> EnsembleTeacher:
        for m in self.members:
            m.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: Tensor, index: Tensor | None = None) -> Outputs:
        probs = torch.stack([m(x).logits.float().softmax(-1) for m in self.members]).mean(0)
        return Outputs(probs.clamp_min(1e-12).log())

    def close(self) -> None:
        for m in self.members:
            m.close()
