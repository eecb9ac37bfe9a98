"""The typed contract between a scheme and the lineage.

A scheme is declared next to its code with :func:`scheme`::

    @scheme("dml", kind="online", trains_gen0=True, cacheable=True, paper="...", summary="...")
    def dml(ctx: SchemeContext, peers: int = 2, weight: float = 1.0) -> MutualLearning:
        ...

The decorated function builds the generation's :class:`~gendistill.engine.task.Task` from a
:class:`SchemeContext` and the scheme's options (its keyword arguments, which the config validates by name
and type). The lineage reads only the :class:`SchemeSpec`; no scheme is special-cased by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..data import DatasetBundle
from ..engine.settings import TrainConfig
from ..engine.task import Task
from ..errors import ConfigError
from ..knowledge.base import Objective
from ..registry import SCHEMES


@dataclass
class SchemeContext:
    """What the lineage hands a scheme when it builds generation ``gen``'s task.

    Attributes:
        student: the generation's fresh, seeded network (its architecture from ``generations.archs``).
        objective: a fresh copy of the lineage's objective (generation 0: the label objective).
        teacher: the lineage's teacher for this generation (frozen, ensemble or cached outputs), or ``None``:
            at generation 0, and when the scheme names its own teachers (:attr:`SchemeSpec.teachers`).
        gen: the generation number.
        teachers: the generations that teach this one (see :mod:`gendistill.teaching`).
        previous: the frozen models of generations ``0..gen-1``.
        data: the dataset bundle.
        train: the training settings.
        trajectories: per earlier generation, ``{epoch: state_dict}`` of its saved snapshots.
    """

    student: nn.Module
    objective: Objective
    teacher: Any | None
    gen: int
    teachers: tuple[int, ...]
    previous: list[nn.Module]
    data: DatasetBundle
    train: TrainConfig
    trajectories: list[dict[int, dict[str, Tensor]]] = field(default_factory=list)


@dataclass(frozen=True)
class OutsideTeachers:
    """Teachers a scheme loads itself from outside the lineage (BAM's single-task teacher files): ``label``, how
    the tables name them, and ``build(data)``, one frozen model whose predictions are theirs (each generation's
    fidelity figures, ``agreement_teacher`` and ``kl_teacher``, are measured against it)."""

    label: str
    build: Callable[[DatasetBundle], nn.Module]


@dataclass(frozen=True)
class SchemeSpec:
    """How the lineage runs a scheme.

    Attributes:
        name, kind, paper, summary: what ``gendistill list schemes`` shows.
        build: ``build(ctx, **options) -> Task`` for one generation.
        trains_gen0: the scheme trains generation 0 too (online, self-distillation, pseudo-labels); otherwise
            generation 0 is trained from labels with the plain task.
        cacheable: the task reads the lineage's teacher only on training inputs, in order of ``batch.index``,
            so a fixed teacher may be replaced by its cached outputs.
        teachers: ``teachers(gen, **options) -> [generations]`` when the scheme names each generation's
            teachers itself (and builds them from ``ctx.previous``); ``None``: the lineage's rule.
        archs: ``archs(student_spec, generations, **options) -> {gen: model spec}``: per-generation
            architectures the scheme implies (``generations.archs`` given by the user win).
        check: ``check(train, generations, **options)``: option checks that can run before generation 0.
        outside: ``outside(gen, data, **options) -> OutsideTeachers | None`` when generation ``gen`` (>= 1) is
            taught by models from outside the lineage that the scheme loads itself (``data`` may be ``None``
            when only the label is needed); ``None``: its teachers are generations.
    """

    name: str
    build: Callable[..., Task]
    kind: str
    paper: str
    summary: str
    trains_gen0: bool = False
    cacheable: bool = False
    teachers: Callable[..., list[int]] | None = None
    archs: Callable[..., dict[int, Any]] | None = None
    check: Callable[..., None] | None = None
    outside: Callable[..., OutsideTeachers | None] | None = None

    def create(self, ctx: SchemeContext, options: dict[str, Any]) -> Task:
        task = self.build(ctx, **options)
        if not isinstance(task, Task):
            raise TypeError(f"scheme {self.name!r} built a {type(task).__name__}, not a gendistill Task")
        return task

    def teachers_of(self, gen: int, options: dict[str, Any]) -> list[int] | None:
        return None if self.teachers is None else list(self.teachers(gen, **options))

    def outside_of(self, gen: int, data: DatasetBundle | None, options: dict[str, Any]) -> OutsideTeachers | None:
        return None if self.outside is None or gen == 0 else self.outside(gen, data, **options)


def scheme(name: str, *, kind: str, paper: str, summary: str, trains_gen0: bool = False, cacheable: bool = False,
           teachers: Callable[..., list[int]] | None = None, archs: Callable[..., dict[int, Any]] | None = None,
           check: Callable[..., None] | None = None,
           outside: Callable[..., OutsideTeachers | None] | None = None) -> Callable:
    """Register the decorated ``build(ctx, **options)`` function as scheme ``name`` (see :class:`SchemeSpec`)."""

    def decorator(build: Callable[..., Task]) -> Callable[..., Task]:
        spec = SchemeSpec(name, build, kind, paper, summary, trains_gen0, cacheable, teachers, archs, check, outside)
        SCHEMES.register(name, spec=spec, kind=kind, paper=paper, summary=summary)(build)
        return build

    return decorator


def scheme_spec(name: str) -> SchemeSpec:
    """The :class:`SchemeSpec` of a registered scheme (a one-line ConfigError for an unknown name)."""
    spec = SCHEMES.get(name).meta.get("spec")
    if spec is None:  # pragma: no cover - every scheme registers through @scheme
        raise ConfigError(f"scheme {name!r} was registered without a SchemeSpec")
    return spec


def build_task(name: str, *, student: nn.Module, objective: Objective, data: DatasetBundle, teacher: Any | None = None,
               gen: int = 0, previous: list[nn.Module] | tuple[nn.Module, ...] = (), train: TrainConfig | None = None,
               teachers: list[int] | None = None, trajectories: list[dict[int, dict[str, Tensor]]] | None = None,
               **options: Any) -> Task:
    """Build scheme ``name``'s task by hand (outside a lineage), e.g. to run it with a
    :class:`~gendistill.engine.Trainer` directly. ``teachers`` defaults to the generations the scheme names,
    else the previous one."""
    spec = scheme_spec(name)
    if teachers is None:
        teachers = spec.teachers_of(gen, options)
        teachers = teachers if teachers is not None else ([gen - 1] if gen > 0 else [])
    ctx = SchemeContext(student, objective, teacher, gen, tuple(teachers), list(previous), data,
                        train if train is not None else TrainConfig(), list(trajectories or []))
    return spec.create(ctx, options)
