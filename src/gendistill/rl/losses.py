"""Policy distillation losses (Rusu et al. 2016, Policy Distillation, arXiv:1511.06295, Sec. 4).

The teacher's outputs are Q-values ``q^T(s, .)`` (a DQN) or action logits (a policy network); the student's
outputs ``q^S(s, .)`` are read the same way. Each term is averaged over the states of the batch.

* ``policy_kl``: ``sum_a softmax(q^T / tau)_a * log(softmax(q^T / tau)_a / softmax(q^S)_a)``; the teacher's
  Q-values are sharpened by a small temperature (tau = 0.01 in the paper), the student's are not.
* ``policy_mse``: ``sum_a (q^T_a - q^S_a)^2``, regression on the Q-values themselves.
* ``policy_nll``: ``-log softmax(q^S)_{a*}``, ``a* = argmax_a q^T_a``: the teacher's greedy action as a label.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..knowledge.base import Batch, KnowledgeTerm, Outputs
from ..registry import METHODS

PAPER = "Rusu et al. 2016, Policy Distillation (arXiv:1511.06295)"


@METHODS.register("policy_kl", kind="policy", paper=PAPER,
                  summary="KL(softmax(q_T / tau) || softmax(q_S)) on Q-values; tau = 0.01 in the paper")
class PolicyKL(KnowledgeTerm):
    """``L = sum_a softmax(q^T/tau)_a (log softmax(q^T/tau)_a - log softmax(q^S)_a)``, Rusu et al. 2016, Eq. 3."""

    name = "policy_kl"

    def __init__(self, tau: float = 0.01):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"policy_kl needs tau > 0, got {tau}")
        self.tau = float(tau)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        t = F.log_softmax(teacher.logits.float() / self.tau, -1)
        s = F.log_softmax(student.logits.float(), -1)
        return F.kl_div(s, t, reduction="batchmean", log_target=True)


@METHODS.register("policy_mse", kind="policy", paper=PAPER, summary="squared error on the teacher's Q-values")
class PolicyMSE(KnowledgeTerm):
    """``L = sum_a (q^T_a - q^S_a)^2``, averaged over states, Rusu et al. 2016, Eq. 2."""

    name = "policy_mse"

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return (teacher.logits.float() - student.logits.float()).pow(2).sum(-1).mean()


@METHODS.register("policy_nll", kind="policy", paper=PAPER, summary="NLL of the teacher's greedy action")
class PolicyNLL(KnowledgeTerm):
    """``L = -log softmax(q^S)_{argmax_a q^T_a}``, Rusu et al. 2016, Eq. 1."""

    name = "policy_nll"

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return F.cross_entropy(student.logits.float(), teacher.logits.argmax(-1))
