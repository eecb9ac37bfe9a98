"""Seeded Gaussian clusters, for tests and quick checks."""

from __future__ import annotations

import torch

from ..registry import DATASETS
from . import DatasetBundle, Split


@DATASETS.register("synthetic", summary="seeded Gaussian clusters (tests, quick checks); no files")
def synthetic(
    num_classes: int = 4,
    dim: int = 16,
    num_train: int = 512,
    num_test: int = 256,
    separation: float = 2.0,
    noise: float = 1.0,
    seed: int = 0,
) -> DatasetBundle:
    """Class c draws ``x ~ N(mu_c, noise^2 I)`` with centres ``mu_c ~ N(0, separation^2 I)``."""
    if num_classes < 2 or dim < 1 or num_train < 1 or num_test < 1:
        raise ValueError(f"synthetic needs num_classes >= 2, dim >= 1, num_train >= 1, num_test >= 1; got "
                         f"num_classes={num_classes}, dim={dim}, num_train={num_train}, num_test={num_test}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * separation

    def draw(n: int) -> Split:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = centres[y] + noise * torch.randn(n, dim, generator=g)
        return Split(x, y)

    train, test = draw(num_train), draw(num_test)
    return DatasetBundle("synthetic", train, test, num_classes, (dim,))
