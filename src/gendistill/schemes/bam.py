"""BAM! Born-Again Multi-task networks (Clark et al. 2019, arXiv:1907.04829): one multi-task student distilled
from single-task teachers, with *teacher annealing*.

For an item of task g, with teacher g's token distribution ``p_g`` and the gold token ``y`` at each position,
the student is trained on the mixed target

    L = - sum_v [lam * 1(v = y) + (1 - lam) * p_g(v)] log q(v)        (mean over real positions)

where ``lam`` (the weight on the gold labels) moves linearly from 0 in the first epoch to 1 in the last: the
student starts by imitating its teachers and ends on the gold labels (``anneal: false`` keeps ``lam = 0``).

``teachers``: safetensors files of the single-task teachers, one per task of the multi-task dataset, in its order
(``seq_multi``: train each with ``data.only: <task>``, which keeps the mixture's vocabulary and lengths); each
file's architecture is read from its metadata (``model_spec``, written by ``gendistill run``). Without
``teachers``, the lineage's teacher of the generation teaches every task (born-again multi-task generations).

With ``teachers``, the tables name them (``single-task teachers (reverse: <file>, ...)``, a run's
``.../gen0/model.safetensors`` shown as ``.../gen0``) and every
generation's fidelity (``agreement_teacher``, ``kl_teacher``; per task in ``per_task``) is measured against
each item's own task teacher (:class:`TaskRouter`), not against an earlier generation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import rundir
from ..engine.checkpoint import load_model
from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..models import build_model
from ..teachers import FrozenTeacher, freeze
from .spec import OutsideTeachers, SchemeContext, scheme


def teacher_distribution(out: Outputs) -> Tensor:
    """Token probabilities from the teacher's full logits (a top-k cache entry is refused: its targets would
    not be distributions over the vocabulary)."""
    if "topk_index" in out.features:
        raise ConfigError("bam needs the teacher's full distribution; set data.cache_topk: 0")
    return out.logits.float().softmax(-1)


class BAMTask(StudentTask):
    def __init__(self, student, objective: Objective, teachers: list, groups: Tensor | None, anneal: bool):
        super().__init__()
        self.set_student(student, ())
        self.objective = objective
        self.set_teacher(teachers[0] if len(teachers) == 1 else None)
        object.__setattr__(self, "teachers", teachers)
        self.register_buffer("groups", groups.clone() if groups is not None else torch.zeros(0, dtype=torch.long))
        self.anneal = anneal
        self.gold = 0.0

    def teacher_models(self) -> list:
        return [m for t in self.teachers for m in t.models]

    def to_device(self, device, memory_format=None) -> None:
        super().to_device(device, memory_format)
        for t in self.teachers:
            t.to(device)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.gold = (epoch - 1) / max(1, epochs - 1) if self.anneal else 0.0

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.run_student(batch.x).logits
        if len(self.teachers) == 1:
            p = teacher_distribution(self.teachers[0](batch.x, batch.index))
        else:
            g = self.groups[batch.index]
            p = torch.zeros_like(logits, dtype=torch.float32)
            for k, t in enumerate(self.teachers):
                rows = (g == k).nonzero().squeeze(1)
                if len(rows):
                    p[rows] = teacher_distribution(t(batch.x[rows], None))
        real = batch.y != -100
        gold = F.one_hot(batch.y.clamp_min(0), logits.shape[-1]).float()
        target = self.gold * gold + (1 - self.gold) * p
        loss = -(target[real] * logits[real].float().log_softmax(-1)).sum(-1).mean()
        return {"loss": loss, "bam": loss.detach(), "gold_weight": torch.tensor(self.gold, device=loss.device),
                "logits": logits}

    def close(self) -> None:
        super().close()
        for t in self.teachers:
            t.close()


class TaskRouter(nn.Module):
    """One model that answers every item with its own task's teacher: the task is read from the marker token
    opening the item's source (``data.group_of``); a row of no known task gets NaN (no figure counts it)."""

    def __init__(self, models: list[nn.Module], group_of) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(models)
        self.group_of = group_of
        self.src_len, self.tgt_len = models[0].src_len, models[0].tgt_len

    def forward(self, x: Tensor) -> Tensor:
        g = self.group_of(x)
        out = None
        for k, model in enumerate(self.teachers):
            rows = (g == k).nonzero().squeeze(1)
            if len(rows):
                logits = model(x[rows])
                if out is None:
                    out = logits.new_full((len(x), *logits.shape[1:]), float("nan"))
                out[rows] = logits
        if out is None:
            raise ConfigError("no item belongs to a task of the bam teachers (unknown task markers)")
        return out


def _load_teachers(paths: list[str], data) -> list[nn.Module]:
    names = getattr(data, "group_names", ())
    if getattr(data, "groups", None) is None or len(names) != len(paths):
        raise ConfigError(f"bam got {len(paths)} teachers but the dataset has {len(names) or 'no'} tasks "
                          f"({', '.join(names)}); give one teacher per task, in order, with a multi-task dataset")
    return [freeze(load_model(build_model(_spec_of(p), data.num_classes, data.input_shape), p, role="bam teacher"))
            for p in paths]


def _outside(gen: int, data, teachers: list[str] | None = None, anneal: bool = True) -> OutsideTeachers | None:
    """With ``teachers``: the single-task teacher files, named by their tasks, as one :class:`TaskRouter`."""
    if not teachers:
        return None
    names = list(getattr(data, "group_names", ()) or ())
    names = names if len(names) == len(teachers) else [f"task{k}" for k in range(len(teachers))]
    short = [p.removesuffix("/" + rundir.MODEL) for p in teachers]  # a run's gen<k>/model.safetensors: gen<k>
    label = "single-task teachers (" + ", ".join(f"{n}: {p}" for n, p in zip(names, short)) + ")"
    return OutsideTeachers(label, lambda d: freeze(TaskRouter(_load_teachers(teachers, d), d.group_of)))


def _spec_of(path: str) -> dict:
    from safetensors import safe_open

    if not Path(path).exists():
        raise ConfigError(f"bam teacher {path!r} does not exist; train each single-task teacher first")
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    spec = json.loads(meta.get("model_spec", "null"))
    if spec is None:
        raise ConfigError(f"bam teacher {path!r} has no model_spec in its metadata; give a model.safetensors written "
                          "by gendistill run")
    return spec


def _check(train, generations: int, teachers: list[str] | None = None, anneal: bool = True) -> None:
    for path in teachers or []:
        _spec_of(path)


@scheme("bam", kind="sequence", paper="Clark et al. 2019, BAM! Born-Again Multi-Task Networks (arXiv:1907.04829)",
        summary="multi-task student from single-task teachers with teacher annealing (gold weight 0 -> 1)",
        cacheable=True, check=_check, outside=_outside)
def bam(ctx: SchemeContext, teachers: list[str] | None = None, anneal: bool = True) -> BAMTask:
    """BAM (Clark et al. 2019): single-task teachers (files) or the previous generation, teacher annealing."""
    groups = getattr(ctx.data, "groups", None)
    if not teachers:
        if ctx.teacher is None:
            raise ConfigError("bam needs teachers: scheme.teachers (single-task files) or an earlier generation")
        return BAMTask(ctx.student, ctx.objective, [ctx.teacher], groups, anneal)
    models = [FrozenTeacher(m) for m in _load_teachers(teachers, ctx.data)]
    return BAMTask(ctx.student, ctx.objective, models, groups, anneal)
