"""OKDDip: online knowledge distillation with diverse peers and a group leader (Chen et al. 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..knowledge.taps import FeatureTap, penultimate_module
from .common import fresh_copy, split_for_branches
from .spec import SchemeContext, scheme


def soft_kl(output: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``T^2 (1/N) sum_i KL(softmax(t_i/T) + 1e-7 || softmax(o_i/T))`` with the target *not* detached, as
    the authors' ``KL_Loss``: the attention weights that form the targets learn through this loss only."""
    T = temperature
    target_p = F.softmax(target.float() / T, dim=-1) + 1e-7
    return T * T * F.kl_div(F.log_softmax(output.float() / T, dim=-1), target_p, reduction="batchmean")


def rampup(epoch: int, length: float) -> float:
    """The consistency ramp-up of the authors' code (Laine & Aila 2017): ``exp(-5 (1 - min(e, L)/L)^2)`` for the
    0-based epoch ``e``; 1 when ``L = 0``."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


class DiversePeers(StudentTask):
    """OKDDip (Chen, Mei, Wang, Feng & Chen 2020, AAAI, arXiv:1912.00350).

    The student is split into a shared trunk and a head; ``peers`` copies of the head are *auxiliary peers*
    and the student's own head is the *group leader* (the deployed model). With peer logits ``z_1..z_m``,
    leader logits ``z_l``, and ``h_j`` the pooled features each peer's classifier reads, the first level of
    distillation gives every peer its own target, an attention-weighted mix of the peers' logits:

    ``a_ij = softmax_j( (W_q h_i)^T (W_k h_j) )``,   ``t_i = sum_j a_ij z_j``

    (``W_q``, ``W_k``: linear maps to ``d / factor`` dimensions, shared by the peers); the second level
    distils the peer group into the leader through the mean of the peers' logits:

    ``L = sum_i CE(z_i, y) + objective(z_l) + alpha * w(e) * ( sum_i KL_T(t_i || z_i) + KL_T(mean_j z_j || z_l) )``

    with ``KL_T`` as :func:`soft_kl` (``T^2``-scaled, targets not detached: the attention learns through
    them) and ``w(e)`` the ramp-up :func:`rampup` over ``rampup_epochs`` (80 of 300 in the authors' code, so
    by default ``round(0.27 * train.epochs)``). Defaults follow the authors' code (commit c052f5b of
    DefangChen/OKDDip): 3 peers + 1 leader, ``T = 3``, ``alpha = 1``, ``factor = 8``. The peer ensemble's
    training accuracy is logged as ``peers_acc``; ``group_kd`` and ``leader_kd`` are the two distillation levels.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher, input_shape: tuple[int, ...],
                 epochs: int, peers: int = 3, branch_at: str | None = None, temperature: float = 3.0,
                 alpha: float = 1.0, factor: int = 8, rampup_epochs: float | None = None):
        super().__init__()
        if peers < 2:
            raise ConfigError(f"okddip needs peers >= 2 (auxiliary peers besides the leader), got {peers}")
        self.trunk, leader = split_for_branches("okddip", student, objective, teacher, branch_at, input_shape)
        self.peers = nn.ModuleList([fresh_copy(leader) for _ in range(peers)])
        classifier = penultimate_module(leader)
        name = next(n for n, m in leader.named_modules() if m is classifier)
        self._taps = [FeatureTap(p, [name], role="peer", inputs=True) for p in self.peers]
        width = classifier.in_features
        if width // factor < 1:
            raise ConfigError(f"okddip: factor {factor} leaves no attention dimensions for {width} features")
        self.query = nn.Linear(width, width // factor, bias=False)
        self.key = nn.Linear(width, width // factor, bias=False)
        self.leader = leader
        self.set_student(student)
        self.objective = objective
        self.set_teacher(teacher)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.rampup_epochs = round(0.27 * epochs) if rampup_epochs is None else float(rampup_epochs)
        self.weight = rampup(0, self.rampup_epochs)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.weight = rampup(epoch - 1, self.rampup_epochs)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        shared = self.trunk(batch.x)
        zs, hs = [], []
        for peer, tap in zip(self.peers, self._taps):
            tap.clear()
            zs.append(peer(shared))
            hs.append(tap.features[next(iter(tap.features))].flatten(1))
        z_leader = self.leader(shared)
        z = torch.stack(zs, 1).float()  # (N, m, C)
        h = torch.stack(hs, 1).float()  # (N, m, d)
        attention = torch.softmax(self.query(h) @ self.key(h).transpose(1, 2), dim=-1)  # (N, m, m)
        targets = attention @ z  # (N, m, C): t_i = sum_j a_ij z_j
        T = self.temperature
        ce = sum(F.cross_entropy(z[:, i], batch.y) for i in range(len(zs)))
        group = sum(soft_kl(z[:, i], targets[:, i], T) for i in range(len(zs)))
        leader_kd = soft_kl(z_leader, z.mean(1), T)
        own = self.objective(Outputs(z_leader), self.teacher_outputs(batch), batch)
        total = ce + own.pop("loss") + self.alpha * self.weight * (group + leader_kd)
        parts = {**own, "peers_ce": ce.detach(), "group_kd": group.detach(), "leader_kd": leader_kd.detach()}
        parts["peers_acc"] = (z.detach().mean(1).argmax(-1) == batch.y).float().mean()
        return {"loss": total, **parts, "logits": z_leader}

    def close(self) -> None:
        for tap in self._taps:
            tap.remove()
        super().close()


@scheme("okddip", kind="online", trains_gen0=True, cacheable=True,
        paper="Chen, Mei, Wang, Feng & Chen 2020, Online Knowledge Distillation with Diverse Peers (AAAI, "
              "arXiv:1912.00350)",
        summary="auxiliary peers with attention-weighted targets, distilled into a group leader")
def okddip(ctx: SchemeContext, peers: int = 3, branch_at: str | None = None, temperature: float = 3.0,
           alpha: float = 1.0, factor: int = 8, rampup_epochs: float | None = None) -> DiversePeers:
    """OKDDip: ``peers`` auxiliary heads from ``branch_at`` (default: the student's last ``layer*`` child) and
    the student's own head as the group leader, which is evaluated and saved. ``temperature``, ``alpha``
    (weight of both distillation levels), ``factor`` (attention width = features / factor) and
    ``rampup_epochs`` (the weight's ramp-up) as in the authors' code."""
    return DiversePeers(ctx.student, ctx.objective, ctx.teacher, ctx.data.input_shape, ctx.train.epochs, peers,
                        branch_at, temperature, alpha, factor, rampup_epochs)
