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

    Two variants:

    * ``variant: dfad`` (default), the paper's and authors' procedure: ``d`` is the L1 distance of logits, no
      prior, and the players alternate: ``student_steps`` (5) student steps, each on a fresh batch from the
      fixed generator (the trainer's steps, with the run's optimizer: the authors use SGD, lr 0.1, momentum
      0.9, weight decay 5e-4, ``examples/schemes/dfad.yaml``), then one generator step ascending ``d`` with
      its own Adam (``generator_lr``, 1e-3 as the authors), the student and teacher fixed. The generator is
      kept outside the module tree (not in the trainer's optimizer), stepped inside ``forward`` and saved
      through :meth:`get_extra_state`; single process only.
    * ``variant: deepinversion_like`` (gendistill's earlier default): ``d`` is ``T^2 KL(softmax(a/T) ||
      softmax(b/T))``, both players move in the trainer's single optimizer step through a gradient-reversal
      layer (``generator_weight`` scales the reversed gradient), and, as in DeepInversion (Yin et al. 2020,
      arXiv:1912.08795), the generator also matches the statistics the teacher's batch-norm layers stored
      from the training data, ``L_bn = sum_l ||mu_l(G(z)) - mu_l^run||_2 + ||var_l(G(z)) - var_l^run||_2``,
      with weight ``bn_weight`` (1); the returned loss is ``d - bn_weight * L_bn / generator_weight``.

    ``disagreement`` (``l1`` | ``kl``) and ``bn_weight`` override the variant's choice (``bn_weight`` needs
    the simultaneous update of ``deepinversion_like``). The training split is used only as a clock: each
    step draws as many noise vectors as the batch has samples; ``batch.x`` and ``batch.y`` are never read,
    and the task returns no ``logits``, so the trainer computes no training accuracy. With
    ``adversarial=False`` the generator is not trained (the student learns from the teacher on a fixed
    random generator's outputs), the ablation baseline.
    """

    def __init__(self, student: nn.Module, teacher: Any, input_shape: tuple[int, ...], z_dim: int = 64,
                 hidden: int = 256, disagreement: str | None = None, temperature: float = 1.0,
                 generator_weight: float = 1.0, adversarial: bool = True, bn_weight: float | None = None,
                 variant: str = "dfad", student_steps: int = 5, generator_lr: float = 1e-3):
        super().__init__()
        if teacher is None:
            raise ConfigError("data-free distillation needs a teacher (a generation >= 1)")
        if variant not in ("dfad", "deepinversion_like"):
            raise ConfigError(f"dfad: variant must be 'dfad' (the paper) or 'deepinversion_like', got {variant!r}")
        alternating = variant == "dfad"
        disagreement = disagreement or ("l1" if alternating else "kl")
        bn_weight = (0.0 if alternating else 1.0) if bn_weight is None else float(bn_weight)
        if disagreement not in ("l1", "kl"):
            raise ConfigError(f"dfad: disagreement must be 'l1' or 'kl', got {disagreement!r}")
        if alternating and bn_weight > 0:
            raise ConfigError("dfad: bn_weight (the batch-norm prior) needs variant: deepinversion_like")
        if isinstance(student_steps, bool) or not isinstance(student_steps, int) or student_steps < 1:
            raise ConfigError(f"dfad: student_steps must be a positive integer, got {student_steps!r}")
        self.student = student
        self.variant, self.alternating = variant, alternating
        generator = Generator(z_dim, input_shape, hidden)
        if not adversarial:
            generator.requires_grad_(False)
        if alternating:  # outside the module tree: its own optimizer, not the trainer's
            object.__setattr__(self, "generator", generator)
            object.__setattr__(self, "generator_opt", torch.optim.Adam(generator.parameters(), lr=generator_lr))
        else:
            self.generator = generator
        self.student_steps, self.step = student_steps, 0
        self.set_teacher(teacher)
        self.disagreement, self.temperature = disagreement, float(temperature)
        self.generator_weight, self.adversarial = float(generator_weight), bool(adversarial)
        self.bn_weight = bn_weight
        self._bn_terms: list[Tensor] = []
        norms = [m for t in teacher.models for m in t.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._hooks = [m.register_forward_hook(self._bn_hook) for m in norms] if bn_weight > 0 and adversarial else []
        self._collect = False

    def teacher_models(self) -> list[nn.Module]:
        return [*super().teacher_models(), *([self.generator] if self.alternating else [])]

    def _bn_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not self._collect or module.running_mean is None:
            return
        x = inputs[0].float().transpose(0, 1).flatten(1)  # (C, N * spatial)
        self._bn_terms.append(torch.linalg.vector_norm(x.mean(1) - module.running_mean)
                              + torch.linalg.vector_norm(x.var(1, unbiased=False) - module.running_var))

    def distance(self, t: Tensor, s: Tensor) -> Tensor:
        if self.disagreement == "l1":
            return (t - s).abs().mean()
        T = self.temperature
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean",
                        log_target=True) * T * T

    def _generator_step(self, n: int, device: torch.device) -> Tensor:
        """One Adam step of the generator ascending ``d`` (student and teacher fixed; only G's gradient)."""
        self.generator.train()
        x = self.generator(torch.randn(n, self.generator.z_dim, device=device))
        with torch.enable_grad():
            loss = -self.distance(_teacher_logits(self.teacher.models, x).float(), self.student(x).float())
            grads = torch.autograd.grad(loss, list(self.generator.parameters()))
        for p, g in zip(self.generator.parameters(), grads, strict=True):
            p.grad = g
        self.generator_opt.step()
        self.generator_opt.zero_grad(set_to_none=True)
        return -loss.detach()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        n, dev = len(batch.y), batch.y.device  # the batch's size and device: nothing else of it is read
        if self.alternating:
            learning = self.training and torch.is_grad_enabled()
            if learning and self.adversarial and self.step > 0 and self.step % self.student_steps == 0:
                self._generator_step(n, dev)
            if learning:
                self.step += 1
            with torch.no_grad():
                self.generator.train()
                x = self.generator(torch.randn(n, self.generator.z_dim, device=dev))
                t = _teacher_logits(self.teacher.models, x).float()
            s = self.student(x).float()
            loss = self.distance(t, s)
            agree = (t.argmax(-1) == s.detach().argmax(-1)).float().mean()
            return {"loss": loss, "disagreement": loss.detach(), "gen_agreement": agree}
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
        loss = self.distance(t, s)
        agree = (t.detach().argmax(-1) == s.detach().argmax(-1)).float().mean()
        total = loss - self.bn_weight * bn / self.generator_weight if self._hooks else loss
        return {"loss": total, "disagreement": loss.detach(), "bn": bn.detach(), "gen_agreement": agree}

    def get_extra_state(self) -> dict[str, Any]:
        if not self.alternating:
            return {"step": self.step}
        return {"step": self.step, "generator": {k: v.detach().clone() for k, v in self.generator.state_dict().items()},
                "optimizer": self.generator_opt.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        if self.alternating and "generator" in state:
            self.generator.load_state_dict(state["generator"])
            self.generator_opt.load_state_dict(state["optimizer"])

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


@scheme("dfad", kind="data-free",
        paper="Fang et al. 2019, Data-Free Adversarial Distillation (arXiv:1912.11006)",
        summary="a generator seeks inputs where teacher and student disagree; no training data is used")
def dfad(ctx: SchemeContext, z_dim: int = 64, hidden: int = 256, disagreement: str | None = None,
         temperature: float = 1.0, generator_weight: float = 1.0, adversarial: bool = True,
         bn_weight: float | None = None, variant: str = "dfad", student_steps: int = 5,
         generator_lr: float = 1e-3) -> DataFreeTask:
    """DFAD. The objective is not used (the loss is the teacher-student disagreement on generated inputs);
    only ``data.input_shape`` is read from the dataset. ``variant``: ``dfad`` (default: L1 on logits, no prior,
    ``student_steps`` student steps per generator step, the generator on its own Adam at ``generator_lr``)
    or ``deepinversion_like`` (KL at ``temperature``, the batch-norm statistics prior ``bn_weight``, one
    simultaneous step through gradient reversal scaled by ``generator_weight``). ``disagreement`` (``l1`` |
    ``kl``) and ``bn_weight`` override the variant's; ``z_dim`` and ``hidden`` size the generator;
    ``adversarial: false`` is an untrained random generator, the baseline."""
    return DataFreeTask(ctx.student, ctx.teacher, ctx.data.input_shape, z_dim, hidden, disagreement, temperature,
                        generator_weight, adversarial, bn_weight, variant, student_steps, generator_lr)
