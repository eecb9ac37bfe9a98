"""The single training loop, used by every generation, method and scheme.

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns a dict of named loss parts with the total under
``"loss"`` (and optionally the student's ``"logits"``, for training accuracy) and whose ``eval_model`` is the
network to evaluate. The trainer does the rest: optimizer, schedule, autocast, gradient clipping, history,
checkpoints, resume, NaN guard and progress. Loss values are accumulated on the device and read once per
epoch, so there is no host-device synchronisation per step.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from ..analysis.metrics import agreement, kl_teacher_student
from ..config import TrainConfig
from ..data import Split, TensorLoader
from ..data.augment import AugmentPlan
from ..errors import ConfigError, NonFiniteLossError
from ..io import atomic_write_text
from ..knowledge.base import Batch
from . import distributed
from .checkpoint import load_state, read_safetensors, save_model, save_state
from .evaluate import predict_logits, select_device
from .progress import EpochProgress

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
SNAPSHOTS = "snapshots"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int):
    """The schedule as a picklable-free function of the step, for ``LambdaLR``."""
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def f(step: int) -> float:
        if cfg.schedule == "onecycle":  # linear ramp from lr/25 over 30%, then cosine to lr/1e4
            up = max(1, int(0.3 * total))
            if step < up:
                return 1 / 25 + (1 - 1 / 25) * step / up
            t = min(1.0, (step - up) / max(1, total - up))
            return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "step":
            return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
        return 1.0

    return f


def build_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class FidelityProbe:
    """Held-out inputs and the teacher's logits on them: per-epoch agreement and KL go into the history."""

    x: Tensor
    teacher_logits: Tensor


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _fold(sums: dict[str, Tensor], names: tuple[str, ...] | None, acc: Tensor | None) -> None:
    """Add the accumulated vector ``acc`` (one entry per name) into the per-part sums."""
    if names is None or acc is None:
        return
    for k, v in zip(names, acc.unbind()):
        sums[k] = sums[k] + v if k in sums else v


def _uncompile(model: nn.Module) -> None:
    """Return a module compiled in place by ``nn.Module.compile()`` to eager execution, so that hooks added
    later (feature taps of the next generation, the analysis's penultimate features) fire."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        model._compiled_call_impl = None


class Trainer:
    """Runs a task for ``config.epochs`` epochs over an in-memory training split.

    Args:
        config: optimisation settings (:class:`~gendistill.config.TrainConfig`).
        run_dir: where ``history.csv`` and the resume ``checkpoint.pt`` go; ``None`` keeps nothing on disk.
        progress: "auto" | "bar" | "lines" | "off".
        desc: label shown by the progress display.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path | None = None, progress: str = "auto", desc: str = "train"):
        self.cfg = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.desc = desc
        self.device = select_device(config.device)
        self.snapshots: dict[int, dict[str, Tensor]] = {}  # train.snapshot_epochs, in memory when run_dir is None

    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _materialize(self, task: nn.Module, x: Tensor, y: Tensor) -> None:
        """Run one batch without gradients so lazy adapter modules get their shapes (before the optimizer)."""
        if not any(isinstance(p, UninitializedParameter) for p in task.parameters()):
            return
        task.eval()
        with torch.no_grad(), self._autocast():
            n = min(len(x), self.cfg.batch_size)
            task(Batch(x[:n], y[:n], torch.arange(n, device=x.device)))
        task.train()

    def fit(
        self,
        task: nn.Module,
        train: Split,
        test: Split | None = None,
        *,
        num_classes: int,
        seed: int = 0,
        resume: bool = False,
        probe: FidelityProbe | None = None,
        augment: AugmentPlan | None = None,
    ) -> list[dict[str, Any]]:
        cfg, dev = self.cfg, self.device
        distributed.init(dev.type)
        world, rank = distributed.world_size(), distributed.rank()
        channels_last = cfg.channels_last and dev.type == "cuda" and train.x.ndim == 4
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        task.to(dev, memory_format=fmt) if channels_last else task.to(dev)
        teacher = getattr(task, "teacher", None)
        if teacher is not None and hasattr(teacher, "to"):
            teacher.to(dev)
        for m in getattr(task, "teacher_models", list)():
            m.to(dev, memory_format=fmt) if channels_last else m.to(dev)
        x = train.x.to(dev).contiguous(memory_format=fmt) if channels_last else train.x.to(dev)
        y = train.y.to(dev)
        n = len(y)
        if world > 1 and cfg.batch_size % world:
            raise ConfigError(f"train.batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world})")
        loader = TensorLoader(x, y, cfg.batch_size, shuffle=True, drop_last=(n % cfg.batch_size == 1 or world > 1),
                              seed=seed, rank=rank, world_size=world)
        objective = getattr(task, "objective", None)
        if objective is not None:
            objective.setup(num_train=n, num_classes=num_classes)
        self._materialize(task, x, y)
        params = [p for p in task.parameters() if p.requires_grad]
        optimizer = build_optimizer(cfg, params)
        if cfg.compile:  # in place (state_dict keys unchanged); undone when fit returns, see _uncompile
            # compiled graphs of an earlier model of the same class are reused without checking its forward
            # hooks, so a fresh student with feature taps would run a graph that never calls them: start clean
            torch.compiler.reset()
            task.eval_model.compile()
        step_task = task
        if world > 1:  # the frozen teacher is not a submodule of the task, so it is never wrapped
            from torch.nn.parallel import DistributedDataParallel

            step_task = DistributedDataParallel(task, device_ids=[dev.index] if dev.type == "cuda" else None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, len(loader)))
        history: list[dict[str, Any]] = []
        start = 1
        ckpt = self.run_dir / CHECKPOINT if self.run_dir is not None else None
        if resume and ckpt is not None and ckpt.exists():
            state = load_state(ckpt)
            task.load_state_dict(state["task"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            if augment is not None and "augment" in state:
                augment.load_state_dict(state["augment"])
            torch.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available() and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            random.setstate(_to_py_random_state(state["py_rng"]))
            history = state["history"]
            start = int(state["epoch"]) + 1

        model = task.eval_model
        progress = self.progress if distributed.is_main() else "off"
        with EpochProgress(self.desc, cfg.epochs, len(loader), progress) as bar:
            for epoch in range(start, cfg.epochs + 1):
                t0 = time.perf_counter()
                bar.start(epoch)
                if hasattr(task, "on_epoch_start"):  # schemes that change over time (RCO anchors, PS-KD ...)
                    task.on_epoch_start(epoch, cfg.epochs)
                task.train()
                sums: dict[str, Tensor] = {}
                part_names: tuple[str, ...] | None = None
                acc: Tensor | None = None
                correct = torch.zeros((), device=dev)
                scored = False  # a task that returns no "logits" (data-free) gets no training accuracy
                lr = optimizer.param_groups[0]["lr"]
                for xb, yb, idx in loader:
                    view = mix = None
                    if augment is not None:
                        xb, view, mix = augment.batch(xb, idx)
                        if mix is not None:
                            mix = (y[mix[0].to(dev)], mix[1].to(dev))
                    with self._autocast():
                        parts = step_task(Batch(xb, yb, idx, view, mix))
                    logits = parts.pop("logits", None)
                    optimizer.zero_grad(set_to_none=True)
                    parts["loss"].backward()
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    # every part's batch-weighted sum in one device vector: a few ops per step, no sync
                    if tuple(parts) != part_names:
                        _fold(sums, part_names, acc)
                        part_names, acc = tuple(parts), torch.zeros(len(parts), device=dev)
                    acc.add_(torch.stack([v.detach() for v in parts.values()]).float(), alpha=len(yb))
                    if logits is not None:
                        correct += (logits.detach().argmax(-1) == yb).sum()
                        scored = True
                    bar.advance()
                _fold(sums, part_names, acc)
                seen = len(loader) * cfg.batch_size if loader.drop_last else n
                if world > 1:  # one collective per epoch: every part's sum and the correct count
                    names = list(sums)
                    packed = distributed.all_reduce_sum(torch.stack([sums[k] for k in names] + [correct.float()]))
                    sums = dict(zip(names, packed[:-1]))
                    correct = packed[-1]
                row: dict[str, Any] = {"epoch": epoch, "lr": lr}
                for k, v in sums.items():
                    row[f"train_{k}"] = v.item() / seen
                self._check_finite(row, epoch)
                row["train_acc"] = correct.item() / seen if scored else None
                row["train_seconds"] = time.perf_counter() - t0
                t_eval = time.perf_counter()
                if test is not None:
                    logits = predict_logits(model, test.x, device=dev)
                    row["test_acc"] = (logits.argmax(-1) == test.y).float().mean().item()
                    row["test_nll"] = torch.nn.functional.cross_entropy(logits, test.y).item()
                if probe is not None and len(probe.x):
                    s = predict_logits(model, probe.x, device=dev)
                    row["holdout_agreement"] = agreement(probe.teacher_logits, s)
                    row["holdout_kl"] = kl_teacher_student(probe.teacher_logits, s)
                row["eval_seconds"] = time.perf_counter() - t_eval
                history.append(row)
                if epoch in cfg.snapshot_epochs:
                    self._snapshot(model, epoch)
                bar.epoch_end(row, ["train_loss", "train_acc", "test_acc", "holdout_agreement"])
                if self.run_dir is not None:
                    _write_history(self.run_dir / HISTORY, history)
                    if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                        save_state(ckpt, {
                            "epoch": epoch,
                            "task": task.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "loader": loader.state_dict(),
                            **({"augment": augment.state_dict()} if augment is not None else {}),
                            "torch_rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                            "py_rng": _from_py_random_state(random.getstate()),
                            "history": history,
                        })
                        distributed.barrier()  # the checkpoint is on disk before any process goes on
        if cfg.compile:
            _uncompile(task.eval_model)
        return history

    def _snapshot(self, model: nn.Module, epoch: int) -> None:
        """The evaluated model after ``epoch`` (a point of the training trajectory, for RCO)."""
        if self.run_dir is None:
            self.snapshots[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            save_model(model, self.run_dir / SNAPSHOTS / f"epoch{epoch}.safetensors", {"epoch": epoch})

    def _check_finite(self, row: dict[str, Any], epoch: int) -> None:
        bad = [k for k, v in row.items() if k.startswith("train_") and not math.isfinite(v)]
        if not bad:
            return
        parts = [k for k in bad if k != "train_loss"] or bad
        part = parts[0].removeprefix("train_")
        where = ""
        if self.run_dir is not None and (self.run_dir / CHECKPOINT).exists():
            last = load_state(self.run_dir / CHECKPOINT)["epoch"]
            where = f"; the last good checkpoint (epoch {last}) is kept at {self.run_dir / CHECKPOINT}"
        raise NonFiniteLossError(
            f"{self.desc}: loss part {part!r} became {row[parts[0]]} in epoch {epoch}{where}. "
            "Lower train.lr, set train.grad_clip, or check the inputs for NaN/inf",
            epoch=epoch,
            part=part,
        )


def _from_py_random_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _to_py_random_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def load_snapshots(run_dir: str | Path) -> dict[int, dict[str, Tensor]]:
    """``{epoch: state_dict}`` of the snapshots a run directory holds (``train.snapshot_epochs``)."""
    files = Path(run_dir, SNAPSHOTS).glob("epoch*.safetensors")
    return {int(f.stem.removeprefix("epoch")): read_safetensors(f) for f in sorted(files)}
