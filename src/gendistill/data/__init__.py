"""Datasets, all offline, behind one ``load_dataset(name, **options)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .loader import TensorLoader


@dataclass
class Split:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DatasetBundle:
    """Train/test (and optional validation) splits with their class count and per-sample input shape."""

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    val: Split | None = None

    def describe(self) -> str:
        val = f", val {len(self.val)}" if self.val is not None else ""
        return (
            f"{self.name}: train {len(self.train)}, test {len(self.test)}{val}; "
            f"{self.num_classes} classes; input {tuple(self.input_shape)}"
        )


def _split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    if fraction <= 0:
        return train, None
    if not fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    n_val = max(1, int(round(fraction * len(train))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def load_dataset(name: str, val_fraction: float = 0.0, val_seed: int = 0, **options: Any) -> DatasetBundle:
    """Load a registered dataset. ``val_fraction`` carves a validation split from train (seeded)."""
    entry = DATASETS.get(name)
    try:
        bundle: DatasetBundle = entry.factory(**options)
    except (TypeError, ValueError, RuntimeError) as e:  # an option of the wrong type or out of range
        msg = " ".join(str(e).split())
        opts = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ConfigError(f"config error: data ({entry.name}{f': {opts}' if opts else ''}): {msg}") from None
    if len(bundle.train) == 0 or len(bundle.test) == 0:
        raise DataError(f"dataset {name!r} has an empty train or test split")
    bundle.train, bundle.val = _split_validation(bundle.train, val_fraction, val_seed)
    return bundle


from . import digits, mnist1d, synthetic, vision  # noqa: E402,F401  (register datasets)

__all__ = ["DatasetBundle", "Split", "TensorLoader", "load_dataset"]
