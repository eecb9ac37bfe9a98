"""Adversarial distillation: a discriminator tells the teacher's outputs from the student's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..engine.task import DistillTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from .spec import SchemeContext, scheme


class AdversarialTask(DistillTask):
    """Adversarial KD with a conditional discriminator on the outputs (Xu, Hsu & Huang 2018,
    arXiv:1709.00513; Wang et al. 2018, KDGAN).

    A discriminator ``D`` sees a softened output ``p = softmax(z/T)`` together with the one-hot label (the
    conditional form of Xu et al.) and says whether it came from the teacher (real) or the student (fake).
    In one optimizer step:

    ``L = objective(s, t) + L_D + w * L_G``
    ``L_D = BCE(D(p_t, y), 1) + BCE(D(sg(p_s), y), 0)``   (only ``D``'s parameters get this gradient)
    ``L_G = BCE(D_sg(p_s, y), 1)``                          (only the student gets this gradient)

    where ``sg`` stops the gradient and ``D_sg`` is ``D`` called with detached parameters
    (``torch.func.functional_call``), so the student's non-saturating GAN loss cannot move the discriminator.
    ``D`` is a submodule, trained by the trainer's optimizer with the student and dropped at export. The
    parts ``disc`` (``L_D``), ``adv`` (``L_G``) and ``disc_acc`` (the discriminator's accuracy on the
    batch's real and fake outputs) are logged.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any, num_classes: int,
                 weight: float = 0.1, temperature: float = 4.0, hidden: int = 64, conditional: bool = True):
        if teacher is None:
            raise ConfigError("adversarial distillation needs a teacher (a generation >= 1)")
        super().__init__(student, objective, teacher)
        self.weight, self.temperature, self.conditional = float(weight), float(temperature), bool(conditional)
        d_in = num_classes * (2 if conditional else 1)
        self.discriminator = nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                           nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def _input(self, logits: Tensor, y: Tensor) -> Tensor:
        p = F.softmax(logits.float() / self.temperature, dim=-1)
        return torch.cat([p, F.one_hot(y, p.shape[-1]).float()], -1) if self.conditional else p

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        student = self.run_student(batch.x)
        logits = student.logits
        teacher = self.teacher(batch.x, batch.index, batch.view)
        parts = self.objective(student, teacher if self.objective.needs_teacher else None, batch)
        real, fake = self._input(teacher.logits, batch.y), self._input(logits, batch.y)
        d_real, d_fake = self.discriminator(real).squeeze(-1), self.discriminator(fake.detach()).squeeze(-1)
        disc = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_fake = functional_call(self.discriminator, frozen, (fake,)).squeeze(-1)
        adv = F.binary_cross_entropy_with_logits(g_fake, torch.ones_like(g_fake))
        parts["loss"] = parts["loss"] + disc + self.weight * adv
        parts["disc"], parts["adv"] = disc.detach(), adv.detach()
        parts["disc_acc"] = ((d_real.detach() > 0).float().mean() + (d_fake.detach() < 0).float().mean()) / 2
        parts["logits"] = logits
        return parts


@scheme("akd", kind="adversarial", cacheable=True,
        paper="Xu, Hsu & Huang 2018, Training Shallow and Thin Networks for Acceleration via Knowledge "
              "Distillation with Conditional Adversarial Networks (arXiv:1709.00513)",
        summary="a discriminator tells teacher outputs from student outputs, trained alongside the KD loss")
def akd(ctx: SchemeContext, weight: float = 0.1, temperature: float = 4.0, hidden: int = 64,
        conditional: bool = True) -> AdversarialTask:
    """Adversarial KD: the objective (e.g. ``ban+l``) plus a conditional output discriminator; ``weight`` of
    the student's adversarial loss, ``temperature`` of the outputs the discriminator sees, ``hidden`` width
    of its two hidden layers, ``conditional`` whether it also sees the label. The defaults (``weight=0.1``,
    ``temperature=4``) were chosen on MNIST-1D, where ``weight=1`` cost the student several points."""
    return AdversarialTask(ctx.student, ctx.objective, ctx.teacher, ctx.data.num_classes, weight, temperature, hidden,
                           conditional)
