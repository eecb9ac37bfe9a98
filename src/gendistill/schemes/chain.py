"""Teacher-assistant chains (TAKD, Mirzadeh et al. 2020) as a lineage preset that sizes the assistants."""

from __future__ import annotations

from typing import Any

from ..engine.task import DistillTask
from ..errors import ConfigError
from .spec import SchemeContext, scheme


def assistant_widths(teacher_width: int, student_width: int, steps: int) -> list[int]:
    """Widths of generations ``0..steps``: geometric interpolation from the teacher to the student,
    ``w_g = round(w_t^(1 - g/steps) * w_s^(g/steps))``. One assistant (``steps = 2``) gets
    ``sqrt(w_t * w_s)``, the geometric mean: with parameters growing as ``width^2`` it halves the gap in
    log-size on either side."""
    if teacher_width < 1 or student_width < 1:
        raise ConfigError(f"takd: widths must be >= 1, got teacher {teacher_width}, student {student_width}")
    if steps < 1:
        raise ConfigError("takd needs generations.count >= 1 (the student); 2 or more for an assistant")
    return [max(1, round(teacher_width ** (1 - g / steps) * student_width ** (g / steps))) for g in range(steps + 1)]


def ta_chain(student: Any, generations: int, student_width: int | None = None, width_key: str = "width",
             **_: Any) -> dict[int, Any]:
    """The lineage preset: per-generation architectures for a teacher -> assistant(s) -> student chain.
    ``student`` (the lineage's model, a ``{name, width}`` spec) is the teacher, generation 0; the last
    generation gets ``student_width``; those between are assistants sized by :func:`assistant_widths`."""
    if student_width is None:
        raise ConfigError("takd needs student_width, the width of the final student")
    if not isinstance(student, dict) or width_key not in student:
        raise ConfigError(f"takd sizes registry models: give the model as {{name: ..., {width_key}: ...}} "
                          "(the teacher's width), e.g. model: {name: cnn1d, width: 64}")
    widths = assistant_widths(int(student[width_key]), int(student_width), generations)
    return {g: {**student, width_key: w} for g, w in enumerate(widths) if g > 0}


@scheme("takd", kind="chain", archs=ta_chain, cacheable=True,
        paper="Mirzadeh et al. 2020, Improved Knowledge Distillation via Teacher Assistant (arXiv:1902.03393)",
        summary="teacher -> assistant(s) -> student, assistant widths the geometric interpolation")
def takd(ctx: SchemeContext, student_width: int | None = None, width_key: str = "width") -> DistillTask:
    """TAKD: with ``generations.count = n`` the lineage is teacher (gen 0, the configured model), ``n - 1``
    assistants and the student (gen n, width ``student_width``); every generation distils offline from its
    teacher (``generations.teacher: previous`` makes the chain). The widths come from the registry entry's
    ``archs`` preset, :func:`ta_chain`, applied by the lineage before any training; ``generations.archs``
    entries given by hand win over it."""
    return DistillTask(ctx.student, ctx.objective, ctx.teacher)
