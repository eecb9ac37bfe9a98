"""Training-batch loaders: in memory by index slicing (no per-sample Python), or through a ``DataLoader``.

Both draw the same order from the same seed, so a dataset served either way trains to the same numbers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class TensorLoader:
    """Yields ``(x, y, index)`` batches from tensors by slicing with a permutation.

    Under data parallelism (``world_size`` > 1) all processes draw the same permutation and process ``rank``
    takes every ``world_size``-th sample of each batch, so the global batch and the number of steps per
    epoch are those of a single process.

    Shuffling draws from its own ``torch.Generator`` so the data order is reproducible and its state can be
    saved in a checkpoint (``state_dict`` / ``load_state_dict``). Tensors may live on any device; the
    permutation is made on the CPU and moved once per epoch.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last and len(x) >= batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = _order(len(self.x), self.shuffle, self.generator).to(self.x.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:  # every process draws the same order and takes its share of each batch
                idx = idx[self.rank :: self.world_size]
            yield self.x[idx], self.y[idx], idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _order(n: int, shuffle: bool, generator: torch.Generator) -> Tensor:
    return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)


class _Indexed(Dataset):
    """Items ``(x, y, i)``: a dataset's items with their position, for caches and memory banks."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, torch.as_tensor(y, dtype=torch.long), i


class _BatchOrder(Sampler[list[int]]):
    """The batches :class:`TensorLoader` draws (same permutation, same sharding across processes), as lists of
    indices for a ``DataLoader``'s ``batch_sampler``. Under data parallelism it plays the part of a
    ``DistributedSampler``: each process reads only its share of every global batch."""

    def __init__(self, loader: DatasetLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[int]]:
        ld = self.loader
        order = _order(ld.num_samples, ld.shuffle, ld.generator)
        for b in range(len(ld)):
            idx = order[b * ld.batch_size : (b + 1) * ld.batch_size]
            if ld.world_size > 1:
                idx = idx[ld.rank :: ld.world_size]
            yield idx.tolist()


class DatasetLoader:
    """Yields ``(x, y, index)`` batches from a map-style dataset of ``(x, y)`` items through a ``DataLoader``
    with ``num_workers`` worker processes, in exactly the order :class:`TensorLoader` would (the shuffling
    generator's state is saved in checkpoints). Batches are moved to ``device``."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = len(dataset)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.drop_last = drop_last and self.num_samples >= batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self._loader = DataLoader(_Indexed(dataset), batch_sampler=_BatchOrder(self), num_workers=num_workers,
                                  pin_memory=self.device.type == "cuda")

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y, idx in self._loader:
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   idx.to(self.device, non_blocking=True))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
