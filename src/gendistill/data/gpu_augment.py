"""The fast path for image data that fits on the device (CIFAR fits): random crop with padding and horizontal
flip, done per batch on the device.

* the training images stay on the device as ``uint8`` (50000x3x32x32 = 154 MB for CIFAR) when the split knows
  its pixel statistics (``Split.pixels``, set by the bundled image loaders), else as they are;
* each batch draws, on the device and from its own seeded ``torch.Generator``, one crop offset ``(dy, dx)`` in
  ``[0, 2p]^2`` and one flip per sample, and applies them with one gather (:func:`crop_flip`): no per-sample
  Python and no host synchronisation per step;
* the batch comes out standardised, in ``float32`` and in ``channels_last`` memory format when asked (bf16
  autocast and ``torch.compile`` are the trainer's ``train.amp`` / ``train.compile``).

``crop_flip`` matches torchvision's ``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip()``: zero
(black) pixels around the image, the crop at offset ``(dy, dx)`` of the padded image, then the flip. A view is
named by one integer, ``view = (dy * (2p + 1) + dx) * 2 + flip``, in ``[0, 2 (2p + 1)^2)`` (162 at ``p = 4``):
the key of the exhaustive teacher cache (:mod:`gendistill.data.view_cache`).

The same code runs on the CPU (``device=cpu``), which is how it is tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .loader import TensorLoader


def num_views(padding: int) -> int:
    """Distinct crop-and-flip views of an image at this padding: ``2 (2p + 1)^2``."""
    return 2 * (2 * padding + 1) ** 2


def view_params(view: Tensor, padding: int) -> tuple[Tensor, Tensor]:
    """``(offsets (N, 2) as (dy, dx), flips (N,))`` of view indices."""
    side = 2 * padding + 1
    pos = torch.div(view, 2, rounding_mode="floor")
    return torch.stack([torch.div(pos, side, rounding_mode="floor"), pos % side], 1), (view % 2).bool()


def view_index(offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    return (offsets[:, 0] * (2 * padding + 1) + offsets[:, 1]) * 2 + flips.long()


def crop_flip(x: Tensor, offsets: Tensor, flips: Tensor, padding: int, fill: Tensor | float = 0) -> Tensor:
    """Crop each image of ``x`` (N, C, H, W) at ``offsets[i] = (dy, dx)`` of its zero-padded copy (padding
    ``padding``, ``fill`` outside the image) and flip it horizontally where ``flips[i]``. One gather; the output
    is in channels_last memory layout."""
    n, _, h, w = x.shape
    dev = x.device
    rows = offsets[:, :1].to(dev) - padding + torch.arange(h, device=dev)  # (N, H) source rows
    cols = offsets[:, 1:].to(dev) - padding + torch.arange(w, device=dev)  # (N, W) source columns
    cols = torch.where(flips.to(dev).view(-1, 1), cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)  # (N, H, W)
    r = rows.clamp(0, h - 1).unsqueeze(2)
    c = cols.clamp(0, w - 1).unsqueeze(1)
    out = x[torch.arange(n, device=dev).view(-1, 1, 1), :, r, c]  # (N, H, W, C)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=dev)
    out = torch.where(inside.unsqueeze(3), out, fill_t.view(-1) if fill_t.ndim else fill_t)
    return out.permute(0, 3, 1, 2)  # (N, C, H, W), channels_last strides


def to_pixels(x: Tensor, pixels: tuple[Tensor, Tensor]) -> Tensor:
    """Standardised images back to ``uint8`` pixels: ``round((x * std + mean) * 255)``."""
    mean, std = (t.to(x.device).view(1, -1, 1, 1) for t in pixels)
    return ((x * std + mean) * 255).round_().clamp_(0, 255).to(torch.uint8)


class DeviceImageLoader:
    """Training batches ``(x, y, index, view)`` of an in-memory image split, with crop-with-padding and flip
    done on the device (the classification domain wraps it as a batch source). ``view`` holds each sample's
    view index, so the exhaustive view cache returns the teacher's outputs on exactly the view the student
    sees. Under data parallelism every process draws the same order and takes its share (``rank``,
    ``world_size``); the augmentation generator is per process."""

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, seed: int, device: torch.device | str,
                 padding: int = 4, flip: bool = True, pixels: tuple[Tensor, Tensor] | None = None,
                 channels_last: bool = True, drop_last: bool | None = None, rank: int = 0, world_size: int = 1):
        if x.ndim != 4:
            raise ValueError(f"crop_flip needs images (N, C, H, W), got inputs of shape {tuple(x.shape)}")
        self.device = torch.device(device)
        self.padding, self.flip = int(padding), bool(flip)
        self.num_samples = len(x)
        self.pixels = pixels
        if pixels is not None:
            mean, std = (t.float().view(1, -1, 1, 1).to(self.device) for t in pixels)
            self._scale, self._shift = 1 / (255 * std), -mean / std  # x = u * scale + shift
            self.images = to_pixels(x, pixels).to(self.device)
        else:
            self._scale = self._shift = None
            self.images = x.to(self.device)
        self.memory_format = torch.channels_last if channels_last else None
        if drop_last is None:
            drop_last = len(x) % batch_size == 1 or world_size > 1
        self.loader = TensorLoader(self.images, y.to(self.device), batch_size, shuffle=True, drop_last=drop_last,
                                   seed=seed, rank=rank, world_size=world_size)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 7919)

    def __len__(self) -> int:
        return len(self.loader)

    def views(self) -> int:
        return num_views(self.padding)  # without flip, the odd (flipped) views are never drawn

    def _finish(self, u: Tensor) -> Tensor:
        """uint8 pixels (or stored inputs) to standardised float inputs, keeping the memory layout."""
        if self._scale is None:
            x = u
        else:
            x = u.float() * self._scale + self._shift
        return x.contiguous(memory_format=torch.channels_last) if self.memory_format is not None else x.contiguous()

    def augment(self, u: Tensor, view: Tensor) -> Tensor:
        """Stored images ``u`` in views ``view``, standardised."""
        offsets, flips = view_params(view, self.padding)
        return self._finish(crop_flip(u, offsets, flips, self.padding))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        side = 2 * self.padding + 1
        for u, yb, idx in self.loader:
            n = len(idx)
            offsets = torch.randint(0, side, (n, 2), generator=self.generator, device=self.device)
            if self.flip:
                flips = torch.randint(0, 2, (n,), generator=self.generator, device=self.device).bool()
            else:
                flips = torch.zeros(n, dtype=torch.bool, device=self.device)
            view = view_index(offsets, flips, self.padding)
            yield self._finish(crop_flip(u, offsets, flips, self.padding)), yb, idx, view

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` items, unaugmented (no random state touched)."""
        return self._finish(self.images[:n]), self.loader.y[:n]

    def inputs(self, view: int, start: int, stop: int) -> Tensor:
        """Training inputs ``start:stop`` in view ``view`` (what the exhaustive cache runs the teacher on)."""
        v = torch.full((stop - start,), int(view), device=self.device)
        return self.augment(self.images[start:stop], v)

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict(), "augment": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        self.generator.set_state(state["augment"])
