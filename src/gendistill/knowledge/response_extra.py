"""More response-based knowledge: logit terms beyond KD (DKD, DIST).

Label smoothing is not a separate term: it is ``ce``'s ``label_smoothing`` option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs
from .feature import float32_forward
from .response import _check_temperature


def _check_nonnegative(**values: float) -> None:
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value}")


@METHODS.register(
    "dkd",
    kind="response",
    paper="Zhao, Cui, Song, Qiu & Liang 2022, Decoupled Knowledge Distillation (CVPR 2022, arXiv:2203.08679)",
)
class DKD(KnowledgeTerm):
    """Decoupled KD (Zhao et al. 2022): KD split into a target-class and a non-target-class part.

    At temperature ``T``, with ``p = softmax(z / T)`` and ``y`` the label:

    * binary target/non-target probabilities ``b = [p_y, 1 - p_y]``;
    * non-target distribution ``p^ = softmax(z_{c != y} / T)`` over the other ``C - 1`` classes;

    ``TCKD = KL(b_t || b_s)``, ``NCKD = KL(p^_t || p^_s)``, and

    ``L_DKD = T^2 * (1/N) sum_i ( alpha * TCKD_i + beta * NCKD_i )``.

    The paper's CIFAR-100 setting is ``alpha = 1, beta = 8, T = 4``. Its linear warm-up of the loss over the
    first 20 epochs (weight ``min(epoch / 20, 1)``) is ``train.kd_warmup_epochs: 20``.

    Args:
        alpha: weight of TCKD (>= 0).
        beta: weight of NCKD (>= 0).
        temperature: ``T`` (> 0).
    """

    name = "dkd"

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        _check_nonnegative(alpha=alpha, beta=beta)
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = _check_temperature(temperature)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        t = self.temperature
        zs = student.logits.float() / t
        zt = teacher.logits.detach().float() / t
        y = batch.y
        n, c = zs.shape
        target = F.one_hot(y, c).bool()

        def binary_and_other(z: Tensor) -> tuple[Tensor, Tensor]:
            other = z[~target].view(n, c - 1)
            lse = torch.logsumexp(z, dim=1)
            log_b = torch.stack([z[target] - lse, torch.logsumexp(other, dim=1) - lse], dim=1)
            return log_b, F.log_softmax(other, dim=1)

        log_bs, log_ps = binary_and_other(zs)
        log_bt, log_pt = binary_and_other(zt)
        tckd = F.kl_div(log_bs, log_bt, reduction="batchmean", log_target=True)
        nckd = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
        return (self.alpha * tckd + self.beta * nckd) * (t * t)


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@METHODS.register(
    "dist",
    kind="response",
    paper="Huang, You, Wang, Qian & Xu 2022, Knowledge Distillation from A Stronger Teacher "
    "(NeurIPS 2022, arXiv:2205.10536)",
)
class DIST(KnowledgeTerm):
    """DIST (Huang et al. 2022): match relations of predictions by Pearson correlation instead of KL.

    With ``Y_s = softmax(Z_s / tau)``, ``Y_t = softmax(Z_t / tau)`` (``N x C``) and ``rho`` the Pearson
    correlation:

    * inter-class: ``L_inter = 1 - (1/N) sum_i rho(Y_s[i, :], Y_t[i, :])`` (each sample's class profile);
    * intra-class: ``L_intra = 1 - (1/C) sum_c rho(Y_s[:, c], Y_t[:, c])`` (each class across the batch);

    ``L_DIST = tau^2 * ( beta * L_inter + gamma * L_intra )``. Defaults follow the authors' code
    (``beta = gamma = tau = 1``).

    Args:
        beta: weight of the inter-class term (>= 0).
        gamma: weight of the intra-class term (>= 0).
        tau: temperature (> 0).
    """

    name = "dist"

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0):
        super().__init__()
        _check_nonnegative(beta=beta, gamma=gamma)
        self.beta, self.gamma = float(beta), float(gamma)
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        ys = F.softmax(student.logits.float() / self.tau, dim=1)
        yt = F.softmax(teacher.logits.detach().float() / self.tau, dim=1)
        inter = 1.0 - pearson_rows(ys, yt).mean()
        intra = 1.0 - pearson_rows(ys.t(), yt.t()).mean()
        return (self.tau**2) * (self.beta * inter + self.gamma * intra)


__all__ = ["DKD", "DIST", "pearson_rows"]
