"""Response-based knowledge: terms computed from logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


def kl_div_with_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))``, computed in float32."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


@METHODS.register("ce", kind="label", paper="-", needs_teacher=False)
class CrossEntropy(KnowledgeTerm):
    """Label cross-entropy, optionally label-smoothed: ``-sum_c q_c log p_s(c)`` with
    ``q = (1-eps) onehot(y) + eps/C``."""

    name = "ce"
    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        logits = student.logits.float()
        if batch.mix is None:
            return F.cross_entropy(logits, batch.y, label_smoothing=self.label_smoothing)
        y2, lam = batch.mix  # mixup: lam * CE(y) + (1 - lam) * CE(y_partner), per sample
        a = F.cross_entropy(logits, batch.y, reduction="none", label_smoothing=self.label_smoothing)
        b = F.cross_entropy(logits, y2, reduction="none", label_smoothing=self.label_smoothing)
        lam = lam.to(logits.device, logits.dtype)
        return (lam * a + (1 - lam) * b).mean()


@METHODS.register(
    "kd",
    kind="response",
    paper="Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531)",
)
class KD(KnowledgeTerm):
    """Soft-target distillation (Hinton et al. 2015).

    ``L_KD = T^2 * (1/N) sum_i KL( softmax(z_t,i / T) || softmax(z_s,i / T) )``

    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures. Mixed with labels as
    ``(1 - alpha) * CE + alpha * L_KD`` by the ``hinton`` preset; Born-Again Networks use it alone (``ban``)
    or plus labels (``ban+l``).
    """

    name = "kd"

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        return kl_div_with_temperature(student.logits, teacher.logits.detach(), self.temperature)
