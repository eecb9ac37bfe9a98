"""Offline distillation: a trainable student learns from a frozen teacher through an objective."""

from __future__ import annotations

from ..engine.task import DistillTask
from .spec import SchemeContext, scheme


@scheme("offline", kind="offline", cacheable=True,
        paper="Hinton et al. 2015; Furlanello et al. 2018 (Born-Again Networks)",
        summary="a frozen teacher, a student trained from scratch through the objective")
def offline(ctx: SchemeContext) -> DistillTask:
    """The default scheme: offline distillation from a frozen teacher (or from labels for generation 0)."""
    return DistillTask(ctx.student, ctx.objective, ctx.teacher)
