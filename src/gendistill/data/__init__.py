"""Datasets, all offline, behind one ``load_dataset(name, **options)``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .loader import TensorLoader


@dataclass
class Split:
    """An in-memory split: inputs ``x`` (N, ...) and labels ``y`` (N,). Served by index slicing."""

    x: Tensor
    y: Tensor
    # images: per-channel (mean, std) with x = (u / 255 - mean) / std. Keyword-only, so that subclasses' own
    # fields (StateSplit.info, SequenceSplit.bundle) follow x and y positionally
    pixels: tuple[Tensor, Tensor] | None = field(default=None, kw_only=True)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def inputs(self, batch_size: int) -> Iterator[Tensor]:
        """The inputs in order, ``batch_size`` at a time."""
        for i in range(0, len(self.x), batch_size):
            yield self.x[i : i + batch_size]

    def head(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


class DatasetSplit:
    """A split read through a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)``: for data that
    does not fit in memory. Training batches come from a ``DataLoader`` with ``num_workers`` worker processes
    (see :class:`~gendistill.data.loader.DatasetLoader`); evaluation reads it in order.

    ``y`` (all labels, needed by the metrics) is read once: from the dataset's ``targets`` attribute when it
    has one (torchvision datasets do), else by a pass over the items."""

    def __init__(self, dataset: Dataset, num_workers: int = 0, labels: Tensor | None = None):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DataError(f"a DatasetSplit needs a map-style dataset (__getitem__ and __len__), got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self._y = labels

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_size: int, indices: range | None = None) -> DataLoader:
        ds = self.dataset if indices is None else Subset(self.dataset, list(indices))
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=self.num_workers)

    @property
    def y(self) -> Tensor:
        if self._y is None:
            targets = getattr(self.dataset, "targets", None)
            if targets is not None and len(targets) == len(self.dataset):
                self._y = torch.as_tensor(targets, dtype=torch.long)
            else:
                self._y = torch.cat([torch.as_tensor(y).long().view(-1) for _, y in self._loader(1024)])
        return self._y

    @property
    def x(self) -> Tensor:
        raise DataError("this split is read through a Dataset and has no in-memory inputs; this scheme or "
                        "option needs an in-memory split (gendistill's bundled datasets)")

    def inputs(self, batch_size: int) -> Iterator[Tensor]:
        for x, _ in self._loader(batch_size):
            yield x

    def head(self, n: int) -> Split:
        xs, ys = next(iter(self._loader(n, range(min(n, len(self))))))
        return Split(xs, torch.as_tensor(ys).long())


@dataclass
class DatasetBundle:
    """Train/test (and optional validation) splits with their class count and per-sample input shape.

    ``domain`` names the kind of data (``gendistill list domains``): it decides how batches are made, models
    evaluated and fidelity measured."""

    name: str
    train: Split | DatasetSplit
    test: Split | DatasetSplit
    num_classes: int
    input_shape: tuple[int, ...]
    val: Split | DatasetSplit | None = None
    domain: str = "classification"

    def describe(self) -> str:
        val = f", val {len(self.val)}" if self.val is not None else ""
        return (
            f"{self.name}: train {len(self.train)}, test {len(self.test)}{val}; "
            f"{self.num_classes} classes; input {tuple(self.input_shape)}"
        )


def _split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    if fraction <= 0:
        return train, None
    if not isinstance(train, Split):
        raise ConfigError("data.val_fraction needs an in-memory training split; give the validation set as its own "
                          "DatasetSplit (DatasetBundle(val=...)) instead")
    if not fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    n_val = max(1, int(round(fraction * len(train))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return (Split(train.x[train_idx], train.y[train_idx], pixels=train.pixels),
            Split(train.x[val_idx], train.y[val_idx], pixels=train.pixels))


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

__all__ = ["DatasetBundle", "DatasetSplit", "Split", "TensorLoader", "load_dataset"]
