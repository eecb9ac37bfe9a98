"""Domains: what a kind of data (classification, sequences, policies) supplies to the one engine.

The lineage and the trainer never ask ``if domain == ...``: everything that depends on what an item is goes
through a :class:`Domain`. A dataset bundle names its domain (``bundle.domain``); :func:`domain_for` returns
the registered implementation. Classification (:mod:`.classification`) and sequences (:mod:`.sequence`, built
on :mod:`gendistill.nlp`) are built in; the policy domain registers itself from :mod:`gendistill.rl`.

A domain supplies, behind this one interface:

* **models**: how a model spec is built for the data, and the pre-run check (one dummy batch);
* **batches**: the training :class:`~gendistill.engine.trainer.BatchSource` (in-memory tensors, a
  ``DataLoader``, a rollout collector ...) and the default task;
* **evaluation**: ``predict`` (per-item outputs on a split: what fidelity and ensembles compare) and the task
  ``metrics`` computed from them (and from the model, for metrics that need decoding or rollouts);
* **fidelity**: ``agreement`` and ``kl`` (KL(teacher || student)) between two predictions, in every domain;
* **ensembles**: the mean of the members' probabilities, in the domain's output space;
* **the teacher**: how a frozen teacher (or an ensemble of generations) is run, and what its cache stores.

See docs/design.md, "Adding a domain", for a worked example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..compression import model_figures
from ..engine.settings import TrainConfig
from ..engine.task import Task
from ..engine.trainer import BatchSource
from ..errors import ConfigError
from ..knowledge.base import Objective
from ..registry import DOMAINS


class Domain(ABC):
    """The interface a kind of data implements (see the module docstring)."""

    name: ClassVar[str]
    #: metrics also reported on the training split (``train_<key>`` in the tables)
    train_keys: ClassVar[tuple[str, ...]] = ()
    #: per-epoch history columns from :meth:`epoch_metrics` (shown in the progress line)
    epoch_keys: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------------------ models
    @abstractmethod
    def build_model(self, spec: Any, data: Any) -> nn.Module:
        """A fresh model for ``data`` from a registry name, ``{name, **options}``, a module or a factory."""

    @abstractmethod
    def check_model(self, spec: Any, data: Any, where: str) -> nn.Module:
        """Build ``spec`` and run one dummy batch on the CPU; a one-line ConfigError naming ``where`` and the
        fix when the model does not fit the data. Returns the model."""

    @abstractmethod
    def check_teacher(self, teacher: nn.Module, data: Any) -> None:
        """A given teacher module fits the data (its outputs have the data's shape); one-line ConfigError."""

    # ------------------------------------------------------------------------------------------ training
    @abstractmethod
    def train_source(self, data: Any, train: TrainConfig, *, seed: int, device: Any, views: int) -> BatchSource:
        """The training batches of one generation, on ``device``, in an order drawn from ``seed``. ``views``
        > 0 asks for that many recorded augmented views per item (their teacher outputs will be cached)."""

    @abstractmethod
    def default_task(self, student: nn.Module, objective: Objective, teacher: Any | None) -> Task:
        """The plain task: the student trained through the objective (from labels at generation 0)."""

    def label_objective(self, objective: Objective) -> Objective:
        """Generation 0's objective as configured (override to adapt label terms)."""
        return objective

    # ------------------------------------------------------------------------------------------ evaluation
    @abstractmethod
    def predict(self, model: nn.Module, split: Any) -> Tensor:
        """``model``'s outputs on ``split``, per item, on the CPU: what fidelity and ensembles compare."""

    @abstractmethod
    def metrics(self, model: nn.Module | None, pred: Tensor, split: Any) -> dict[str, float]:
        """Task metrics (keys without a split prefix) from ``pred`` (and ``model``, when a metric needs it;
        ``None`` for an ensemble of generations, whose metrics come from ``pred`` alone)."""

    @abstractmethod
    def epoch_metrics(self, model: nn.Module, split: Any) -> dict[str, float]:
        """Cheap figures for the per-epoch history (``test_acc``, ``test_nll`` ...)."""

    @abstractmethod
    def fidelity(self, teacher_pred: Tensor, student_pred: Tensor) -> dict[str, float]:
        """At least ``agreement`` and ``kl`` (KL(teacher || student)), averaged over items."""

    @abstractmethod
    def ensemble(self, preds: Sequence[Tensor]) -> Tensor:
        """The prediction of the mean-probability ensemble of ``preds``."""

    def groups(self, split: Any) -> dict[str, tuple[Any, Tensor]]:
        """Named groups of a split's items whose figures are also reported apart (``per_task`` in each
        generation's record): the tasks of a multi-task dataset, as ``{name: (sub-split, item indices)}``.
        Predictions are per item, so ``pred[indices]`` is the group's. Default: none."""
        return {}

    def compression(self, model: nn.Module, data: Any, *, checkpoint: Path | None, speed: bool,
                    device: Any) -> dict[str, Any]:
        """The generation record's compression figures (:mod:`gendistill.compression`). Default: ``params`` and
        ``checkpoint_bytes`` only; domains whose inputs are float tensors of ``data.input_shape`` add MACs and,
        with ``speed``, latency and throughput."""
        return model_figures(model, None, checkpoint=checkpoint)

    def analyses(self, models: list[nn.Module], test_preds: list[Tensor], data: Any) -> dict[str, Any]:
        """Extra analyses of a finished lineage, written as ``analysis/<name>.json``. Default: none."""
        return {}

    # ------------------------------------------------------------------------------------------ teachers
    @abstractmethod
    def teacher(self, models: list[nn.Module], layers: tuple[str, ...]) -> Any:
        """A frozen teacher object from one model or an ensemble of several (tapping ``layers``)."""

    def cache_teacher(self, teacher: Any, source: BatchSource, data: Any, train: TrainConfig, *,
                      layers: tuple[str, ...], train_pred: Tensor | None, path: Path | None) -> Any | None:
        """The teacher's outputs over the training items, computed once and replayed (or ``None`` when this
        domain cannot cache this teacher exactly). ``train_pred`` is the teacher's :meth:`predict` on the
        training split when the lineage already has it. Default: no cache."""
        return None


def build_checked(domain: Domain, spec: Any, data: Any, where: str) -> nn.Module:
    """``domain.build_model(spec, data)`` without moving the caller's RNG stream (building draws initial
    weights), its ConfigError prefixed with ``where``; then ``domain.check_teacher(model, data, role=where)``.
    The ``check_model`` of domains whose ``check_teacher`` names the role it checks."""
    with torch.random.fork_rng(devices=[]):
        try:
            model = domain.build_model(spec, data)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    domain.check_teacher(model, data, role=where)
    return model


def domain_for(data: Any) -> Domain:
    """The :class:`Domain` a dataset bundle names (``bundle.domain``, default ``classification``)."""
    name = getattr(data, "domain", "classification")
    return DOMAINS.create(name)


from . import classification, sequence, sequence_classification  # noqa: E402,F401  (register the built-in domains)

__all__ = ["Domain", "domain_for"]
