"""Who teaches generation k: the one place that answers it.

A lineage's ``generations.teacher`` rule names the teachers of every generation k >= 1:

* ``previous``: generation k-1 (Born-Again Networks, Furlanello et al. 2018);
* ``ensemble``: generations 0..k-1, their probabilities averaged;
* ``original``: generation 0 every time (the control).

A scheme may name its generations' teachers itself (``SchemeSpec.teachers``, e.g. ``multi_teacher``'s pool);
then that list wins and the scheme builds its teachers from them. A scheme may also be taught from outside the
lineage (``SchemeSpec.outside``, e.g. BAM's single-task teacher files): then those teachers are named and
measured against instead. :class:`Teaching` is the answer for one
generation, used alike by config validation, the engine (which teacher is built, cached and probed), and the
tables (how the teacher is named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

RuleName = Literal["previous", "ensemble", "original"]
TEACHER_RULES: tuple[str, ...] = get_args(RuleName)


@dataclass(frozen=True)
class Teaching:
    """The teachers of one generation: ``teachers`` (generation numbers; empty: labels only), whether the
    scheme named them (``by_scheme``: the scheme builds them itself), the name the tables print, and
    ``outside``: teachers from outside the lineage that the scheme loads itself (a
    :class:`~gendistill.schemes.spec.OutsideTeachers`; then ``teachers`` is empty)."""

    gen: int
    teachers: tuple[int, ...]
    by_scheme: bool
    label: str | None
    outside: Any = None


@dataclass(frozen=True)
class TeacherRule:
    """A lineage's teacher rule (``previous`` | ``ensemble`` | ``original``)."""

    name: str = "previous"

    def __post_init__(self) -> None:
        if self.name not in TEACHER_RULES:
            from .errors import ConfigError

            raise ConfigError(f"teacher rule {self.name!r} is unknown; allowed: {', '.join(TEACHER_RULES)}")

    def teachers(self, gen: int) -> tuple[int, ...]:
        """Generations whose (mean) probabilities teach generation ``gen``; none for generation 0."""
        if gen == 0:
            return ()
        if self.name == "previous":
            return (gen - 1,)
        if self.name == "original":
            return (0,)
        return tuple(range(gen))

    def teaching(self, gen: int, scheme_teachers: list[int] | tuple[int, ...] | None = None) -> Teaching:
        """Generation ``gen``'s :class:`Teaching`: the scheme's list when it gives one, else the rule's."""
        if gen == 0:
            return Teaching(0, (), scheme_teachers is not None, None)
        if scheme_teachers is not None:
            chosen = tuple(scheme_teachers)
            return Teaching(gen, chosen, True, _list_label(chosen))
        chosen = self.teachers(gen)
        if len(chosen) == 1:
            return Teaching(gen, chosen, False, f"gen{chosen[0]}")
        return Teaching(gen, chosen, False, f"ensemble(gen0..gen{gen - 1})")


def _list_label(chosen: tuple[int, ...]) -> str:
    if not chosen:
        return "labels"
    if len(chosen) == 1:
        return f"gen{chosen[0]}"
    return "ensemble(" + ",".join(f"gen{g}" for g in chosen) + ")"
