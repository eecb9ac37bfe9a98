"""Online distillation: networks trained together teach each other; no frozen, pre-trained teacher is needed.

* ``dml``: deep mutual learning (Zhang et al. 2018): K peers, each also distils from the others.
* ``one``: On-the-fly Native Ensemble (Lan et al. 2018): branches on a shared trunk, taught by their gated
  ensemble.

Both are registered with ``gen0=True``: they train generation 0 from labels (their own online teachers), and
a later generation adds the lineage's frozen teacher through the objective's teacher terms.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..knowledge.taps import TappedModel
from ..models import build_model
from .common import fresh_copy, kl_to, pooled, split_for_branches
from .spec import SchemeContext, scheme


class _Objectives(nn.ModuleList):
    """One objective per peer (terms may hold state or parameters); the trainer's ``setup`` reaches all."""

    def setup(self, *, num_train: int, num_classes: int) -> None:
        for o in self:
            o.setup(num_train=num_train, num_classes=num_classes)


class MutualLearning(StudentTask):
    """Deep mutual learning (Zhang, Xiang, Hospedales & Lu 2018, arXiv:1706.00384).

    For peers ``k = 1..K`` with logits ``z_k``:

    ``L = sum_k [ objective(z_k) + w * T^2 / (K-1) * sum_{l != k} KL(softmax(z_l/T) || softmax(z_k/T)) ]``

    Each peer's KL targets are the other peers' detached predictions, so one backward pass of the sum gives
    every peer exactly the gradient of its own loss: all peers take their step at the same time (the paper
    alternates them within an iteration; the simultaneous form is the common reimplementation). The
    objective is ``ce`` at generation 0; at a later generation its teacher terms read the lineage's teacher.

    The evaluated network (``eval_model``) is peer 0, the lineage's student. The other peers' training
    accuracy is logged as ``peer<k>_acc``; with ``weight=0`` the peers train independently (the baseline).
    """

    def __init__(self, student: nn.Module, peers: list[nn.Module], objective: Objective, teacher: Any | None = None,
                 weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        if not peers:
            raise ConfigError("dml needs peers >= 2 (the student and at least one more network)")
        if objective.needs_teacher and teacher is None:
            raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
        self.peers = nn.ModuleList([student, *peers])
        self.objective = _Objectives([objective] + [copy.deepcopy(objective) for _ in peers])
        self.set_teacher(teacher)
        self.weight, self.temperature = float(weight), float(temperature)
        layers = objective.student_layers
        self._runs = [TappedModel(p, layers, role="student") for p in self.peers]

    @property
    def eval_model(self) -> nn.Module:
        return self.peers[0]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        outs = [run(batch.x) for run in self._runs]
        teacher = self.teacher_outputs(batch, self.objective[0])
        K = len(outs)
        total, mutual = 0.0, 0.0
        parts: dict[str, Tensor] = {}
        for k, out in enumerate(outs):
            own = self.objective[k](out, teacher, batch)
            if k == 0:
                parts.update({n: v for n, v in own.items() if n != "loss"})
            m = sum(kl_to(out.logits, outs[j].logits, self.temperature) for j in range(K) if j != k) / (K - 1)
            total = total + own["loss"] + self.weight * m
            mutual = mutual + m / K
        parts["mutual"] = mutual
        for k in range(1, K):
            parts[f"peer{k}_acc"] = (outs[k].logits.detach().argmax(-1) == batch.y).float().mean()
        return {"loss": total, **parts, "logits": outs[0].logits}

    def close(self) -> None:
        for run in self._runs:
            run.close()


def _check_dml(train: Any, generations: int, peers: int = 2, **_: Any) -> None:
    if not isinstance(peers, int) or peers < 2:
        raise ConfigError(f"dml needs peers >= 2 (the student and at least one more network), got {peers!r}")


def _check_one(train: Any, generations: int, branches: int = 3, **_: Any) -> None:
    if not isinstance(branches, int) or branches < 2:
        raise ConfigError(f"one needs branches >= 2, got {branches!r}")


@scheme("dml", kind="online", trains_gen0=True, cacheable=True, check=_check_dml,
        paper="Zhang, Xiang, Hospedales & Lu 2018, Deep Mutual Learning (arXiv:1706.00384)",
        summary="K peers trained together, each distilling from the others' predictions")
def dml(ctx: SchemeContext, peers: int = 2, weight: float = 1.0, temperature: float = 1.0,
        peer_model: dict[str, Any] | None = None) -> MutualLearning:
    """Deep mutual learning: ``peers`` networks (the student plus ``peers - 1`` others: fresh copies of the
    student, or ``peer_model`` such as ``{name: mlp, width: 64}``); ``weight`` and ``temperature`` of the
    mutual KL. The evaluated model is the student (peer 0)."""
    if peers < 2:
        raise ConfigError(f"dml needs peers >= 2, got {peers}")
    data = ctx.data
    others = [build_model(peer_model, data.num_classes, data.input_shape) if peer_model else fresh_copy(ctx.student)
              for _ in range(peers - 1)]
    return MutualLearning(ctx.student, others, ctx.objective, ctx.teacher, weight, temperature)


def sigmoid_rampup(epoch: int, epochs: int, fraction: float) -> float:
    """ONE's (and mean teacher's) consistency ramp-up: ``exp(-5 (1 - t / R)^2)`` with ``t = epoch - 1`` (0-based)
    clipped to ``[0, R]`` and ``R = fraction * epochs``; 1 when ``fraction == 0``."""
    length = fraction * epochs
    if length <= 0:
        return 1.0
    t = min(max(epoch - 1, 0), length)
    return math.exp(-5.0 * (1.0 - t / length) ** 2)


class _GatedEnsemble(nn.Module):
    """``trunk -> m branches -> sum_i g_i(x) z_i(x)`` with ``g = softmax(gate(pool(trunk(x))))``."""

    def __init__(self, trunk: nn.Module, branches: nn.ModuleList, gate: nn.Module):
        super().__init__()
        self.trunk, self.branches, self.gate = trunk, branches, gate

    def forward_all(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        h = self.trunk(x)
        zs = [b(h) for b in self.branches]
        g = self.gate(pooled(h)).softmax(-1)
        ens = (torch.stack(zs, -1) * g[:, None, :]).sum(-1)
        return zs, ens

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[1]


class NativeEnsemble(StudentTask):
    """ONE: On-the-fly Native Ensemble (Lan, Zhu & Gong 2018, arXiv:1806.04606).

    The student is split into a shared trunk (low-level layers) and a head; ``m - 1`` more copies of the head
    become branches, and a gate ``g = softmax(ReLU(BN(W pool(trunk(x)))))`` (the authors' code,
    ``control_v1 -> bn_v1 -> relu -> softmax``; ``gate: linear`` drops BN and ReLU, the form before issue 13)
    weights them into the teacher ``z_e = sum_i g_i z_i``:

    ``L = sum_i objective(z_i) + CE(z_e, y) + w * r(t) * T^2 * sum_i KL(softmax(z_e/T) || softmax(z_i/T))``

    with ``z_e`` detached as the KL target, so the gate and the ensemble learn from ``CE(z_e, y)`` and the
    branches from the ensemble. ``r(t)`` is the authors' sigmoid ramp-up of the KL weight,
    ``exp(-5 (1 - t/R)^2)`` over the first ``R = rampup * epochs`` epochs (their 80 of 300 epochs, so
    ``rampup = 0.267`` by default; ``rampup: 0`` is a constant weight). Gradients of every branch meet in the
    shared trunk, which is where the student gains.

    The evaluated network is the student itself, i.e. the trunk with branch 0: the deployable single branch
    ("ONE" in the paper's tables, not "ONE-E"). The gated ensemble's training accuracy is logged as
    ``ensemble_acc``; :attr:`ensemble` is the gated network, for evaluating it separately.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None, input_shape: tuple[int, ...],
                 branches: int = 3, branch_at: str | None = None, weight: float = 1.0, temperature: float = 3.0,
                 gate: str = "linear_bn_relu", rampup: float = 80 / 300):
        super().__init__()
        if gate not in ("linear_bn_relu", "linear"):
            raise ConfigError(f"one: gate must be 'linear_bn_relu' (the authors' code) or 'linear', got {gate!r}")
        if not 0.0 <= rampup <= 1.0:
            raise ConfigError(f"one: rampup must be a fraction of the epochs in [0, 1], got {rampup!r}")
        if branches < 2:
            raise ConfigError(f"one needs branches >= 2, got {branches}")
        trunk, head = split_for_branches("one", student, objective, teacher, branch_at, input_shape)
        heads = nn.ModuleList([head] + [fresh_copy(head) for _ in range(branches - 1)])
        with torch.no_grad():
            was = student.training
            student.eval()
            width = pooled(trunk(torch.zeros(2, *input_shape))).shape[1]
            student.train(was)
        self.student = student
        gate_net = nn.Linear(width, branches)
        if gate == "linear_bn_relu":
            gate_net = nn.Sequential(gate_net, nn.BatchNorm1d(branches), nn.ReLU())
        self.ensemble = _GatedEnsemble(trunk, heads, gate_net)
        self.objective = objective
        self.set_teacher(teacher)
        self.weight, self.temperature = float(weight), float(temperature)
        self.rampup, self.ramp = float(rampup), 1.0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.ramp = sigmoid_rampup(epoch, epochs, self.rampup)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        zs, ens = self.ensemble.forward_all(batch.x)
        teacher = self.teacher_outputs(batch)
        total = F.cross_entropy(ens.float(), batch.y)
        parts: dict[str, Tensor] = {"ensemble_ce": total.detach()}
        kd = 0.0
        for i, z in enumerate(zs):
            own = self.objective(Outputs(z), teacher, batch)
            if i == 0:
                parts.update({n: v for n, v in own.items() if n != "loss"})
            k = kl_to(z, ens, self.temperature)
            total = total + own["loss"] + self.weight * self.ramp * k
            kd = kd + k / len(zs)
        parts["one_kd"] = kd
        parts["ensemble_acc"] = (ens.detach().argmax(-1) == batch.y).float().mean()
        return {"loss": total, **parts, "logits": zs[0]}



@scheme("one", kind="online", trains_gen0=True, cacheable=True, check=_check_one,
        paper="Lan, Zhu & Gong 2018, Knowledge Distillation by On-the-fly Native Ensemble (arXiv:1806.04606)",
        summary="branches on a shared trunk, each distilling from their gated ensemble")
def one(ctx: SchemeContext, branches: int = 3, branch_at: str | None = None, weight: float = 1.0,
        temperature: float = 3.0, gate: str = "linear_bn_relu", rampup: float = 80 / 300) -> NativeEnsemble:
    """ONE: ``branches`` heads from ``branch_at`` (default: the student's last ``layer*`` child) on a shared
    trunk, gated into an ensemble teacher (``gate``: ``linear_bn_relu``, the authors' code, or ``linear``);
    the KL weight ramps up over the first ``rampup`` fraction of the epochs (0: no ramp). The evaluated model
    is the student (trunk + branch 0)."""
    return NativeEnsemble(ctx.student, ctx.objective, ctx.teacher, ctx.data.input_shape, branches, branch_at, weight,
                          temperature, gate, rampup)
