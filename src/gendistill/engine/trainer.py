"""The single training loop, used by every generation, method, scheme and domain.

The trainer runs a :class:`~gendistill.engine.task.Task` over a :class:`BatchSource` for ``config.epochs``
epochs: optimizer, schedule, autocast, gradient clipping, history, checkpoints, resume, NaN guard, DDP and
progress. It knows nothing of what a batch holds or how a model is evaluated: the caller hands it the batch
source and an ``evaluate(model) -> {column: value}`` function for the per-epoch history. Loss values are
accumulated on the device and read once per epoch, so there is no host-device synchronisation per step.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from .. import rundir
from ..errors import ConfigError, NonFiniteLossError
from ..knowledge.base import Batch, set_teacher_scale
from . import distributed
from .checkpoint import load_state, read_safetensors, save_model, save_state
from .evaluate import select_device
from .progress import EpochProgress
from .settings import TrainConfig
from .task import Task

Evaluate = Callable[[nn.Module], dict[str, float]]


class BatchSource(Protocol):
    """Where training batches come from: an in-memory tensor loader, a ``DataLoader``, a rollout collector.

    Batches arrive on the training device. ``state_dict`` holds what makes the order resumable (the shuffling
    generator, the augmentation's generator ...), saved with every epoch checkpoint."""

    num_samples: int
    memory_format: torch.memory_format | None

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def example(self, n: int) -> Batch:
        """The first ``n`` training items, without touching any random state (shapes lazy modules)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # optional: ``bind(model)``, called once before training with the task's ``eval_model``, for sources whose
    # batches depend on the model being trained (DAgger: the student's own rollouts, relabelled by a teacher)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int):
    """The schedule as a function of the step, for ``LambdaLR``."""
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
        if cfg.schedule == "multistep":  # decayed once per milestone epoch already completed
            done = step // steps_per_epoch
            return cfg.gamma ** sum(done >= m for m in cfg.milestones)
        return 1.0

    return f


def build_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class _Run:
    """What one ``fit`` sets up and its phases share."""

    task: Task
    step_task: nn.Module  # the task, or its DDP wrapper
    source: BatchSource
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    evaluate: Evaluate | None
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 1


class _EpochSums:
    """Every loss part's batch-weighted sum in one device vector (a few ops per step, no host sync), plus the
    training accuracy's counts."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.names: tuple[str, ...] | None = None
        self.acc: Tensor | None = None
        self.correct = torch.zeros((), dtype=torch.long, device=device)  # integer counts: no cast per step
        self.scored = torch.zeros((), dtype=torch.long, device=device)
        self.items = 0
        self.scored_items = 0
        self.has_logits = False
        # class logits (2-D) are scored in chunks: one argmax over many batches instead of one per step
        self.pending: list[tuple[Tensor, Tensor]] = []
        self.pending_numel = 0

    @torch.no_grad()  # no graph, so no detach per part
    def add(self, parts: dict[str, Tensor], logits: Tensor | None, batch: Batch) -> None:
        n = len(batch)
        self.items += n
        names = tuple(parts)
        if names != self.names:
            self._fold()
            self.names, self.acc = names, torch.zeros(len(names), device=self.device)
        self.acc.add_(torch.stack(tuple(parts.values())).float(), alpha=n)
        if logits is not None:
            self.has_logits = True
            y = batch.y
            if logits.ndim == 2:  # classes: scored later, many batches at once (exact integer counts)
                self.pending.append((logits.detach(), y))  # y: sources yield fresh label tensors
                self.pending_numel += logits.numel()
                self.scored_items += n  # counted on the host
                if self.pending_numel >= self.PENDING_NUMEL:
                    self._score()
                return
            hit = logits.argmax(-1) == y
            real = y != -100  # sequences: real positions only
            self.correct.add_((hit & real).sum())
            self.scored.add_(real.sum())

    PENDING_NUMEL = 1 << 18  # logits held before scoring (1 MB of float32)

    def _score(self) -> None:
        if not self.pending:
            return
        logits = torch.cat([z for z, _ in self.pending]) if len(self.pending) > 1 else self.pending[0][0]
        y = torch.cat([t for _, t in self.pending]) if len(self.pending) > 1 else self.pending[0][1]
        self.correct.add_((logits.argmax(-1) == y).sum())
        self.pending, self.pending_numel = [], 0

    def _fold(self) -> None:
        if self.names is None or self.acc is None:
            return
        for k, v in zip(self.names, self.acc.unbind()):
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def row(self, world: int) -> dict[str, Any]:
        """``train_<part>`` means over the epoch's items and ``train_acc`` (one collective under DDP)."""
        self._fold()
        self._score()
        names = list(self.sums)
        scored = self.scored + self.scored_items
        packed = torch.stack([self.sums[k] for k in names] + [self.correct.float(), scored.float(),
                                                              torch.tensor(float(self.items), device=self.device)])
        if world > 1:
            packed = distributed.all_reduce_sum(packed)
        items = packed[-1].item()
        row: dict[str, Any] = {f"train_{k}": v.item() / items for k, v in zip(names, packed[:-3])}
        scored = packed[-2].item()
        row["train_acc"] = packed[-3].item() / scored if self.has_logits and scored else None
        return row


def _uncompile(model: nn.Module) -> None:
    """Return a module compiled in place by ``nn.Module.compile()`` to eager execution, so that hooks added
    later (feature taps of the next generation, the analysis's penultimate features) fire."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        model._compiled_call_impl = None


class Trainer:
    """Runs a task for ``config.epochs`` epochs over a batch source.

    Args:
        config: optimisation settings (:class:`~gendistill.engine.settings.TrainConfig`).
        run_dir: where ``history.csv``, snapshots and the resume ``checkpoint.pt`` go; ``None`` keeps nothing
            on disk.
        progress: "auto" | "bar" | "lines" | "off".
        desc: label shown by the progress display.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path | None = None, progress: str = "auto",
                 desc: str = "train"):
        self.cfg = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.desc = desc
        self.device = select_device(config.device)
        distributed.init(self.device.type)
        self._tb = None  # TensorBoard writer (train.tensorboard), opened at the first saved epoch
        self.snapshots: dict[int, dict[str, Tensor]] = {}  # train.snapshot_epochs, in memory when run_dir is None

    # ------------------------------------------------------------------------------------------ phases
    def fit(self, task: Task, train: BatchSource, *, num_classes: int, evaluate: Evaluate | None = None,
            resume: bool = False) -> list[dict[str, Any]]:
        """Train ``task`` on ``train``; return the history (one row per epoch)."""
        run = self._setup(task, train, num_classes, evaluate)
        if resume:
            self._resume(run)
        progress = self.progress if distributed.is_main() else "off"
        with EpochProgress(self.desc, self.cfg.epochs, len(train), progress) as bar:
            for epoch in range(run.start, self.cfg.epochs + 1):
                row = self._train_epoch(run, epoch, bar)
                row.update(self._evaluate(run))
                run.history.append(row)
                self._save(run, epoch)
                bar.epoch_end(row, ["train_loss", "train_acc", "test_acc", "holdout_agreement"])
        if self.cfg.compile:
            _uncompile(task.eval_model)
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        return run.history

    def _setup(self, task: Task, source: BatchSource, num_classes: int, evaluate: Evaluate | None) -> _Run:
        cfg, dev = self.cfg, self.device
        if not isinstance(task, Task):
            raise TypeError(f"the trainer runs gendistill.engine.Task objects, got {type(task).__name__}")
        world = distributed.world_size()
        if world > 1 and cfg.batch_size % world:
            raise ConfigError(f"train.batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world})")
        task.to_device(dev, source.memory_format)
        if hasattr(source, "bind"):  # a source that collects data with the model being trained
            source.bind(task.eval_model)
        task.setup(num_train=source.num_samples, num_classes=num_classes)
        self._materialize(task, source)
        params = [p for p in task.parameters() if p.requires_grad]
        optimizer = build_optimizer(cfg, params)
        if cfg.compile:  # in place (state_dict keys unchanged); undone when fit returns, see _uncompile
            # compiled graphs of an earlier model of the same class are reused without checking its forward
            # hooks, so a fresh student with feature taps would run a graph that never calls them: start clean
            torch.compiler.reset()
            task.eval_model.compile()
        step_task: nn.Module = task
        if world > 1:  # the frozen teacher is not a submodule of the task, so it is never wrapped
            from torch.nn.parallel import DistributedDataParallel

            step_task = DistributedDataParallel(task, device_ids=[dev.index] if dev.type == "cuda" else None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, len(source)))
        return _Run(task, step_task, source, params, optimizer, scheduler, evaluate)

    def _materialize(self, task: Task, source: BatchSource) -> None:
        """Run one batch without gradients so lazy adapter modules get their shapes (before the optimizer)."""
        if not any(isinstance(p, UninitializedParameter) for p in task.parameters()):
            return
        task.eval()
        with torch.no_grad(), self._autocast():
            task(source.example(min(source.num_samples, self.cfg.batch_size)))
        task.train()

    def _resume(self, run: _Run) -> None:
        ckpt = self._checkpoint_path()
        if ckpt is None or not ckpt.exists():
            return
        state = load_state(ckpt)
        run.task.load_state_dict(state["task"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.source.load_state_dict(state["source"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(_to_py_random_state(state["py_rng"]))
        run.history = state["history"]
        run.start = int(state["epoch"]) + 1

    def _train_epoch(self, run: _Run, epoch: int, bar: EpochProgress) -> dict[str, Any]:
        t0 = time.perf_counter()
        bar.start(epoch)
        run.task.on_epoch_start(epoch, self.cfg.epochs)
        if self.cfg.kd_warmup_epochs:
            set_teacher_scale(run.task, min(epoch / self.cfg.kd_warmup_epochs, 1.0))
        run.task.train()
        sums = _EpochSums(self.device)
        lr = run.optimizer.param_groups[0]["lr"]
        clip = self.cfg.grad_clip
        for batch in run.source:
            with self._autocast():
                parts = run.step_task(batch)
            logits = parts.pop("logits", None)
            run.optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(run.params, clip)
            run.optimizer.step()
            run.scheduler.step()
            sums.add(parts, logits, batch)
            bar.advance()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        totals = sums.row(distributed.world_size())
        train_acc = totals.pop("train_acc")
        row.update(totals)
        self._check_finite(row, epoch)
        row["train_acc"] = train_acc
        row["train_seconds"] = time.perf_counter() - t0
        return row

    def _evaluate(self, run: _Run) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = dict(run.evaluate(run.task.eval_model)) if run.evaluate is not None else {}
        row["eval_seconds"] = time.perf_counter() - t0
        return row

    def _save(self, run: _Run, epoch: int) -> None:
        if epoch in self.cfg.snapshot_epochs:
            self._snapshot(run.task.eval_model, epoch)
        if self.run_dir is None:
            return
        rundir.write_history(self.run_dir, run.history)
        if self.cfg.tensorboard and distributed.is_main():
            self._tensorboard(run.history[-1], epoch)
        if epoch % self.cfg.checkpoint_every == 0 or epoch == self.cfg.epochs:
            save_state(self._checkpoint_path(), {
                "epoch": epoch,
                "task": run.task.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "source": run.source.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "py_rng": _from_py_random_state(random.getstate()),
                "history": run.history,
            })
            distributed.barrier()  # the checkpoint is on disk before any process goes on

    # ------------------------------------------------------------------------------------------ helpers
    def _tensorboard(self, row: dict[str, Any], epoch: int) -> None:
        """Every numeric column of this epoch's history row as a scalar (``train/loss``, ``test/acc`` ...)."""
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / rundir.TENSORBOARD))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._tb.add_scalar(key.replace("_", "/", 1), value, epoch)
        self._tb.flush()

    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _checkpoint_path(self) -> Path | None:
        return self.run_dir / rundir.CHECKPOINT if self.run_dir is not None else None

    def _snapshot(self, model: nn.Module, epoch: int) -> None:
        """The evaluated model after ``epoch`` (a point of the training trajectory, for RCO)."""
        if self.run_dir is None:
            self.snapshots[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            save_model(model, rundir.snapshot_path(self.run_dir, epoch), {"epoch": epoch})

    def _check_finite(self, row: dict[str, Any], epoch: int) -> None:
        bad = [k for k, v in row.items() if k.startswith("train_") and not math.isfinite(v)]
        if not bad:
            return
        parts = [k for k in bad if k != "train_loss"] or bad
        part = parts[0].removeprefix("train_")
        where = ""
        ckpt = self._checkpoint_path()
        if ckpt is not None and ckpt.exists():
            last = load_state(ckpt)["epoch"]
            where = f"; the last good checkpoint (epoch {last}) is kept at {ckpt}"
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


def load_snapshots(gen_root: str | Path) -> dict[int, dict[str, Tensor]]:
    """``{epoch: state_dict}`` of the snapshots a generation's folder holds (``train.snapshot_epochs``)."""
    return {epoch: read_safetensors(f) for epoch, f in rundir.snapshot_files(gen_root).items()}
