"""Image datasets from local folders the user points to; nothing is downloaded.

* ``cifar10`` / ``cifar100``: the "python version" folders torchvision uses (``data_batch_1..5`` and
  ``test_batch``; ``train`` and ``test`` for CIFAR-100). Those files are pickles, so they are read with a
  restricted unpickler that can only rebuild NumPy arrays, lists, dicts and strings: a file that asks for
  anything else is refused, never executed.
* ``imagefolder``: ``root/train/<class>/*.png|jpg`` and ``root/test/<class>/...`` (torchvision's layout),
  read with Pillow and resized to ``size``: held in memory, or with ``in_memory: false`` read from disk as
  batches are drawn, through a ``DataLoader`` with ``workers`` processes (for folders that do not fit in memory).

Images are scaled to [0, 1] and standardised per channel with the training set's mean and std (for a folder read
from disk: estimated on up to 2048 training images spread evenly over the folder).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..registry import DATASETS
from . import DatasetBundle, DatasetSplit, Split

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{path} is not a CIFAR batch file ({e}); it was not executed") from None
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    tr = torch.from_numpy(train).float() / 255.0
    te = torch.from_numpy(test).float() / 255.0
    mean = tr.mean(dim=(0, 2, 3), keepdim=True)
    std = tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (tr - mean) / std, (te - mean) / std, (mean.view(-1), std.view(-1))


def _cifar(root: str, train_files: list[str], test_files: list[str], label_key: str, classes: int, name: str) -> DatasetBundle:
    folder = Path(root).expanduser()
    missing = [f for f in train_files + test_files if not (folder / f).exists()]
    if missing:
        raise DataError(
            f"{name}: {folder} lacks {', '.join(missing[:3])}; point data.root at the extracted 'python version' "
            f"folder (e.g. cifar-10-batches-py) that torchvision's {name.upper()} uses"
        )

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _read_batch(folder / f)
            if "data" not in d or label_key not in d:
                raise DataError(f"{folder / f} has no 'data'/'{label_key}' entries; is this {name}?")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    (xtr, ytr), (xte, yte) = load(train_files), load(test_files)
    tr, te, pixels = _standardise(xtr, xte)
    return DatasetBundle(name, Split(tr, torch.from_numpy(ytr), pixels=pixels), Split(te, torch.from_numpy(yte), pixels=pixels),
                         classes, (3, 32, 32))


@DATASETS.register("cifar10", summary="CIFAR-10 from a local torchvision-format folder (data.root); no download")
def cifar10(root: str = "data/cifar-10-batches-py") -> DatasetBundle:
    return _cifar(root, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10, "cifar10")


@DATASETS.register("cifar100", summary="CIFAR-100 from a local torchvision-format folder (data.root); no download")
def cifar100(root: str = "data/cifar-100-python") -> DatasetBundle:
    return _cifar(root, ["train"], ["test"], "fine_labels", 100, "cifar100")


class ImageFiles(Dataset):
    """Images read from disk on access: ``(standardised CxHxW float tensor, label)`` items."""

    def __init__(self, files: list[tuple[Path, int]], size: int, channels: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        self.files, self.size, self.channels = files, size, channels
        self.targets = [label for _, label in files]
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i][0]
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB" if self.channels == 3 else "L").resize((self.size, self.size)),
                                 dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"imagefolder: {path} is not a readable image ({type(e).__name__}); remove or replace "
                            "the file") from None
        return arr.reshape(self.size, self.size, self.channels).transpose(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.raw(i).copy()).float() / 255.0
        if self.mean is not None:
            x = (x - self.mean[0]) / self.std[0]
        return x, self.files[i][1]


@DATASETS.register("imagefolder", summary="root/{train,test}/<class>/*.png|jpg, resized to `size`; in memory, "
                   "or read from disk with in_memory: false")
def imagefolder(root: str, size: int = 32, channels: int = 3, in_memory: bool = True, workers: int = 2) -> DatasetBundle:
    if not size >= 1:
        raise ValueError(f"size must be >= 1 (pixels per side), got {size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    folder = Path(root).expanduser()
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise DataError(f"imagefolder: {folder / split} does not exist; expected {folder}/train/<class>/... and {folder}/test/<class>/...")
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"imagefolder: {folder / 'train'} needs at least two class folders, found {classes}")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

    def listing(split: str) -> ImageFiles:
        files = [(f, label) for label, cls in enumerate(classes) for f in sorted((folder / split / cls).glob("*"))
                 if f.suffix.lower() in exts]
        if not files:
            raise DataError(f"imagefolder: no images found under {folder / split}")
        return ImageFiles(files, size, channels)

    train, test = listing("train"), listing("test")
    shape = (channels, size, size)
    if in_memory:
        xtr = np.stack([train.raw(i) for i in range(len(train))])
        xte = np.stack([test.raw(i) for i in range(len(test))])
        tr, te, pixels = _standardise(xtr, xte)
        return DatasetBundle("imagefolder", Split(tr, torch.tensor(train.targets), pixels=pixels),
                             Split(te, torch.tensor(test.targets), pixels=pixels), len(classes), shape)
    sample = np.stack([train.raw(i) for i in np.linspace(0, len(train) - 1, min(len(train), 2048)).astype(int)])
    x = torch.from_numpy(sample).float() / 255.0
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    train.mean, train.std, test.mean, test.std = mean, std, mean, std
    return DatasetBundle("imagefolder", DatasetSplit(train, num_workers=workers), DatasetSplit(test, num_workers=workers),
                         len(classes), shape)
