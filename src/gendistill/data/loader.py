"""Batched in-memory loader: index slicing on tensors, no per-sample Python."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


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
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        order = order.to(self.x.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:  # every process draws the same order and takes its share of each batch
                idx = idx[self.rank :: self.world_size]
            yield self.x[idx], self.y[idx], idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
