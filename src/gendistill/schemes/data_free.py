"""Data-free distillation: the student never sees the training data, only a generator's inputs."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch
from .common import grad_reverse
from .spec import SchemeContext, scheme


class Generator(nn.Module):
    """``z ~ N(0, I) -> MLP -> tanh -> batch norm (no affine)``: two hidden layers with batch norm and
    LeakyReLU; the last, parameter-free batch norm (as in DFAD's generators) keeps every generated input
    feature at zero mean and unit variance over the batch, so the generator cannot win by inflating the
    inputs' scale."""

    def __init__(self, z_dim: int, input_shape: tuple[int, ...], hidden: int = 256):
        super().__init__()
        d = math.prod(input_shape)
        self.z_dim, self.input_shape = z_dim, tuple(input_shape)
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, d), nn.Tanh(), nn.BatchNorm1d(d, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.input_shape)


def _teacher_logits(models: list[nn.Module], x: Tensor) -> Tensor:
    """The frozen teacher's logits *with* the gradient to its input (its parameters stay frozen)."""
    for m in models:
        m.eval()
    if len(models) == 1:
        return models[0](x)
    probs = torch.stack([m(x).float().softmax(-1) for m in models]).mean(0)
    return probs.clamp_min(1e-12).log()


class DataFreeTask(StudentTask):
    """Data-free adversarial distillation, DFAD (Fang, Song, Zhang, Song & Song 2019, arXiv:1912.11006).

    A generator ``G`` maps noise to inputs; the student ``S`` imitates the frozen teacher ``T`` on them while
    ``G`` seeks inputs where the two disagree:

    ``min_S max_G  E_z [ d(T(G(z)), S(G(z))) ]``,   ``d(a, b) = (1/C) ||a - b||_1`` on logits (DFAD's MAE)

    (or ``T^2 KL(softmax(a/T) || softmax(b/T))`` with ``disagreement: kl``). Both players move in the
    trainer's single optimizer step: a gradient-reversal layer between ``G`` and the two networks makes
    ``G`` ascend ``d`` while ``S`` descends it (``generator_weight`` scales the reversed gradient).

    Plain DFAD lets the generator win with inputs far from anything the teacher was trained on; on small
    problems that is worse than plain noise. So, as in DeepInversion (Yin et al. 2020, arXiv:1912.08795),
    the generator also matches the statistics the teacher's batch-norm layers stored from the training data
    (the only trace of the data a data-free method may use):

    ``L_bn = sum_l ||mu_l(G(z)) - mu_l^run||_2 + ||var_l(G(z)) - var_l^run||_2``

    over the teacher's batch-norm layers ``l`` (a teacher without any gets ``L_bn = 0``). The generator
    minimises ``bn_weight * L_bn - d`` and the student minimises ``d``; through the reversal layer both are
    the gradient of the one returned loss ``d - bn_weight * L_bn / generator_weight`` (logged as ``loss``;
    ``disagreement`` and ``bn`` are logged as parts).

    The training split is used only as a clock: each step draws as many noise vectors as the batch has
    samples; ``batch.x`` and ``batch.y`` are never read, and the task returns no ``logits``, so the trainer
    computes no training accuracy. With ``adversarial=False`` the generator is not trained (the student
    learns from the teacher on a fixed random generator's outputs), the ablation baseline. The generator
    is a submodule (in the optimizer, dropped at export).
    """

    def __init__(self, student: nn.Module, teacher: Any, input_shape: tuple[int, ...], z_dim: int = 64,
                 hidden: int = 256, disagreement: str = "kl", temperature: float = 1.0,
                 generator_weight: float = 1.0, adversarial: bool = True, bn_weight: float = 1.0):
        super().__init__()
        if teacher is None:
            raise ConfigError("data-free distillation needs a teacher (a generation >= 1)")
        if disagreement not in ("l1", "kl"):
            raise ConfigError(f"dfad: disagreement must be 'l1' or 'kl', got {disagreement!r}")
        self.student = student
        self.generator = Generator(z_dim, input_shape, hidden)
        if not adversarial:
            self.generator.requires_grad_(False)
        self.set_teacher(teacher)
        self.disagreement, self.temperature = disagreement, float(temperature)
        self.generator_weight, self.adversarial = float(generator_weight), bool(adversarial)
        self.bn_weight = float(bn_weight)
        self._bn_terms: list[Tensor] = []
        norms = [m for t in teacher.models for m in t.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._hooks = [m.register_forward_hook(self._bn_hook) for m in norms] if bn_weight > 0 and adversarial else []
        self._collect = False

    def _bn_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not self._collect or module.running_mean is None:
            return
        x = inputs[0].float().transpose(0, 1).flatten(1)  # (C, N * spatial)
        self._bn_terms.append(torch.linalg.vector_norm(x.mean(1) - module.running_mean)
                              + torch.linalg.vector_norm(x.var(1, unbiased=False) - module.running_var))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        n, dev = len(batch.y), batch.y.device  # the batch's size and device: nothing else of it is read
        x = self.generator(torch.randn(n, self.generator.z_dim, device=dev))
        x = grad_reverse(x, self.generator_weight) if self.adversarial else x.detach()
        self._bn_terms, self._collect = [], True
        try:
            t = _teacher_logits(self.teacher.models, x).float()
        finally:
            self._collect = False
        bn = sum(self._bn_terms) if self._bn_terms else t.new_zeros(())
        self._bn_terms = []
        s = self.student(x).float()
        if self.disagreement == "l1":
            loss = (t - s).abs().mean()
        else:
            T = self.temperature
            loss = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean",
                            log_target=True) * T * T
        agree = (t.detach().argmax(-1) == s.detach().argmax(-1)).float().mean()
        total = loss - self.bn_weight * bn / self.generator_weight if self._hooks else loss
        return {"loss": total, "disagreement": loss.detach(), "bn": bn.detach(), "gen_agreement": agree}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


@scheme("dfad", kind="data-free",
        paper="Fang et al. 2019, Data-Free Adversarial Distillation (arXiv:1912.11006)",
        summary="a generator seeks inputs where teacher and student disagree; no training data is used")
def dfad(ctx: SchemeContext, z_dim: int = 64, hidden: int = 256, disagreement: str = "kl", temperature: float = 1.0,
         generator_weight: float = 1.0, adversarial: bool = True, bn_weight: float = 1.0) -> DataFreeTask:
    """DFAD. The objective is not used (the loss is the teacher-student disagreement on generated inputs);
    only ``data.input_shape`` is read from the dataset. Options: ``z_dim`` and ``hidden`` of the generator,
    ``disagreement`` (``l1`` | ``kl``) and its ``temperature``, ``generator_weight`` (the reversal's scale),
    ``adversarial`` (``false``: an untrained random generator, the baseline), ``bn_weight`` (the batch-norm
    statistics prior; 0 is plain DFAD)."""
    return DataFreeTask(ctx.student, ctx.teacher, ctx.data.input_shape, z_dim, hidden, disagreement, temperature,
                        generator_weight, adversarial, bn_weight)
