"""The classification domain: inputs and one label per item; accuracy, NLL, Brier and ECE; top-1 fidelity.

Training batches come from an in-memory :class:`~gendistill.data.Split` (index slicing, no per-sample Python)
or from a :class:`~gendistill.data.DatasetSplit` through a ``DataLoader`` with workers; both draw the same
order from the same seed. Augmentations (``train.augment``) are applied per batch with recorded parameters,
so a teacher's outputs on a fixed set of views can be cached and replayed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import metrics as M
from ..compression import model_figures
from ..data import DatasetBundle, DatasetSplit, Split
from ..data.augment import AugmentPlan, build_augmentations
from ..data.gpu_augment import DeviceImageLoader
from ..data.loader import DatasetLoader, TensorLoader
from ..engine import distributed
from ..engine.evaluate import predict_logits
from ..engine.settings import TrainConfig
from ..engine.task import DistillTask, Task
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from ..models import build_model, check_fits
from ..registry import DOMAINS
from ..similarity import cka_matrix, penultimate_features
from ..teachers import CachedTeacher, EnsembleTeacher, FrozenTeacher
from ..view_cache import ExhaustiveViewCache
from . import Domain


class ClassificationBatches:
    """One generation's training batches for a classification split, with optional augmentation.

    Under data parallelism every process draws the same order and takes its share of each batch."""

    def __init__(self, split: Split | DatasetSplit, train: TrainConfig, *, seed: int, device: torch.device,
                 plan: AugmentPlan | None):
        world, rank = distributed.world_size(), distributed.rank()
        n, bs = len(split), train.batch_size
        drop_last = n % bs == 1 or world > 1
        self.memory_format = None
        self.device = device
        self.plan = plan
        self.split = split
        if isinstance(split, Split):
            x = split.x.to(device)
            if train.channels_last and device.type == "cuda" and x.ndim == 4:
                self.memory_format = torch.channels_last
                x = x.contiguous(memory_format=torch.channels_last)
            self._y = split.y.to(device)
            self.loader: TensorLoader | DatasetLoader = TensorLoader(
                x, self._y, bs, shuffle=True, drop_last=drop_last, seed=seed, rank=rank, world_size=world)
        else:
            self._y = None
            self.loader = DatasetLoader(split.dataset, bs, shuffle=True, drop_last=drop_last, seed=seed, rank=rank,
                                        world_size=world, num_workers=split.num_workers, device=device)
        self.num_samples = n

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for xb, yb, idx in self.loader:
            if self.plan is None:
                yield Batch(xb, yb, idx)
                continue
            xb, view, mix = self.plan.batch(xb, idx)
            if mix is not None:
                mix = (self._y[mix[0].to(self.device)], mix[1].to(self.device))
            yield Batch(xb, yb, idx, view, mix)

    def example(self, n: int) -> Batch:
        head = self.split.head(n)
        return Batch(head.x.to(self.device), head.y.to(self.device), torch.arange(len(head.y), device=self.device))

    def state_dict(self) -> dict[str, Any]:
        state = {"loader": self.loader.state_dict()}
        if self.plan is not None:
            state["augment"] = self.plan.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        if self.plan is not None and "augment" in state:
            self.plan.load_state_dict(state["augment"])


class DeviceAugmentBatches:
    """Training batches with crop-with-padding and flip done on the device from resident (uint8) images
    (``train.augment: [crop_flip]`` alone; :mod:`gendistill.data.gpu_augment`). Each batch carries its view
    indices, the key of the exhaustive teacher cache."""

    def __init__(self, split: Split, train: TrainConfig, *, seed: int, device: torch.device, padding: int,
                 flip: bool):
        self.split = split
        self.device = device
        self.loader = DeviceImageLoader(
            split.x, split.y, batch_size=train.batch_size, seed=seed, device=device, padding=padding, flip=flip,
            pixels=split.pixels, channels_last=train.channels_last and device.type == "cuda",
            rank=distributed.rank(), world_size=distributed.world_size())
        self.memory_format = self.loader.memory_format
        self.num_samples = self.loader.num_samples
        self.plan = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for xb, yb, idx, view in self.loader:
            yield Batch(xb, yb, idx, view)

    def example(self, n: int) -> Batch:
        x, y = self.loader.head(n)
        return Batch(x, y, torch.arange(len(y), device=self.device))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


def _device_crop_flip(train: TrainConfig, data: DatasetBundle) -> dict[str, Any] | None:
    """The crop_flip options when it is the only augmentation of an in-memory image split, else None."""
    if len(train.augment) != 1 or train.augment[0].get("name") != "crop_flip":
        return None
    if not isinstance(data.train, Split) or data.train.x.ndim != 4:
        raise ConfigError("train.augment crop_flip needs an in-memory image split (N, C, H, W)")
    opts = {k: v for k, v in train.augment[0].items() if k != "name"}
    return {"padding": int(opts.get("padding", 4)), "flip": bool(opts.get("flip", True))}


def batches(split: Split | DatasetSplit, train: TrainConfig, *, seed: int = 0, device: Any = "cpu",
            augment: AugmentPlan | None = None) -> ClassificationBatches:
    """Training batches of a classification split, for running a task with the trainer by hand:
    ``Trainer(cfg).fit(task, batches(data.train, cfg, seed=0), num_classes=data.num_classes)``."""
    return ClassificationBatches(split, train, seed=seed, device=torch.device(device), plan=augment)


@DOMAINS.register("classification", summary="one label per item: accuracy, NLL, Brier, ECE; top-1 agreement and KL")
class ClassificationDomain(Domain):
    """Items with one class label each. Predictions are logits ``(N, C)``; see :mod:`gendistill.metrics`."""

    name = "classification"
    train_keys = ("acc",)
    epoch_keys = ("test_acc", "test_nll")

    # ------------------------------------------------------------------------------------------ models
    def build_model(self, spec: Any, data: DatasetBundle) -> nn.Module:
        return build_model(spec, data.num_classes, data.input_shape)

    def check_model(self, spec: Any, data: DatasetBundle, where: str) -> nn.Module:
        return check_fits(spec, data.name, data.num_classes, data.input_shape, where=where)

    def check_teacher(self, teacher: nn.Module, data: DatasetBundle) -> None:
        logits = predict_logits(teacher, data.test.head(2).x, device=next(teacher.parameters()).device)
        if logits.ndim != 2 or logits.shape[1] != data.num_classes:
            raise ConfigError(
                f"the teacher outputs shape {tuple(logits.shape[1:])} per sample but {data.name} has "
                f"{data.num_classes} classes; give a teacher trained on this dataset"
            )

    # ------------------------------------------------------------------------------------------ training
    def train_source(self, data: DatasetBundle, train: TrainConfig, *, seed: int, device: Any,
                     views: int) -> ClassificationBatches | DeviceAugmentBatches:
        device_aug = _device_crop_flip(train, data)
        if device_aug is not None:
            return DeviceAugmentBatches(data.train, train, seed=seed, device=torch.device(device), **device_aug)
        plan = None
        if train.augment:
            if not isinstance(data.train, Split):
                raise ConfigError("train.augment needs an in-memory training split; augment inside your Dataset "
                                  "instead (a DatasetSplit is read as its items come)")
            plan = AugmentPlan(build_augmentations(train.augment), data.train.x, views=views, seed=seed)
        return ClassificationBatches(data.train, train, seed=seed, device=torch.device(device), plan=plan)

    def default_task(self, student: nn.Module, objective: Objective, teacher: Any | None) -> Task:
        return DistillTask(student, objective, teacher)

    # ------------------------------------------------------------------------------------------ evaluation
    def predict(self, model: nn.Module, split: Split | DatasetSplit) -> Tensor:
        return predict_logits(model, split.x if isinstance(split, Split) else split,
                              device=next(model.parameters()).device)

    def metrics(self, model: nn.Module | None, pred: Tensor, split: Split | DatasetSplit) -> dict[str, float]:
        return M.classification_metrics(pred, split.y)

    def epoch_metrics(self, model: nn.Module, split: Split | DatasetSplit) -> dict[str, float]:
        logits = self.predict(model, split)
        return {"test_acc": M.accuracy(logits, split.y), "test_nll": M.nll(logits, split.y)}

    def fidelity(self, teacher_pred: Tensor, student_pred: Tensor) -> dict[str, float]:
        return M.fidelity_metrics(teacher_pred, student_pred)

    def ensemble(self, preds: Sequence[Tensor]) -> Tensor:
        return M.ensemble_logits(preds)

    def compression(self, model: nn.Module, data: DatasetBundle, *, checkpoint: Path | None, speed: bool,
                    device: Any) -> dict[str, Any]:
        return model_figures(model, data.input_shape, checkpoint=checkpoint, speed=speed, device=device)

    def analyses(self, models: list[nn.Module], test_preds: list[Tensor], data: DatasetBundle) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(data.test, Split):  # representations need the inputs in memory
            feats = [penultimate_features(m, data.test.x) for m in models]
            out["cka"] = {"gens": list(range(len(models))), "test": cka_matrix(feats).tolist()}
        out["reliability"] = {f"gen{k}": M.reliability_bins(t, data.test.y) for k, t in enumerate(test_preds)}
        return out

    # ------------------------------------------------------------------------------------------ teachers
    def teacher(self, models: list[nn.Module], layers: tuple[str, ...]) -> FrozenTeacher | EnsembleTeacher:
        if len(models) == 1:
            return FrozenTeacher(models[0], layers)
        return EnsembleTeacher(models, layers)

    def cache_teacher(self, teacher: Any, source: ClassificationBatches | DeviceAugmentBatches, data: DatasetBundle, train: TrainConfig, *,
                      layers: tuple[str, ...], train_pred: Tensor | None,
                      path: Path | None) -> CachedTeacher | ExhaustiveViewCache | None:
        dtype = torch.float16 if train.cache_dtype == "float16" else torch.float32
        if isinstance(source, DeviceAugmentBatches):  # every crop/flip view, looked up exactly
            if layers:
                return None  # features of 162 views per image would not fit: the teacher runs live
            prefix = (Path(train.view_cache_dir) / "views" if train.view_cache_dir
                      else None if path is None else Path(f"{path}.views"))
            return ExhaustiveViewCache.build(teacher, source.loader, prefix=prefix, mmap_mb=train.cache_mmap_mb,
                                             dtype=dtype)
        if source.plan is not None:
            return CachedTeacher.build_views(teacher, source.plan, dtype=dtype)
        if not layers and train_pred is not None:
            return CachedTeacher.from_logits(teacher, train_pred, dtype)
        if not isinstance(data.train, Split):
            return None  # features of a Dataset-backed split: the teacher runs live
        return CachedTeacher.build(teacher, data.train.x, dtype=dtype, path=None if path is None else str(path),
                                   mmap_mb=train.cache_mmap_mb)
