"""MetaDistil (Zhou, Xu & McAuley 2022): the teacher keeps learning, from how well the student it teaches
does on a held-out quiz set, through a pilot update of a copy of the student."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch
from .common import trainable_teacher
from .spec import SchemeContext, scheme


def quiz_mask(n: int, fraction: float, seed: int = 0) -> Tensor:
    """``True`` on a fixed, seeded ``fraction`` of the ``n`` training samples: the quiz set."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"meta_distil: quiz must be a fraction in (0, 1), got {fraction!r}")
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: max(1, int(round(fraction * n)))]] = True
    return mask


class MetaDistilTask(StudentTask):
    """MetaDistil (Zhou, Xu & McAuley, ACL 2022, "BERT Learns to Teach: Knowledge Distillation with Meta
    Learning", arXiv:2106.04570), for classification.

    The student ``S`` (parameters ``w``) learns by KD from a *trainable* teacher ``T`` (parameters ``theta``,
    initialised from the previous generation): ``L_S(w; theta) = (1 - a) CE(S_w(x), y) + a T^2 KL(p_T || p_S)``
    on the training samples outside the quiz set. Each training step:

    1. *pilot update*: a differentiable copy of the student takes one SGD step,
       ``w'(theta) = w - lr_pilot * grad_w L_S(w; theta)`` (the graph through ``theta`` is kept);
    2. *teacher update*: the teacher descends the pilot student's loss on a quiz batch drawn from the
       held-out quiz set, ``theta <- theta - lr_T grad_theta CE(S_{w'(theta)}(x_q), y_q)`` (a second-order
       meta-gradient through step 1; the teacher's own optimizer, ``teacher_optimizer`` at ``teacher_lr``);
    3. *student update*: the real student takes its step on ``L_S(w; theta_new)`` (the trainer's step).

    The quiz set is a fixed, seeded fraction ``quiz`` of the training set, never trained on by the student.
    The teacher and its optimizer live outside the module tree (not in the trainer's optimizer), are stepped
    inside ``forward`` and saved through :meth:`get_extra_state`; single process only. The pilot step reads
    the student's batch-norm statistics in training mode (its running statistics are updated by the pilot
    forward too). The paper's BERT setting also has the teacher keep its own task loss on the training batch
    (``teacher_ce``, default 0 here; its weight when set).
    """

    def __init__(self, student: nn.Module, teacher_init: nn.Module, num_train: int, alpha: float = 0.5,
                 temperature: float = 2.0, quiz: float = 0.1, quiz_seed: int = 0, pilot_lr: float = 0.1,
                 teacher_lr: float = 1e-4, teacher_optimizer: str = "adam", quiz_batch: int = 64,
                 teacher_ce: float = 0.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"meta_distil: alpha must be in [0, 1], got {alpha}")
        for key, v in (("temperature", temperature), ("pilot_lr", pilot_lr), ("teacher_lr", teacher_lr)):
            if not v > 0:
                raise ConfigError(f"meta_distil: {key} must be > 0, got {v}")
        self.student = student
        net, opt = trainable_teacher("meta_distil", teacher_init, teacher_lr, teacher_optimizer)
        object.__setattr__(self, "meta_teacher", net)
        object.__setattr__(self, "teacher_opt", opt)
        self.register_buffer("quiz", quiz_mask(num_train, quiz, quiz_seed), persistent=False)
        self.alpha, self.temperature, self.pilot_lr = float(alpha), float(temperature), float(pilot_lr)
        self.quiz_batch, self.teacher_ce = int(quiz_batch), float(teacher_ce)

    def teacher_models(self) -> list[nn.Module]:
        return [self.meta_teacher]

    def student_loss(self, s_logits: Tensor, t_logits: Tensor, y: Tensor) -> Tensor:
        """``(1 - a) CE(s, y) + a T^2 KL(softmax(t/T) || softmax(s/T))`` (the teacher's graph kept)."""
        t = self.temperature
        kd = F.kl_div(F.log_softmax(s_logits.float() / t, -1), F.log_softmax(t_logits.float() / t, -1),
                      reduction="batchmean", log_target=True) * t * t
        return (1 - self.alpha) * F.cross_entropy(s_logits.float(), y) + self.alpha * kd

    def _meta_step(self, x: Tensor, y: Tensor, x_q: Tensor, y_q: Tensor) -> Tensor:
        """Pilot update of a functional student copy, then one teacher step on the pilot's quiz loss."""
        params = {k: v for k, v in self.student.named_parameters() if v.requires_grad}
        buffers = dict(self.student.named_buffers())
        with torch.enable_grad():
            t_logits = self.meta_teacher(x)
            loss = self.student_loss(functional_call(self.student, (params, buffers), (x,)), t_logits, y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            pilot = {k: p - self.pilot_lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
            quiz_loss = F.cross_entropy(functional_call(self.student, (pilot, buffers), (x_q,)).float(), y_q)
            total = quiz_loss + (self.teacher_ce * F.cross_entropy(t_logits.float(), y) if self.teacher_ce else 0.0)
            t_grads = torch.autograd.grad(total, list(self.meta_teacher.parameters()), allow_unused=True)
        for p, g in zip(self.meta_teacher.parameters(), t_grads, strict=True):
            p.grad = g
        self.teacher_opt.step()
        self.teacher_opt.zero_grad(set_to_none=True)
        return quiz_loss.detach()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if batch.index is None:
            raise ConfigError("meta_distil needs the samples' indices (an in-memory training split) to hold out its quiz set")
        train = ~self.quiz[batch.index]
        x, y = batch.x[train], batch.y[train]
        parts: dict[str, Tensor] = {}
        learning = self.training and torch.is_grad_enabled()
        if learning and train.any():
            q = self.quiz.nonzero().squeeze(1)
            pick = q[torch.randint(len(q), (min(self.quiz_batch, len(q)),), device=q.device)]
            data = self._train_data
            parts["quiz_loss"] = self._meta_step(x, y, data.x[pick].to(x.device), data.y[pick].to(x.device))
        logits = self.student(batch.x)
        if train.any():
            with torch.no_grad():
                t_logits = self.meta_teacher(x)
            loss = self.student_loss(logits[train], t_logits, y)
        else:
            loss = logits.sum() * 0.0
        parts.setdefault("quiz_loss", loss.detach() * 0)
        return {"loss": loss, "meta_kd": loss.detach(), **parts, "logits": logits}

    def get_extra_state(self) -> dict[str, Any]:
        return {"teacher": {k: v.detach().clone() for k, v in self.meta_teacher.state_dict().items()},
                "optimizer": self.teacher_opt.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.meta_teacher.load_state_dict(state["teacher"])
        self.teacher_opt.load_state_dict(state["optimizer"])


@scheme("meta_distil", kind="meta",
        paper="Zhou, Xu & McAuley 2022, BERT Learns to Teach: Knowledge Distillation with Meta Learning "
              "(ACL 2022, arXiv:2106.04570)",
        summary="the teacher learns from the quiz-set loss of a pilot-updated copy of its student")
def meta_distil(ctx: SchemeContext, alpha: float = 0.5, temperature: float = 2.0, quiz: float = 0.1,
                quiz_seed: int = 0, pilot_lr: float | None = None, teacher_lr: float = 1e-4,
                teacher_optimizer: str = "adam", quiz_batch: int = 64, teacher_ce: float = 0.0) -> MetaDistilTask:
    """MetaDistil: generation ``k >= 1`` learns by KD (``alpha``, ``temperature``) from a trainable teacher
    initialised from generation ``k - 1``, which is updated each step from the quiz loss of a pilot-updated
    student copy (``pilot_lr``, default the run's ``train.lr``; ``teacher_lr``, ``teacher_optimizer``). The
    quiz set is the fraction ``quiz`` of the training set (seed ``quiz_seed``), held out from the student."""
    if ctx.gen == 0 or not ctx.previous:
        raise ConfigError("meta_distil trains generations >= 1 (its teacher starts from the previous generation)")
    data = ctx.data.train
    if not hasattr(data, "x"):
        raise ConfigError("meta_distil needs an in-memory training split (it draws quiz batches by index)")
    task = MetaDistilTask(ctx.student, ctx.previous[-1], len(data), alpha, temperature, quiz, quiz_seed,
                          ctx.train.lr if pilot_lr is None else pilot_lr, teacher_lr, teacher_optimizer,
                          quiz_batch, teacher_ce)
    object.__setattr__(task, "_train_data", data)
    return task
