"""Offline distillation: a trainable student learns from a frozen teacher through an objective."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..knowledge.taps import FeatureTap
from ..registry import SCHEMES


class StudentTask(nn.Module):
    """What every task that trains one ``student`` through an ``objective`` shares: the evaluated network is
    ``self.student``, and the optional frozen ``teacher`` is deliberately *not* a submodule: it is never in
    ``parameters()``, ``state_dict()``, the optimizer, or a DDP wrapper. Its forward pass runs without
    gradients (inside the teacher object)."""

    student: nn.Module
    objective: Objective

    def set_teacher(self, teacher: Any | None) -> None:
        object.__setattr__(self, "teacher", teacher)

    @property
    def eval_model(self) -> nn.Module:
        return self.student

    def teacher_models(self) -> list[nn.Module]:
        return list(self.teacher.models) if self.teacher is not None else []

    def teacher_outputs(self, batch: Batch, objective: Objective | None = None) -> Outputs | None:
        """The teacher's outputs on the batch, or ``None`` when the objective has no teacher term."""
        needs = (objective or self.objective).needs_teacher
        return self.teacher(batch.x, batch.index, batch.view) if needs else None


class DistillTask(StudentTask):
    """Computes the loss parts of one batch: ``{"loss", <term>..., "logits"}``."""

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None = None):
        super().__init__()
        if objective.needs_teacher and teacher is None:
            raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
        self.student = student
        self.objective = objective
        self.set_teacher(teacher)
        layers = objective.student_layers
        self._tap = FeatureTap(student, layers, role="student") if layers else None

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if self._tap is not None:
            self._tap.clear()
        logits = self.student(batch.x)
        student = Outputs(logits, dict(self._tap.features) if self._tap is not None else {})
        parts = self.objective(student, self.teacher_outputs(batch), batch)
        parts["logits"] = logits
        return parts

    def close(self) -> None:
        if self._tap is not None:
            self._tap.remove()


@SCHEMES.register("offline", kind="offline", paper="Hinton et al. 2015; Furlanello et al. 2018 (Born-Again Networks)",
                  summary="a frozen teacher, a student trained from scratch through the objective")
def offline(student: nn.Module, objective: Objective, teacher: Any | None, **_: Any) -> DistillTask:
    """The default scheme: offline distillation from a frozen teacher (or from labels for generation 0)."""
    return DistillTask(student, objective, teacher)
