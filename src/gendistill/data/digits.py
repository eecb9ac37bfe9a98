"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes); nothing is downloaded."""

from __future__ import annotations

import numpy as np
import torch

from ..registry import DATASETS
from . import DatasetBundle, Split


@DATASETS.register("digits", summary="scikit-learn's bundled 8x8 digits, 1797 images, 10 classes; no download")
def digits(test_fraction: float = 0.25, split_seed: int = 0) -> DatasetBundle:
    """Pixels scaled to [0, 1] then standardized with the train mean/std; input shape (1, 8, 8).
    The train/test split is stratified and fixed by ``split_seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    mean, std = x_tr.mean(), x_tr.std()
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return DatasetBundle(
        "digits",
        Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        Split(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        10,
        (1, 8, 8),
    )
