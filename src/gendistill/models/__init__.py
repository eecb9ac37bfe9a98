"""Bundled models and the model factory. From Python, any ``nn.Module`` (or a zero-argument factory) works."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS

ModelSpec = str | dict[str, Any] | nn.Module | Callable[[], nn.Module]


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("cnn1d", 10, (1, 40), width=32)``."""
    entry = MODELS.get(name)
    try:
        return entry.factory(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # a bad option value (width: 0) or input shape
        opts = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(f"model {name!r}{f' ({opts})' if opts else ''}: {_one_line(e)}") from None


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
        for p in model.parameters():  # a frozen module (a trained teacher, result.models[0]) trains again
            p.requires_grad_(True)
        return model.train()
    if callable(spec):
        model = spec()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model factory returned {type(model).__name__}, expected an nn.Module")
        return model
    raise ConfigError(f"cannot build a model from {type(spec).__name__}")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _registered_name(spec: ModelSpec) -> str | None:
    if isinstance(spec, str):
        return spec.lower()
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"].lower()
    return None


def _fitting_models(input_shape: tuple[int, ...]) -> list[str]:
    """Registered classification models whose ``input_rank`` metadata accepts per-sample inputs of this shape;
    the image zoo is named once, not model by model (other domains' models, e.g. ``domain="sequence"``, are
    never suggested for a classification dataset)."""
    fit = [e for e in MODELS.entries() if e.meta.get("input_rank") in (None, len(input_shape))
           and e.meta.get("domain", "classification") == "classification"]
    names = [e.name for e in fit if not e.meta.get("zoo")]
    if any(e.meta.get("zoo") for e in fit):
        names.append("a CIFAR zoo model (gendistill list models)")
    return names


def check_fits(spec: ModelSpec, dataset: str, num_classes: int, input_shape: tuple[int, ...],
               where: str = "model", fix: str | None = None) -> nn.Module:
    """Build ``spec`` for a dataset's inputs and run one dummy batch of 2 through it on the CPU (no grad, eval
    mode, the global RNG state left as it was). A model that cannot take the inputs, or does not output
    ``num_classes`` logits, raises one :class:`ConfigError` line naming the model, the dataset's input shape and
    a fix; returns the (CPU) model."""
    shape = tuple(int(d) for d in input_shape)
    prefix = "" if where == "model" else f"{where}: "
    name = _registered_name(spec)
    names = _fitting_models(shape)
    fits = " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]
    fix = fix or (f"use {fits}" if fits else "use a model that takes these inputs")
    if name is not None:
        entry = MODELS.get(name)
        rank = entry.meta.get("input_rank")
        if rank is not None and rank != len(shape):
            raise ConfigError(
                f"{prefix}model {name} expects {entry.meta.get('inputs', f'{rank}-D samples')} but dataset {dataset} "
                f"gives inputs of shape {shape}; {fix}"
            )
    label = name or (type(spec).__name__ if isinstance(spec, nn.Module) else getattr(spec, "__name__", "model"))
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's RNG stream
        try:
            model = build_model(spec, num_classes, shape)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{prefix}model {label} cannot be built for dataset {dataset} (inputs {shape}, "
                              f"{num_classes} classes): {_one_line(e)}") from None
        model = model.cpu()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *shape))
        except (TypeError, ValueError, RuntimeError, IndexError) as e:
            raise ConfigError(f"{prefix}model {label} does not accept the inputs of dataset {dataset} (shape {shape}): "
                              f"{_one_line(e)}; {fix}") from None
        finally:
            model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{prefix}model {label} outputs {got} per sample but dataset {dataset} has {num_classes} "
                          f"classes; give a model with {num_classes} outputs")
    return model


def reset_parameters(model: nn.Module) -> None:
    """Re-initialise ``model`` in place: every submodule's own ``reset_parameters()`` (PyTorch's layers), and
    parameters held directly by a custom module without one: matrices and kernels (2 or more dimensions) drawn
    like ``nn.Linear``'s weight (Kaiming-uniform, ``a = sqrt(5)``); vectors and scalars (scales, offsets, whose
    initial value is usually a chosen constant) are kept as given."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        else:
            for p in m.parameters(recurse=False):
                if p.dim() >= 2:
                    with torch.no_grad():
                        nn.init.kaiming_uniform_(p, a=math.sqrt(5))


def count_parameters(name: str, num_classes: int = 100, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Parameters of registered model ``name`` for ``num_classes`` classes, built on the meta device (no memory,
    no initialisation cost): what ``gendistill list models`` prints for the image zoo."""
    with torch.device("meta"):
        model = create_model(name, num_classes, input_shape)
    return sum(p.numel() for p in model.parameters())


def describe_model(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({n:,} parameters)"


from . import cnn, mlp, resnet_cifar, zoo  # noqa: E402,F401  (register models)

__all__ = ["create_model", "build_model", "check_fits", "count_parameters", "describe_model", "ModelSpec"]
