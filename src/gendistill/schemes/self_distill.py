"""Self-distillation: the network teaches itself, with no separate teacher.

* ``byot``: Be Your Own Teacher (Zhang et al. 2019): auxiliary classifiers on intermediate stages learn from
  the deepest one.
* ``pskd``: progressive self-knowledge distillation (Kim et al. 2021): the targets mix the labels with the
  model's own predictions from the previous epoch.
* Teacher-free KD (Yuan et al. 2020) needs no scheme: it is the knowledge term ``tf_kd``, used in an
  objective (see ``examples/schemes/tf_kd.yaml``).

Both schemes are registered with ``gen0=True``: they train generation 0 too. At a later generation the
objective's teacher terms read the lineage's teacher as well.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from .common import kl_to, soft_cross_entropy, stages, teacher_objective
from .spec import SchemeContext, scheme


class _AuxHead(nn.Module):
    """An auxiliary classifier on a feature map: a *bottleneck* mapping the map to the deepest stage's shape
    (a strided conv block to its channels, then adaptive average pooling to its spatial size; a hidden layer
    to its width for vectors), whose output is BYOT's hint feature, then global pooling and a linear layer."""

    def __init__(self, shape: torch.Size, final_shape: torch.Size, num_classes: int):
        super().__init__()
        if len(shape) == 2:
            self.bottleneck = nn.Sequential(nn.Linear(shape[1], final_shape[1]), nn.ReLU())
            self.classifier = nn.Linear(final_shape[1], num_classes)
            return
        if len(final_shape) != len(shape):
            raise ConfigError(f"byot: the auxiliary layer's features {tuple(shape)} and the deepest stage's "
                              f"{tuple(final_shape)} differ in rank; give layers of the same kind")
        c, out, dims = shape[1], final_shape[1], len(shape) - 2
        conv, bn, pool = {1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d),
                          2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
                          3: (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d)}[dims]
        self.bottleneck = nn.Sequential(conv(c, out, 3, stride=2, padding=1), bn(out), nn.ReLU(),
                                        pool(tuple(final_shape[2:])))
        self.classifier = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(out, num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.bottleneck(x)
        return f, self.classifier(f)


def byot_hint(f: Tensor, target: Tensor) -> Tensor:
    """The reference code's ``feature_loss_function``: ``sum (f - t)^2 * [f > 0 or t > 0]`` over every element (the
    batch included), ``t`` detached."""
    t = target.detach().float()
    f = f.float()
    return ((f - t).pow(2) * ((f > 0) | (t > 0)).float()).sum()


class BeYourOwnTeacher(StudentTask):
    """Be Your Own Teacher (Zhang, Song, Gao, Chen, Bao & Ma 2019, arXiv:1905.08094).

    Auxiliary classifiers ``z_1..z_{C-1}`` sit on the student's intermediate stages (feature taps); the
    network's own output ``z_C`` is the deepest classifier and the teacher of the others. As the reference
    code (``total_loss = (1 - a) (CE_C + sum_i CE_i) + a sum_i KD_i + lambda sum_i hint_i``):

    ``L = (1 - a) objective(z_C) + sum_{i<C} [ (1 - a) CE(z_i, y) + a T^2 KL(softmax(z_C/T) || softmax(z_i/T))
    + lambda sum ( (F_i - F_C)^2 [F_i > 0 or F_C > 0] ) ]``

    with ``z_C`` and the deepest features ``F_C`` detached as targets; ``F_i`` is auxiliary head ``i``'s
    bottleneck output, which has ``F_C``'s shape (the hint term of the paper, summed over every element as
    in ``feature_loss_function``). ``a = 0.3`` and ``T = 3`` are the paper's; ``lambda = 1e-6``
    (``hint_weight``) is the weight of the widely used PyTorch reproduction
    (luanyunteng/pytorch-be-your-own-teacher, ``train.py``: ``--beta 1e-6``), whose hint is summed the same
    way (the authors released no code). ``final_weight`` overrides ``1 - a`` on the deepest classifier's
    objective (``1`` is the form before issue 13). The reference code's KD is the soft cross-entropy
    ``-sum p_C log p_i``, which differs from the KL here by the (constant) entropy of ``p_C``: the same
    gradient. The evaluated network is the student's final head (the auxiliary heads are dropped at export);
    their training accuracy is logged as ``head<i>_acc``.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None, num_classes: int,
                 input_shape: tuple[int, ...], layers: list[str] | None = None, alpha: float = 0.3,
                 temperature: float = 3.0, hint_weight: float = 1e-6, final_weight: float | None = None,
                 final_layer: str | None = None):
        super().__init__()
        if objective.needs_teacher and teacher is None:
            raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
        names = stages(student)
        layers = list(layers) if layers is not None else names[:-1]
        if not layers:
            raise ConfigError("byot needs intermediate layers for the auxiliary heads; give layers=[...] "
                              "(names of the student's submodules)")
        final_layer = final_layer or (names[-1] if names else None)
        if final_layer is None:
            raise ConfigError("byot: the student has no 'layer*' children; give final_layer, the deepest stage "
                              "whose features the auxiliary heads are shaped to (and hinted towards)")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"byot: alpha must be in [0, 1], got {alpha}")
        if not hint_weight >= 0:
            raise ConfigError(f"byot: hint_weight must be >= 0, got {hint_weight}")
        self.objective = objective
        self.set_student(student, sorted(set(layers) | {final_layer} | set(objective.student_layers)))
        self.set_teacher(teacher)
        self.layers, self.final_layer = layers, final_layer
        self.alpha, self.temperature, self.hint_weight = float(alpha), float(temperature), float(hint_weight)
        self.final_weight = 1.0 - self.alpha if final_weight is None else float(final_weight)
        was = student.training
        student.eval()
        with torch.no_grad():
            shapes = {n: f.shape for n, f in self.run_student(torch.zeros(2, *input_shape)).features.items()}
        student.train(was)
        self.heads = nn.ModuleList([_AuxHead(shapes[n], shapes[final_layer], num_classes) for n in layers])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        student = self.run_student(batch.x)
        logits, feats = student.logits, student.features
        teacher = self.teacher_outputs(batch)
        parts = self.objective(student, teacher, batch)
        total = self.final_weight * parts.pop("loss")
        ce = kd = hint = 0.0
        final = feats[self.final_layer]
        for i, (name, head) in enumerate(zip(self.layers, self.heads)):
            f, z = head(feats[name])
            c, k = F.cross_entropy(z.float(), batch.y), kl_to(z, logits, self.temperature)
            h = byot_hint(f, final) if self.hint_weight else torch.zeros((), device=z.device)
            total = total + (1 - self.alpha) * c + self.alpha * k + self.hint_weight * h
            ce, kd, hint = ce + c, kd + k, hint + h
            parts[f"head{i + 1}_acc"] = (z.detach().argmax(-1) == batch.y).float().mean()
        return {"loss": total, **parts, "byot_ce": ce, "byot_kd": kd, "byot_hint": hint, "logits": logits}



@scheme("byot", kind="self", trains_gen0=True, cacheable=True,
        paper="Zhang et al. 2019, Be Your Own Teacher: Improve the Performance of Convolutional Neural "
              "Networks via Self Distillation (arXiv:1905.08094)",
        summary="auxiliary heads on intermediate stages learn from the deepest head")
def byot(ctx: SchemeContext, layers: list[str] | None = None, alpha: float = 0.3,
         temperature: float = 3.0, hint_weight: float = 1e-6, final_weight: float | None = None,
         final_layer: str | None = None) -> BeYourOwnTeacher:
    """BYOT: auxiliary heads on ``layers`` (default: every ``layer*`` child but the last), weight ``alpha``
    of their KL to the deepest head at ``temperature``, ``hint_weight`` of their feature hint to the deepest
    stage ``final_layer`` (default: the last ``layer*`` child); the deepest head's objective is weighted
    ``1 - alpha`` (``final_weight`` overrides). The evaluated model is the student's final head."""
    data = ctx.data
    return BeYourOwnTeacher(ctx.student, ctx.objective, ctx.teacher, data.num_classes, data.input_shape, layers, alpha,
                            temperature, hint_weight, final_weight, final_layer)


class ProgressiveSelfKD(StudentTask):
    """Progressive self-knowledge distillation, PS-KD (Kim, Ji, Yoon & Hwang 2021, arXiv:2006.12000).

    At epoch ``t`` of ``E`` the target of sample ``i`` is

    ``q_i^t = (1 - a_t) onehot(y_i) + a_t p_i^{t-1}``,   ``a_t = a_E * t / E``

    where ``p_i^{t-1}`` is the model's own softmax on sample ``i`` recorded during epoch ``t-1`` (one-hot in
    the first epoch), and the loss is ``-sum_c q_i^t(c) log p_i^t(c)``. The predictions are kept in a
    ``(num_train, C)`` buffer indexed by ``batch.index`` and saved with the task, so resume is exact. The
    objective's label terms are replaced by this loss; its teacher terms (a later generation) are added.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None, num_train: int,
                 num_classes: int, alpha: float = 0.8):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"pskd: alpha must be in [0, 1], got {alpha}")
        self.student = student
        self.objective = teacher_objective(objective)
        if self.objective is not None and teacher is None:
            raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
        if self.objective is not None and self.objective.student_layers:
            raise ConfigError("pskd: feature-based terms are not supported; use logit-based terms")
        self.set_teacher(teacher)
        self.alpha_final = float(alpha)
        self.alpha = 0.0
        self.register_buffer("memory", torch.zeros(num_train, num_classes))
        self.register_buffer("seen", torch.zeros(num_train, dtype=torch.bool))

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self.alpha = self.alpha_final * epoch / total_epochs

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if batch.index is None:
            raise ConfigError("pskd needs the samples' indices (an in-memory training split)")
        logits = self.student(batch.x)
        onehot = F.one_hot(batch.y, logits.shape[-1]).float()
        past = torch.where(self.seen[batch.index, None], self.memory[batch.index], onehot)
        target = (1 - self.alpha) * onehot + self.alpha * past
        loss = soft_cross_entropy(logits, target)
        parts: dict[str, Tensor] = {"pskd": loss}
        if self.training:
            with torch.no_grad():
                self.memory[batch.index] = logits.detach().float().softmax(-1)
                self.seen[batch.index] = True
        if self.objective is not None:
            own = self.objective(Outputs(logits), self.teacher(batch.x, batch.index, batch.view), batch)
            loss = loss + own.pop("loss")
            parts.update(own)
        return {"loss": loss, **parts, "logits": logits}



@scheme("pskd", kind="self", trains_gen0=True, cacheable=True,
        paper="Kim, Ji, Yoon & Hwang 2021, Self-Knowledge Distillation with Progressive Refinement of "
              "Targets (arXiv:2006.12000)",
        summary="targets mix labels with the model's own previous-epoch predictions")
def pskd(ctx: SchemeContext, alpha: float = 0.8) -> ProgressiveSelfKD:
    """PS-KD with final mixing weight ``alpha`` (``a_E``; the paper uses 0.8)."""
    return ProgressiveSelfKD(ctx.student, ctx.objective, ctx.teacher, len(ctx.data.train), ctx.data.num_classes, alpha)
