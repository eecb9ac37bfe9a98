"""The task protocol: what the one trainer runs.

A *task* is an ``nn.Module`` that turns a batch into named loss parts. Every method and scheme is a task (or
builds one); the trainer owns everything else: optimizer, schedule, autocast, clipping, history, checkpoints,
resume, DDP, progress. The contract:

* ``forward(batch) -> {"loss": total, <part>: value, ...}``: every entry is logged as ``train_<part>``; an
  optional ``"logits"`` entry (the student's outputs) gives the training accuracy, counted as
  ``argmax(logits) == batch.y`` over positions where ``batch.y != -100``;
* ``eval_model``: the network that is evaluated, snapshotted and saved for the generation;
* ``teacher_models()``: frozen networks the task reads (moved to the device, never optimised, never in
  ``parameters()`` or a DDP wrapper);
* ``setup(num_train=, num_classes=)``: once before training (memory banks sized to the training set ...);
* ``on_epoch_start(epoch, epochs)``: schedules that change over time (anchors, ramps, annealing);
* ``to_device(device, memory_format)``: moves the task and what its teachers hold;
* ``close()``: removes hooks. Defaults are no-ops.

:class:`StudentTask` is the base of tasks that train one ``student`` through an ``objective``, optionally with
a frozen ``teacher`` (an object from :mod:`gendistill.teachers`); :class:`DistillTask` is the plain one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..knowledge.taps import TappedModel


class Task(nn.Module):
    """Base class of every task the trainer runs (see the module docstring for the contract)."""

    @property
    def eval_model(self) -> nn.Module:  # pragma: no cover - every task defines it
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def teacher_models(self) -> list[nn.Module]:
        return []

    def setup(self, *, num_train: int, num_classes: int) -> None:
        """Once before training. Default: set up the task's ``objective`` submodule, if it has one."""
        objective = self._modules.get("objective")
        if objective is not None:
            objective.setup(num_train=num_train, num_classes=num_classes)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (1-based). Default: nothing."""

    def to_device(self, device: torch.device, memory_format: torch.memory_format | None = None) -> None:
        for m in [self, *self.teacher_models()]:
            m.to(device, memory_format=memory_format) if memory_format is not None else m.to(device)

    def close(self) -> None:
        """Remove hooks and release what the task holds. Default: nothing."""


class StudentTask(Task):
    """A task that trains ``self.student`` through ``self.objective``, with an optional frozen ``teacher``.

    The teacher is deliberately *not* a submodule: it is never in ``parameters()``, ``state_dict()``, the
    optimizer, or a DDP wrapper, and its forward pass runs without gradients (inside the teacher object).
    :meth:`run_student` runs the student through the feature taps its objective reads."""

    student: nn.Module

    def set_student(self, student: nn.Module, layers: list[str] | tuple[str, ...] = ()) -> None:
        self.student = student
        object.__setattr__(self, "_student_run", TappedModel(student, layers, role="student"))

    def set_teacher(self, teacher: Any | None) -> None:
        object.__setattr__(self, "teacher", teacher)

    def run_student(self, *inputs: Any) -> Outputs:
        return self._student_run(*inputs)

    @property
    def eval_model(self) -> nn.Module:
        return self.student

    def teacher_models(self) -> list[nn.Module]:
        teacher = getattr(self, "teacher", None)
        return list(teacher.models) if teacher is not None else []

    def to_device(self, device: torch.device, memory_format: torch.memory_format | None = None) -> None:
        super().to_device(device, memory_format)
        teacher = getattr(self, "teacher", None)
        if teacher is not None:  # a cached teacher moves its stored outputs too
            teacher.to(device)

    def teacher_outputs(self, batch: Batch, objective: Objective | None = None) -> Outputs | None:
        """The teacher's outputs on the batch, or ``None`` when the objective has no teacher term."""
        needs = (objective or self.objective).needs_teacher
        return self.teacher(batch.x, batch.index, batch.view) if needs else None

    def close(self) -> None:
        run = getattr(self, "_student_run", None)
        if run is not None:
            run.close()


class DistillTask(StudentTask):
    """Offline distillation (and training from labels): ``{"loss", <term>..., "logits"}`` for one batch."""

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None = None):
        super().__init__()
        if objective.needs_teacher and teacher is None:
            raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
        self.set_student(student, objective.student_layers)
        self.objective = objective
        self.set_teacher(teacher)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.objective.on_epoch_start(epoch, epochs)  # two-stage terms (FSP, FitNets) switch stage here

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        student = self.run_student(batch.x)
        parts = self.objective(student, self.teacher_outputs(batch), batch)
        parts["logits"] = student.logits
        return parts
