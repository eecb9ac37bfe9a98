"""Knowledge Evolution (Taha, Shrivastava & Davis 2021): each generation keeps the fit hypothesis of the last
one and re-initialises the rest."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..engine.task import DistillTask
from ..errors import ConfigError
from .spec import SchemeContext, scheme

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def fit_masks(model: nn.Module, split_rate: float) -> dict[str, Tensor]:
    """KELS, the kernel-level convolutional-aware split: a boolean mask per state tensor, ``True`` on the
    fit hypothesis. A linear/conv layer's fit part is its first ``ceil(s * out)`` outputs times its first
    ``ceil(s * in)`` inputs (all inputs for the first layer, all outputs for the last one, which map to the
    data and the classes); biases and norm layers follow their outputs. A flattened conv map feeding a
    linear layer is channel-major, so ``ceil(s * in)`` keeps whole channels when ``s * channels`` is whole."""
    if not 0.0 < split_rate <= 1.0:
        raise ConfigError(f"ke: split_rate must be in (0, 1], got {split_rate}")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    if not layers:
        raise ConfigError(f"ke: {type(model).__name__} has no linear or conv layers to split")
    first, last = layers[0][0], layers[-1][0]
    masks: dict[str, Tensor] = {}
    out_keep = None
    for name, m in model.named_modules():
        if isinstance(m, _WEIGHTED):
            w = m.weight
            n_out = w.shape[0] if name == last else math.ceil(split_rate * w.shape[0])
            n_in = w.shape[1] if name == first else math.ceil(split_rate * w.shape[1])
            mask = torch.zeros_like(w, dtype=torch.bool)
            mask[:n_out, :n_in] = True
            masks[f"{name}.weight"] = mask
            if m.bias is not None:
                masks[f"{name}.bias"] = torch.arange(w.shape[0]) < n_out
            out_keep = n_out
        elif isinstance(m, _NORMS) and out_keep is not None:
            for key, t in m.state_dict().items():
                if t.ndim >= 1:
                    masks[f"{name}.{key}"] = torch.arange(t.shape[0]) < out_keep
    return masks


@torch.no_grad()
def evolve(student: nn.Module, parent: nn.Module, split_rate: float, reset: str = "weights") -> dict[str, Tensor]:
    """Copy the parent into the freshly initialised ``student`` except its reset hypothesis, which keeps the
    new random values; returns the masks that were applied (``True`` = inherited).

    ``reset="weights"`` (the authors' code): only the conv/linear *weights* outside the fit mask are
    re-initialised; every other tensor (biases, BatchNorm weights, biases and running statistics) is the
    parent's. ``reset="all"``: biases and norm layers are split with their outputs too (the form before
    issue 13)."""
    if reset not in ("weights", "all"):
        raise ConfigError(f"ke: reset must be 'weights' (the authors' code) or 'all', got {reset!r}")
    masks = fit_masks(student, split_rate)
    own, theirs = student.state_dict(), parent.state_dict()
    if reset == "weights":
        weights = {f"{n}.weight" for n, m in student.named_modules() if isinstance(m, _WEIGHTED)}
        masks = {k: v for k, v in masks.items() if k in weights}
    for key in own:
        if key not in theirs or own[key].shape != theirs[key].shape:
            raise ConfigError(f"ke: generation shapes differ at {key!r}; every generation needs the same architecture")
    for key, value in own.items():
        if key in masks:
            value.copy_(torch.where(masks[key].to(value.device), theirs[key].to(value), value))
        elif reset == "weights":
            value.copy_(theirs[key].to(value))
    return masks


@scheme("ke", kind="evolution", cacheable=True,
        paper="Taha, Shrivastava & Davis 2021, Knowledge Evolution in Neural Networks (arXiv:2103.05152)",
        summary="each generation keeps the previous one's fit hypothesis and re-initialises the rest")
def ke(ctx: SchemeContext, split_rate: float = 0.5, reset: str = "weights") -> DistillTask:
    """Knowledge Evolution (Taha et al. 2021). The network is split once into a fit hypothesis ``H^fit``
    (mask ``M``, :func:`fit_masks`, KELS) and a reset hypothesis ``H^reset = 1 - M``. Generation ``k`` starts
    from

    ``theta_k = M * theta_{k-1} + (1 - M) * theta_random``

    (the scheme's initialisation hook: the factory receives the fresh, seeded student and the previous
    generation, and overwrites the fit part in place). As in the authors' code, only the conv/linear
    *weights* of ``H^reset`` are re-initialised (``reset: weights``); biases and BatchNorm (affine
    parameters and running statistics) are inherited whole. ``reset: all`` also re-initialises the reset
    half of biases and norm layers (the form before issue 13). It is then trained on the objective, normally labels
    only (``objective: ce``, optionally label-smoothed, as in the paper). ``split_rate`` is the fit fraction
    ``s`` per layer. The evaluated network is the whole (dense) network; every generation has the same
    architecture. An objective with teacher terms also distils from the lineage's teacher."""
    evolve(ctx.student, ctx.previous[-1], split_rate, reset)
    return DistillTask(ctx.student, ctx.objective, ctx.teacher if ctx.objective.needs_teacher else None)
