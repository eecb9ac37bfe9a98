"""Random input augmentation with recorded parameters, so augmented views can be *replayed*.

An augmentation draws per-sample parameters (``sample``) and applies them (``apply``). Because the parameters
are explicit tensors, a fixed set of views can be drawn once (:class:`AugmentPlan` with ``views`` > 0) and a
teacher's outputs on every view cached once, as FKD (Shen & Xing 2022) and ReLabel (Yun et al. 2021) do;
each step then picks, per sample, one of its recorded views. With ``views=0`` parameters are drawn fresh
every step and the teacher must run live.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import Registry

AUGMENTATIONS = Registry("augmentation")
Params = dict[str, Tensor]


class Augmentation:
    """Base: ``sample(idx, x_shape, generator)`` -> params (first dim = len(idx)); ``apply(x, params, x_full)``."""

    mixes_labels = False

    def sample(self, idx: Tensor, x_shape: tuple[int, ...], n_total: int, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, x: Tensor, params: Params, x_full: Tensor) -> Tensor:
        raise NotImplementedError


@AUGMENTATIONS.register("noise", summary="additive Gaussian noise: x + std * eps")
class Noise(Augmentation):
    def __init__(self, std: float = 0.1):
        if not std > 0:
            raise ValueError(f"noise std must be > 0, got {std}")
        self.std = float(std)

    def sample(self, idx, x_shape, n_total, generator):
        return {"noise": (torch.randn((len(idx), *x_shape), generator=generator) * self.std).half()}

    def apply(self, x, params, x_full):
        return x + params["noise"].to(x.device, x.dtype)


def _translate(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """Zero-padded translation of each sample by ``shift[i]`` positions along ``dim`` (vectorised gather)."""
    length = x.shape[dim]
    pos = torch.arange(length, device=x.device)
    src = pos.view(1, length) - shift.view(-1, 1).to(x.device)  # (N, L): where each output position reads from
    valid = (src >= 0) & (src < length)
    src = src.clamp(0, length - 1)
    view = [x.shape[0]] + [1] * (x.ndim - 1)
    view[dim] = length
    index = src.view(view).expand_as(x)
    out = torch.gather(x, dim, index)
    return out * valid.view(view).to(x.dtype)


@AUGMENTATIONS.register("shift", summary="random zero-padded translation by up to max_shift positions (1-D and 2-D)")
class Shift(Augmentation):
    def __init__(self, max_shift: int = 4):
        if max_shift < 1:
            raise ValueError(f"max_shift must be >= 1, got {max_shift}")
        self.max_shift = int(max_shift)

    def sample(self, idx, x_shape, n_total, generator):
        spatial = max(1, len(x_shape) - 1)
        return {"shift": torch.randint(-self.max_shift, self.max_shift + 1, (len(idx), spatial), generator=generator)}

    def apply(self, x, params, x_full):
        s = params["shift"]
        if x.ndim == 2:  # flat vectors: shift along the feature axis
            return _translate(x, s[:, 0], 1)
        out = x
        for k in range(min(s.shape[1], x.ndim - 2)):
            out = _translate(out, s[:, k], x.ndim - 1 - k)
        return out


@AUGMENTATIONS.register("flip", summary="horizontal flip with probability p (images)")
class Flip(Augmentation):
    def __init__(self, p: float = 0.5):
        if not 0 < p <= 1:
            raise ValueError(f"flip p must be in (0, 1], got {p}")
        self.p = float(p)

    def sample(self, idx, x_shape, n_total, generator):
        return {"flip": torch.rand(len(idx), generator=generator) < self.p}

    def apply(self, x, params, x_full):
        f = params["flip"].to(x.device).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(f, x.flip(-1), x)


@AUGMENTATIONS.register("crop_flip", summary="random crop with zero padding + horizontal flip (images; on its own: "
                        "done on the device, with the exhaustive teacher cache)")
class CropFlip(Augmentation):
    """torchvision's ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip()``, vectorised
    (:func:`gendistill.data.gpu_augment.crop_flip`). Given alone in ``train.augment``, batches are augmented on
    the device from uint8 images and the teacher cache holds every one of the ``2 (2p + 1)^2`` views."""

    def __init__(self, padding: int = 4, flip: bool = True):
        if not 1 <= int(padding) <= 16:
            raise ValueError(f"crop_flip padding must be in 1..16, got {padding}")
        self.padding, self.flip = int(padding), bool(flip)

    def sample(self, idx, x_shape, n_total, generator):
        side = 2 * self.padding + 1
        flips = torch.rand(len(idx), generator=generator) < 0.5 if self.flip else torch.zeros(len(idx), dtype=torch.bool)
        return {"offsets": torch.randint(0, side, (len(idx), 2), generator=generator), "flip": flips}

    def apply(self, x, params, x_full):
        from .gpu_augment import crop_flip

        if x.ndim != 4:
            raise ValueError(f"crop_flip needs images (N, C, H, W), got inputs of shape {tuple(x.shape)}")
        return crop_flip(x, params["offsets"], params["flip"], self.padding).contiguous()


@AUGMENTATIONS.register("mixup", summary="mixup (Zhang et al. 2018): lam*x_i + (1-lam)*x_j, lam ~ Beta(alpha, alpha)")
class Mixup(Augmentation):
    """Mixes each sample with a random partner from the training set. The CE term mixes labels the same way;
    other label-based terms use the first sample's label."""

    mixes_labels = True

    def __init__(self, alpha: float = 0.4):
        if not alpha > 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def sample(self, idx, x_shape, n_total, generator):
        import numpy as np

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        lam = np.random.default_rng(seed).beta(self.alpha, self.alpha, len(idx)).astype(np.float32)
        return {"partner": torch.randint(0, n_total, (len(idx),), generator=generator), "lam": torch.from_numpy(lam)}

    def apply(self, x, params, x_full):
        lam = params["lam"].to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
        partner = x_full[params["partner"].to(x_full.device)].to(x.device)
        return lam * x + (1 - lam) * partner


def build_augmentations(specs: list[dict[str, Any]]) -> list[Augmentation]:
    out = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name is None:
            raise ConfigError(f"config error: train.augment: each entry needs a name; available: {', '.join(AUGMENTATIONS.names())}")
        try:
            out.append(AUGMENTATIONS.create(name, **spec))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config error: train.augment.{name}: {e}") from None
    return out


class AugmentPlan:
    """Augmentations for one generation's training set.

    ``views`` > 0: parameters for ``views`` augmented copies of every sample are drawn once from ``seed``;
    :meth:`batch` picks one recorded view per sample and returns its index, so a teacher cache built with
    :meth:`view_inputs` holds exactly the teacher's outputs on the inputs the student sees.
    ``views`` == 0: fresh parameters every step (the teacher must run live).
    """

    def __init__(self, augmentations: list[Augmentation], x_full: Tensor, views: int = 0, seed: int = 0):
        self.augs = augmentations
        self.x_full = x_full
        self.views = int(views)
        self.generator = torch.Generator().manual_seed(seed)
        n, shape = len(x_full), tuple(x_full.shape[1:])
        self.table: list[Params] = []  # per augmentation: name -> (views, N, ...) parameters
        if self.views:
            table_gen = torch.Generator().manual_seed(seed + 7919)
            everyone = torch.arange(n)
            drawn = [[a.sample(everyone, shape, n, table_gen) for a in self.augs] for _ in range(self.views)]
            self.table = [{k: torch.stack([drawn[v][j][k] for v in range(self.views)]) for k in drawn[0][j]}
                          for j in range(len(self.augs))]

    @property
    def mixes_labels(self) -> bool:
        return any(a.mixes_labels for a in self.augs)

    def _apply(self, x: Tensor, params: list[Params]) -> Tensor:
        for a, p in zip(self.augs, params):
            x = a.apply(x, p, self.x_full)
        return x

    def _partner(self, params: list[Params]) -> tuple[Tensor, Tensor] | None:
        for a, p in zip(self.augs, params):
            if a.mixes_labels:
                return p["partner"], p["lam"]
        return None

    def batch(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Augment a batch: returns (inputs, view per sample or None, (partner index, lam) or None)."""
        cpu_idx = idx.cpu()
        if self.views:
            view = torch.randint(0, self.views, (len(idx),), generator=self.generator)
            params = [{k: t[view, cpu_idx] for k, t in p.items()} for p in self.table]
            return self._apply(x, params), view.to(idx.device), self._partner(params)
        params = [a.sample(cpu_idx, tuple(x.shape[1:]), len(self.x_full), self.generator) for a in self.augs]
        return self._apply(x, params), None, self._partner(params)

    def view_inputs(self, v: int, start: int, stop: int) -> Tensor:
        """Training inputs ``start:stop`` as augmented in recorded view ``v``."""
        params = [{k: t[v, start:stop] for k, t in p.items()} for p in self.table]
        return self._apply(self.x_full[start:stop], params)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
