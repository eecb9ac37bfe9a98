"""The exhaustive view cache: a teacher's logits on *every* crop-with-padding + flip view of every training image.

With random crop (padding ``p``) and horizontal flip the set of views of an image is finite: ``(2p + 1)^2``
offsets times 2 flips (162 at ``p = 4``). The teacher's logits on all of them are computed once and stored as
``float16`` ``(N, V, C)``; a training step looks them up by ``(sample, view)``, so knowledge distillation with
the standard CIFAR augmentation needs no teacher forward at all and is exact (the student's view is one of the
cached ones, not a replayed approximation). Size: ``N * V * C * 2`` bytes, 50000 * 162 * 100 * 2 = 1.62 GB for
CIFAR-100.

Above ``mmap_mb`` the table lives in a memory-mapped ``.npy`` file named by its key: a hash of the teacher's
weights (the bytes of every tensor of its state dict, as its ``model.safetensors`` holds them), of the images
and of the padding, so one file serves every student and every method distilled from that teacher (point
``train.view_cache_dir`` at a folder to keep it between runs). On a CUDA device the table is copied to device
memory when training starts, so a lookup is one gather with no host synchronisation.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .data.gpu_augment import DeviceImageLoader
from .io import read_json, write_json
from .knowledge.base import Outputs


def teacher_key(models: list[nn.Module], loader: DeviceImageLoader) -> str:
    """sha256 over the teachers' weights, the stored images and the view set (padding, flip)."""
    h = hashlib.sha256()
    for m in models:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(loader.images.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(f"pad{loader.padding}-flip{loader.flip}".encode())
    return h.hexdigest()[:24]


class ExhaustiveViewCache:
    """A teacher whose outputs on training views are looked up: ``logits[index, view]``.

    Calls without ``index`` (held-out inputs) go to the live teacher."""

    def __init__(self, live, logits: Tensor, how: str, build_seconds: float = 0.0):
        self.live = live
        self.logits = logits  # (N, V, C)
        self.how = how
        self.build_seconds = build_seconds
        self.layers: tuple[str, ...] = ()

    @property
    def models(self) -> list[nn.Module]:
        return self.live.models

    def to(self, device: torch.device) -> ExhaustiveViewCache:
        self.live.to(device)
        if torch.device(device).type != "cpu":
            self.logits = self.logits.to(device)  # 1.62 GB for CIFAR-100: one copy, then gathers on the device
        return self

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Outputs:
        if index is None:
            return self.live(x)
        if view is None:
            raise RuntimeError("the exhaustive view cache needs each sample's view (crop_flip batches carry it)")
        dev = self.logits.device
        return Outputs(self.logits[index.to(dev), view.to(dev)].to(x.device, non_blocking=True).float(), {})

    def close(self) -> None:
        self.live.close()

    def describe(self) -> str:
        n, v, c = self.logits.shape
        return (f"exhaustive view cache ({n} samples x {v} views x {c} logits, "
                f"{str(self.logits.dtype).removeprefix('torch.')}, {self.how})")

    @classmethod
    def build(cls, live, loader: DeviceImageLoader, *, prefix: str | Path | None = None, mmap_mb: float = 512.0,
              batch_size: int = 1024, dtype: torch.dtype = torch.float16) -> ExhaustiveViewCache:
        """Run ``live`` on every view of every training image (``batch_size`` images per forward). Above
        ``mmap_mb`` (and with a ``prefix``) the table goes to ``<prefix>-<key>.npy``, reused when complete."""
        t0 = time.perf_counter()
        n, v = loader.num_samples, loader.views()
        dev = next(live.models[0].parameters()).device
        c = live(loader.head(1)[0].to(dev)).logits.shape[-1]
        itemsize = torch.empty((), dtype=dtype).element_size()
        mb = n * v * c * itemsize / 2**20
        np_dtype = np.float16 if dtype == torch.float16 else np.float32
        if prefix is not None and mb > mmap_mb:
            key = teacher_key(live.models, loader)
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
            file, key_file = Path(f"{prefix}-{key}.npy"), Path(f"{prefix}-{key}.json")
            if file.exists() and key_file.exists() and read_json(key_file).get("complete"):
                table = np.load(file, mmap_mode="r+")
                return cls(live, torch.from_numpy(table), f"memory-mapped at {file} ({mb:.0f} MB), reused")
            table = np.lib.format.open_memmap(str(file), mode="w+", dtype=np_dtype, shape=(n, v, c))
            cls._fill(live, loader, lambda i, j, t: table.__setitem__(slice(i, j), t.cpu().numpy()), dev,
                      batch_size, dtype)
            table.flush()
            seconds = time.perf_counter() - t0
            write_json(key_file, {"key": key, "samples": n, "views": v, "classes": c, "dtype": np_dtype.__name__,
                                  "build_seconds": seconds, "complete": True})
            return cls(live, torch.from_numpy(table), f"memory-mapped at {file} ({mb:.0f} MB), built in "
                       f"{seconds:.1f} s", seconds)
        out = torch.empty((n, v, c), dtype=dtype, device=dev)
        cls._fill(live, loader, lambda i, j, t: out[i:j].copy_(t), dev, batch_size, dtype)
        seconds = time.perf_counter() - t0
        return cls(live, out, f"in memory ({mb:.1f} MB), built in {seconds:.1f} s", seconds)

    @staticmethod
    def _fill(live, loader: DeviceImageLoader, write, dev: torch.device, batch_size: int, dtype: torch.dtype) -> None:
        n, v = loader.num_samples, loader.views()
        per = max(1, batch_size // v)  # samples per forward, all their views together
        views = torch.arange(v, device=loader.device)
        with torch.no_grad():
            for i in range(0, n, per):
                j = min(n, i + per)
                u = loader.images[i:j].repeat_interleave(v, dim=0)
                x = loader.augment(u, views.repeat(j - i)).to(dev)
                write(i, j, live(x).logits.to(dtype).view(j - i, v, -1))


def cache_size_bytes(samples: int, views: int, classes: int, itemsize: int = 2) -> int:
    return samples * views * classes * itemsize


__all__ = ["ExhaustiveViewCache", "teacher_key", "cache_size_bytes"]
