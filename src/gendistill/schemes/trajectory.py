"""Route Constrained Optimization (Jin et al. 2019): the teacher's training trajectory as a curriculum."""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from ..engine.task import DistillTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from ..teachers import FrozenTeacher, freeze
from .spec import SchemeContext, scheme


class RouteTask(DistillTask):
    """Route Constrained Optimization, RCO (Jin, Peng, Wu, Liu, Wang & Yan 2019, arXiv:1904.09149).

    Anchor teachers ``a_1..a_n`` are checkpoints taken along the teacher's own training (the last anchor is
    the converged teacher). The student follows them in order with the "equal epoch interval" strategy:
    during epoch ``t`` of ``E`` it distils, through the objective, from anchor

    ``k(t) = min(n, floor((t - 1) n / E) + 1)``

    so an easy, early teacher comes first and the final teacher last. The part ``anchor`` logs the training
    epoch of the anchor in use (``train.epochs`` for the converged teacher).
    """

    def __init__(self, student: nn.Module, objective: Objective, anchors: list[tuple[int, nn.Module]]):
        if not anchors:
            raise ConfigError("rco needs at least one anchor teacher")
        layers = tuple(objective.teacher_layers)
        super().__init__(student, objective, FrozenTeacher(anchors[0][1], layers))
        self.anchors, self.stage, self._layers = anchors, 0, layers

    def teacher_models(self) -> list[nn.Module]:
        return [m for _, m in self.anchors]

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        stage = min(len(self.anchors) - 1, (epoch - 1) * len(self.anchors) // total_epochs)
        if stage != self.stage:
            self.teacher.close()
            object.__setattr__(self, "teacher", FrozenTeacher(self.anchors[stage][1], self._layers))
            self.stage = stage

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        parts = super().forward(batch)
        parts["anchor"] = parts["loss"].new_tensor(float(self.anchors[self.stage][0]))
        return parts

    def close(self) -> None:
        super().close()
        self.teacher.close()


def _check_rco(train: Any, generations: int, anchors: list[int] | None = None, **_: Any) -> None:
    """Up-front check (before generation 0 trains): the trajectory rco needs will be saved."""
    epochs, snaps = train.epochs, sorted(train.snapshot_epochs)
    if generations >= 1 and not snaps:
        raise ConfigError(f"rco needs a teacher trajectory: set train.snapshot_epochs to epochs within training "
                          f"(1..{epochs}), e.g. {sorted({max(1, epochs // 3), max(1, 2 * epochs // 3)})}")
    bad = [e for e in snaps if not 1 <= e <= epochs]
    if bad:
        raise ConfigError(f"rco: train.snapshot_epochs {bad} lie outside training (1..{epochs}); pick epochs "
                          f"within train.epochs={epochs}")
    missing = [e for e in (anchors or []) if e not in snaps]
    if missing:
        raise ConfigError(f"rco: anchors {missing} are not in train.snapshot_epochs {snaps}; pick anchors among them")


@scheme("rco", kind="trajectory", check=_check_rco,
        paper="Jin et al. 2019, Knowledge Distillation via Route Constrained Optimization (arXiv:1904.09149)",
        summary="the teacher's training checkpoints, in order, as a curriculum of anchor teachers")
def rco(ctx: SchemeContext, anchors: list[int] | None = None) -> RouteTask:
    """RCO from the previous generation's trajectory. The lineage hook: with ``train.snapshot_epochs``
    (e.g. ``[3, 6, 10]``) the trainer saves the evaluated model after those epochs, to
    ``<gen dir>/snapshots/epoch<e>.safetensors`` and in memory; the lineage hands each generation's snapshots
    to the scheme as ``trajectories`` (read back from disk when a finished generation is resumed). ``anchors``
    picks some of the snapshot epochs (default: all); the converged teacher is always the last anchor."""
    previous, train, trajectories = ctx.previous, ctx.train, ctx.trajectories
    g = len(previous) - 1
    snaps = trajectories[g] if len(trajectories) > g else {}
    if not snaps:
        now = f" (now {list(train.snapshot_epochs)} with train.epochs={train.epochs})" if train is not None else ""
        raise ConfigError(
            f"rco needs generation {g}'s training trajectory: set train.snapshot_epochs{now} to epochs within "
            f"training, e.g. [3, 6, 10], and train generation {g} in this run (a given gen0_checkpoint has none)"
        )
    epochs = sorted(snaps) if anchors is None else list(anchors)
    missing = [e for e in epochs if e not in snaps]
    if missing:
        raise ConfigError(f"rco: anchors {missing} were not saved; saved epochs: {sorted(snaps)}")
    final = previous[g]
    models = []
    for e in epochs:
        m = copy.deepcopy(final)
        m.load_state_dict(snaps[e])
        models.append((e, freeze(m)))
    return RouteTask(ctx.student, ctx.objective, models + [(train.epochs, final)])
