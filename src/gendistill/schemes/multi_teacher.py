"""Multi-teacher distillation: a student learns from several frozen teachers at once."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..engine.task import DistillTask, StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..teachers import FrozenTeacher
from .common import label_objective
from .spec import SchemeContext, scheme

RULES = ("mean", "weights", "random", "ensemble")


class MultiTeacherTask(StudentTask):
    """Each teacher term of the objective is combined over teachers ``t_1..t_M`` (Gou et al. 2021, Sec. 5.2):

    * ``mean``: ``term = (1/M) sum_m term(s, t_m)`` (You et al. 2017). For KD this has the same gradient as
      KD towards the mean of the teachers' softened probabilities, since ``sum_m w_m KL(p_m || q)`` and
      ``KL(sum_m w_m p_m || q)`` differ by a constant in ``q``; for feature terms it averages the losses.
    * ``weights``: ``term = sum_m w_m term(s, t_m)`` with fixed weights normalised to sum to 1.
    * ``random``: one teacher drawn uniformly per iteration, ``term = term(s, t_m)``, ``m ~ U{1..M}``
      (Fukuda et al. 2017), from the seeded global RNG, so runs and resumes are deterministic.
    * ``ensemble``: the terms read one *ensemble teacher*, gendistill's single definition of an ensemble
      (the lineage's ``generations.teacher: ensemble`` uses the same :class:`~gendistill.teachers.EnsembleTeacher`):
      the mean of the members' probabilities at temperature 1, as logits ``log mean_m softmax(z_m)``; a KD
      term at ``T`` then softens that mean, ``softmax(log(mean_m p_m) / T)``. ``mean`` instead averages the
      terms, which for KD is the mean of the *softened* probabilities, ``mean_m softmax(z_m / T)``: the two
      agree at ``T = 1`` and differ above it. Logit terms only (feature terms need one network).

    ``term_teachers`` sends named terms to one teacher each (``{kd: 0, fitnet: 2}``: the KD targets come from
    generation 0, the hints from generation 2), whatever the rule. Label terms read no teacher. The part
    ``teacher`` logs the mean index of the teacher drawn by ``random``.
    """

    def __init__(self, student: nn.Module, objective: Objective, teachers: list[nn.Module], rule: str = "mean",
                 weights: list[float] | None = None, term_teachers: dict[str, int] | None = None):
        super().__init__()
        if rule not in RULES:
            raise ConfigError(f"multi_teacher: rule {rule!r} is unknown; allowed: {', '.join(RULES)}")
        m = len(teachers)
        if rule == "weights":
            if weights is None or len(weights) != m or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ConfigError(f"multi_teacher: rule 'weights' needs {m} non-negative weights (one per teacher), "
                                  f"got {weights}")
            s = float(sum(weights))
            self.mix = [float(w) / s for w in weights]
        else:
            self.mix = [1.0 / m] * m
        term_teachers = dict(term_teachers or {})
        for name, idx in term_teachers.items():
            if name not in objective.names:
                raise ConfigError(f"multi_teacher: term_teachers names {name!r}, not a term of the objective "
                                  f"({', '.join(objective.names)})")
            if not 0 <= idx < m:
                raise ConfigError(f"multi_teacher: term_teachers[{name!r}] = {idx} is not a teacher index (0..{m - 1})")
        self.objective, self.rule = objective, rule
        if rule == "ensemble":
            from ..teachers import EnsembleTeacher

            feature_terms = [n for n, t in zip(objective.names, objective.terms) if t.teacher_layers]
            if feature_terms:
                raise ConfigError(f"multi_teacher: rule 'ensemble' reads one ensemble of logits; the feature terms "
                                  f"{feature_terms} need one network each (use rule: mean or term_teachers)")
            object.__setattr__(self, "ensemble", EnsembleTeacher(teachers))
        self.set_student(student, objective.student_layers)
        self.term_teachers = term_teachers
        layers: list[set[str]] = [set() for _ in teachers]
        for name, term in zip(objective.names, objective.terms):
            for i in ([term_teachers[name]] if name in term_teachers else range(m)):
                layers[i] |= set(term.teacher_layers)
        object.__setattr__(self, "teachers", [FrozenTeacher(t, tuple(sorted(ls))) for t, ls in zip(teachers, layers)])

    def teacher_models(self) -> list[nn.Module]:
        return [t.model for t in self.teachers]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        student = self.run_student(batch.x)
        logits = student.logits
        m = len(self.teachers)
        drawn = int(torch.randint(m, ())) if self.rule == "random" else None
        needed = {drawn} if drawn is not None else (set() if self.rule == "ensemble" else set(range(m)))
        needed |= set(self.term_teachers.values())
        if not any(t.needs_teacher for t in self.objective.terms):
            needed = set()
        outs: dict[int, Outputs] = {i: self.teachers[i](batch.x, batch.index) for i in sorted(needed)}
        ensemble = self.ensemble(batch.x) if self.rule == "ensemble" and self.objective.needs_teacher else None
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=logits.device)
        for name, term, w in zip(self.objective.names, self.objective.terms, self.objective.weights):
            if not term.needs_teacher:
                value = term(student, None, batch)
            elif name in self.term_teachers:
                value = term(student, outs[self.term_teachers[name]], batch)
            elif drawn is not None:
                value = term(student, outs[drawn], batch)
            elif ensemble is not None:
                value = term(student, ensemble, batch)
            else:
                value = sum(mix * term(student, outs[i], batch) for i, mix in enumerate(self.mix) if mix > 0)
            parts[name] = value
            total = total + w * value
        if drawn is not None:
            parts["teacher"] = torch.tensor(float(drawn), device=logits.device)
        return {"loss": total, **parts, "logits": logits}

    def close(self) -> None:
        for t in self.teachers:
            t.close()
        super().close()


def _teachers(gen: int, pool: int = 1, teachers: list[int] | None = None, **_: Any) -> list[int]:
    """The generations generation ``gen`` learns from (``[]``: a pool member, trained from labels)."""
    if gen < pool:
        return []
    return list(range(gen)) if teachers is None else list(teachers)


@scheme("multi_teacher", kind="multi-teacher", trains_gen0=True, teachers=_teachers,
        paper="Gou et al. 2021 (survey, Sec. 5.2); You et al. 2017, Learning from Multiple Teacher "
              "Networks; Fukuda et al. 2017, Efficient Knowledge Distillation from an Ensemble of Teachers",
        summary="several frozen teachers: mean, fixed weights, a random one per step, or one per term")
def multi_teacher(ctx: SchemeContext, pool: int = 1, teachers: list[int] | None = None, rule: str = "mean",
                  weights: list[float] | None = None, term_teachers: dict[str, int] | None = None) -> StudentTask:
    """Generations ``0..pool-1`` are the teacher pool, trained from labels only (the objective's label
    terms), each with its own architecture from ``generations.archs`` and its own seed. Every later
    generation learns from the generations listed in ``teachers`` (default: all earlier ones) by ``rule``
    (``mean`` | ``weights`` | ``random`` | ``ensemble``), with ``weights`` for ``rule=weights`` and
    ``term_teachers`` (``{term name: position in teachers}``) for per-term teachers. ``rule=ensemble`` is the
    lineage's ``teacher: ensemble`` (mean probability at T = 1, then softened by the term); ``rule=mean``
    averages the terms (for KD: the mean of the softened probabilities). The lineage's own teacher rule is
    not used by this scheme: tables name the teachers actually used, and ``agree(teacher)`` / ``KL(t||s)``
    compare with their mean-probability ensemble at T = 1 (the target of ``rule=ensemble``; of ``rule=mean``
    only when the KD temperature is 1)."""
    if pool < 1:
        raise ConfigError(f"multi_teacher: pool must be >= 1, got {pool}")
    gen, chosen = ctx.gen, list(ctx.teachers)
    if not chosen and gen < pool:
        return DistillTask(ctx.student, label_objective(ctx.objective), None)
    bad = [g for g in chosen if not 0 <= g < gen]
    if bad or not chosen:
        raise ConfigError(f"multi_teacher: generation {gen} can learn from generations 0..{gen - 1}, "
                          f"got teachers={teachers}")
    return MultiTeacherTask(ctx.student, ctx.objective, [ctx.previous[g] for g in chosen], rule, weights, term_teachers)
