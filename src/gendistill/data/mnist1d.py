"""MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.data.make_dataset``.

Never calls the package's ``get_dataset`` (which tries a download first). The generated arrays are cached
on disk under ``$GENDISTILL_CACHE`` (default ``~/.cache/gendistill``), keyed by a hash of the options.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write_bytes
from ..registry import DATASETS
from . import DatasetBundle, Split


def _note(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get("GENDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "gendistill"
    )
    return Path(root)


def _generate(options: dict) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for k, v in options.items():
        setattr(args, k, v)
    # make_dataset reseeds Python's and NumPy's global RNGs; restore them so loading data has no side effects.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


@DATASETS.register("mnist1d", summary="MNIST-1D generated locally (default 5000 samples, 40 steps, 10 classes)")
def mnist1d(num_samples: int = 5000, seed: int = 42, train_split: float = 0.8, cache: bool = True) -> DatasetBundle:
    """Input shape (1, 40). ``num_samples`` in total, ``train_split`` of them for training."""
    if num_samples < 20:
        raise ValueError(f"num_samples must be >= 20, got {num_samples}")
    if not 0 < train_split < 1:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    options = {"num_samples": int(num_samples), "seed": int(seed), "train_split": float(train_split)}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    arrays = None
    if cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:
            arrays = None  # a corrupt cache file is regenerated
    if arrays is None:
        if num_samples >= 50_000:  # generation runs at about 5k samples/s on one core: say so before a long silence
            _note(f"generating MNIST-1D: {num_samples} samples (about {num_samples / 5_000:.0f} s, "
                f"{num_samples * 40 * 4 / 2**20:.0f} MiB; cached afterwards in {path.parent})")
        arrays = _generate(options)
        if cache:
            import io

            buf = io.BytesIO()
            np.savez(buf, **arrays)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, buf.getvalue())
            except OSError as e:  # the cache only saves time: go on without it
                _note(f"note: cannot cache MNIST-1D in {path.parent} ({e.strerror}); it is regenerated next time. "
                    "Set GENDISTILL_CACHE to a writable folder to keep it")

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(x.astype(np.float32))[:, None, :], torch.from_numpy(y.astype(np.int64)))

    train, test = split(arrays["x"], arrays["y"]), split(arrays["x_test"], arrays["y_test"])
    return DatasetBundle("mnist1d", train, test, 10, tuple(train.x.shape[1:]))
