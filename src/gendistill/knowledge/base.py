"""The contract between models, teachers, knowledge terms and the trainer.

A *knowledge term* is a small ``nn.Module`` that receives the student's :class:`Outputs`, the teacher's
:class:`Outputs` (``None`` for terms that need no teacher) and the :class:`Batch`, and returns a scalar loss.
Terms that need intermediate features list the layer names in ``student_layers`` / ``teacher_layers``; the
trainer taps those submodules with forward hooks (see :mod:`gendistill.knowledge.taps`) and fills
``Outputs.features`` under the same names. Terms may own learned parameters (adapters, regressors, memory
banks); they are trained with the student and dropped when the student is exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class Outputs:
    """What a network produced for a batch: logits and any tapped features, keyed by layer name."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)

    def feature(self, name: str) -> Tensor:
        try:
            return self.features[name]
        except KeyError:
            raise KeyError(
                f"feature {name!r} was not tapped; tapped: {sorted(self.features)}"
            ) from None


@dataclass
class Batch:
    """One training batch. ``index`` holds the samples' positions in the training set (for memory banks
    and output caches); ``None`` when the data source cannot provide them. ``view`` and ``mix`` are set
    when the inputs were augmented (see :mod:`gendistill.data.augment`)."""

    x: Tensor
    y: Tensor
    index: Tensor | None = None
    view: Tensor | None = None  # recorded augmentation view per sample (replayed teacher caches)
    mix: tuple[Tensor, Tensor] | None = None  # mixup: (partner labels, lambda) per sample

    def __len__(self) -> int:
        """The number of items (weights the batch's loss parts in the epoch means)."""
        return len(self.y)


class KnowledgeTerm(nn.Module):
    """Base class of a loss term. Subclasses set ``name`` and implement :meth:`forward`.

    Attributes:
        name: key of this term in the loss dict (``"kd"``, ``"ce"``, ``"rkd"`` ...).
        needs_teacher: ``False`` for terms computed from the student and labels alone.
        student_layers / teacher_layers: submodule names whose outputs the term reads from ``features``.
    """

    name: str = "term"
    needs_teacher: bool = True
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    # "two_stage": the term alone trains the first stage1_epochs(E) epochs, and drops out after (FSP, FitNets);
    # "pretrain": the term alone trains the first stage1_epochs(E) epochs, then every term with it (MHGD's
    # attention network); see Objective.on_epoch_start
    procedure: str = "joint"
    stage: int | None = None  # set by Objective.on_epoch_start: 1 or 2 while staged, else None

    def stage1_epochs(self, epochs: int) -> int:
        """Epochs of the first stage of a two-stage term, given the run's epochs. Default: none."""
        return 0

    def setup(self, *, num_train: int, num_classes: int) -> None:
        """Called once by the trainer before training (e.g. to size a memory bank). Default: nothing."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class Objective(nn.Module):
    """A weighted sum of knowledge terms: ``loss = sum_i w_i * term_i``.

    ``forward`` returns ``{"loss": total, <term name>: unweighted value, ...}``; the trainer logs every entry.
    Two terms with the same name get suffixes ``_1``, ``_2`` in the dict.

    Two-stage terms (``procedure == "two_stage"``: FSP by default, FitNets as an option) split the run: once
    the task forwards ``on_epoch_start``, the first ``max_i stage1_epochs(E)`` epochs train on those terms
    alone (the others are computed and logged with weight 0), and the remaining epochs on the other terms
    alone (the two-stage terms are logged, not trained on). Pre-training terms (``procedure == "pretrain"``:
    MHGD) take part in stage 1 alone like the two-stage ones and stay in stage 2 with the other terms; each
    term's ``stage`` attribute says which stage runs, so it can compute that stage's loss. Without
    ``on_epoch_start`` (a scheme that does not forward it) every term is joint (``stage`` stays ``None``).
    """

    def __init__(self, terms: list[tuple[KnowledgeTerm, float]]):
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one term")
        self.terms = nn.ModuleList([t for t, _ in terms])
        self.weights = [float(w) for _, w in terms]
        names: list[str] = []
        for t in self.terms:
            base, k = t.name, 1
            name = base
            while name in names:
                name = f"{base}_{k}"
                k += 1
            names.append(name)
        self.names = names
        self.stage: int | None = None  # 1 or 2 while a two-stage term is scheduled, else None (joint)
        self.teacher_scale = 1.0  # multiplies the weights of terms that read a teacher (train.kd_warmup_epochs)
        first = [t for t, w in zip(self.terms, self.weights) if t.procedure in ("two_stage", "pretrain")]
        if first and all(w == 0.0 for t, w in zip(self.terms, self.weights) if t in first):
            raise ValueError(
                f"{first[0].name} trains alone in its first stage (procedure: two_stage), so its weight must be "
                "> 0; give it a weight, or procedure: joint to log it without training on it"
            )
        staged = [t for t in self.terms if t.procedure == "two_stage"]
        if staged and len(staged) == len(self.terms):
            raise ValueError(
                f"{staged[0].name} runs two stages (procedure: two_stage): the objective needs another term "
                "(e.g. ce) to train the second stage; or give the term procedure: joint"
            )

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Set the stage for epoch ``epoch`` (1-based) of ``epochs`` when a term runs two stages."""
        first = max((t.stage1_epochs(epochs) for t in self.terms if t.procedure in ("two_stage", "pretrain")),
                    default=0)
        self.stage = None if first == 0 else (1 if epoch <= first else 2)
        for t in self.terms:
            t.stage = self.stage

    def _weight(self, term: KnowledgeTerm, w: float) -> float:
        if self.stage is None or (term.procedure == "pretrain" and self.stage == 2):
            return w
        staged = term.procedure in ("two_stage", "pretrain")
        return w if staged == (self.stage == 1) else 0.0

    @property
    def needs_teacher(self) -> bool:
        return any(t.needs_teacher for t in self.terms)

    @property
    def student_layers(self) -> list[str]:
        return sorted({n for t in self.terms for n in t.student_layers})

    @property
    def teacher_layers(self) -> list[str]:
        return sorted({n for t in self.terms for n in t.teacher_layers})

    def setup(self, *, num_train: int, num_classes: int) -> None:
        for t in self.terms:
            t.setup(num_train=num_train, num_classes=num_classes)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        total = None
        for name, term, w in zip(self.names, self.terms, self.weights):
            if term.needs_teacher and teacher is None:
                raise RuntimeError(f"term {name!r} needs a teacher but none was given")
            w = self._weight(term, w)
            value = term(student, teacher, batch)
            parts[name] = value
            if term.needs_teacher and self.teacher_scale != 1.0:
                w = w * self.teacher_scale
            if w != 0.0:
                weighted = value if w == 1.0 else w * value  # 1.0 * x == x exactly: one op less each way
                total = weighted if total is None else total + weighted
        if total is None:
            total = torch.zeros((), device=student.logits.device)
        return {"loss": total, **parts}

    def describe(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights))


def set_teacher_scale(module: nn.Module, scale: float) -> None:
    """Scale the teacher terms of every :class:`Objective` inside ``module`` (DKD's linear warm-up)."""
    for m in module.modules():
        if isinstance(m, Objective):
            m.teacher_scale = float(scale)
