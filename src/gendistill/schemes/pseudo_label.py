"""Pseudo-labels: a teacher labels an unlabeled pool, the student learns from those labels.

Part of the training set keeps its labels (``labeled``, a stratified subset drawn with ``split_seed``); the
labels of the rest are withheld: no loss ever reads them. Generation 0 learns from the labeled part only.

* ``noisy_student``: Noisy Student (Xie et al. 2020): each generation's student learns from the labeled part
  and from the previous generation's pseudo-labels on the pool, with noise on its inputs.
* ``mpl``: Meta Pseudo Labels (Pham et al. 2021): the teacher keeps learning, from the student's feedback
  on the labeled part.

The trainer's ``train_acc`` column is computed over all training samples (a report, not a loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from .common import label_objective, soft_cross_entropy, trainable_teacher
from .spec import SchemeContext, scheme


def labeled_mask(y: Tensor, labeled: float, split_seed: int = 0) -> Tensor:
    """A boolean mask over the training set, ``True`` where the label is kept: ``labeled`` is a fraction
    (``0 < labeled < 1``) or a count per class (``labeled >= 1``), drawn per class (stratified) from a
    permutation seeded by ``split_seed``, the same for every generation and every lineage seed."""
    if labeled <= 0:
        raise ConfigError(f"pseudo-labels: labeled must be > 0 (a fraction or a count per class), got {labeled}")
    g = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(len(y), generator=g)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():
        idx = order[y[order] == c]
        k = int(round(labeled * len(idx))) if labeled < 1 else int(labeled)
        mask[idx[: max(1, min(len(idx), k))]] = True
    return mask


class _PseudoLabelBase(StudentTask):
    def __init__(self, student: nn.Module, objective: Objective, y_train: Tensor, labeled: float, split_seed: int):
        super().__init__()
        self.student = student
        self.objective = label_objective(objective)
        self.register_buffer("labeled", labeled_mask(y_train.cpu(), labeled, split_seed), persistent=False)

    def _split(self, batch: Batch) -> Tensor:
        if batch.index is None:
            raise ConfigError("pseudo-label schemes need the samples' indices (an in-memory training split)")
        return self.labeled[batch.index]

    def _label_loss(self, logits: Tensor, batch: Batch, lab: Tensor) -> dict[str, Tensor]:
        """The objective's label terms on the labeled samples of the batch (zero when there are none)."""
        if not lab.any():
            zero = logits.sum() * 0.0
            return {"loss": zero, **{n: zero.detach() for n in self.objective.names}}
        sub = Batch(batch.x[lab], batch.y[lab], batch.index[lab])
        return self.objective(Outputs(logits[lab]), None, sub)



class NoisyStudentTask(_PseudoLabelBase):
    """Noisy Student self-training (Xie, Luong, Hovy & Le 2020, arXiv:1911.04252).

    With ``L`` the labeled samples of a batch and ``U`` the rest:

    ``L = (1/|B|) [ |L| * objective(S(x_L), y_L) + w * |U| * H(q(x_U), S(x_U + eps)) ]``,  ``eps ~ N(0, sigma^2)``

    ``q`` is the frozen teacher's softmax on the *clean* input at temperature ``T`` (soft pseudo-labels), or
    its one-hot argmax with ``hard=True``; samples whose teacher confidence is below ``threshold`` are
    dropped. The student is noised (input noise ``noise``; dropout through the model's own options), the
    teacher is not. The objective's label terms are used, its teacher terms are not. Generation 0 has no
    teacher and learns from ``L`` alone; run with ``generations.teacher: previous`` to iterate.
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher: Any | None, y_train: Tensor,
                 labeled: float = 0.1, split_seed: int = 0, noise: float = 0.5, weight: float = 1.0,
                 temperature: float = 1.0, hard: bool = False, threshold: float = 0.0):
        super().__init__(student, objective, y_train, labeled, split_seed)
        self.set_teacher(teacher)
        self.noise, self.weight, self.temperature = float(noise), float(weight), float(temperature)
        self.hard, self.threshold = bool(hard), float(threshold)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        lab = self._split(batch)
        x = batch.x
        if self.teacher is not None and self.noise > 0:
            x = x + self.noise * torch.randn_like(x) * (~lab).view(-1, *[1] * (x.ndim - 1))
        logits = self.student(x)
        parts = self._label_loss(logits, batch, lab)
        frac = lab.float().mean()
        total = parts.pop("loss") * frac
        if self.teacher is not None:
            u = ~lab
            with torch.no_grad():
                view = batch.view[u] if batch.view is not None else None
                q = (self.teacher(batch.x[u], batch.index[u], view).logits.float() / self.temperature).softmax(-1)
                keep = q.max(-1).values >= self.threshold
                if self.hard:
                    q = F.one_hot(q.argmax(-1), q.shape[-1]).float()
            pseudo = soft_cross_entropy(logits[u][keep], q[keep]) if keep.any() else logits.sum() * 0.0
            total = total + self.weight * pseudo * keep.float().sum() / len(lab)
            parts["pseudo"] = pseudo.detach()
            parts["kept"] = keep.float().mean() if u.any() else frac * 0
        return {"loss": total, **parts, "logits": logits}


@scheme("noisy_student", kind="pseudo-label", trains_gen0=True, cacheable=True,
        paper="Xie, Luong, Hovy & Le 2020, Self-training with Noisy Student improves ImageNet "
              "classification (arXiv:1911.04252)",
        summary="labels withheld from part of the data; each generation learns the previous one's pseudo-labels with noise")
def noisy_student(ctx: SchemeContext, labeled: float = 0.1, split_seed: int = 0, noise: float = 0.5,
                  weight: float = 1.0, temperature: float = 1.0, hard: bool = False,
                  threshold: float = 0.0) -> NoisyStudentTask:
    """Noisy Student: ``labeled`` (fraction, or count per class) keeps its labels; ``noise`` is the std of
    the student's input noise on the pool; ``weight``, ``temperature``, ``hard``, ``threshold`` shape the
    pseudo-label loss. Give the student dropout with the model options, e.g. ``{name: mlp, dropout: 0.2}``."""
    return NoisyStudentTask(ctx.student, ctx.objective, ctx.teacher, ctx.data.train.y, labeled, split_seed, noise,
                            weight, temperature, hard, threshold)


class MetaPseudoLabelTask(_PseudoLabelBase):
    """Meta Pseudo Labels (Pham, Dai, Xie, Luong & Le 2021, arXiv:2003.10580), first-order form.

    A trainable teacher ``T`` (initialised from the previous generation) gives hard pseudo-labels
    ``yhat = argmax T(x_U)``; the student learns from them only: ``L_S = CE(yhat, S(x_U + eps))`` (its
    gradient step is the trainer's). The teacher learns from how that step changed the student's loss on the
    labeled samples. The paper's meta-gradient ``h = eta * grad_{S'} CE(y_L, S'(x_L)) . grad_S CE(yhat, S(x_U))``
    is replaced by its first-order Taylor estimate (the paper's appendix; the reference code does the same):

    ``h = CE(y_L, S(x_L)) - CE(y_L, S'(x_L))``   (before minus after the student's step)

    and the teacher descends ``L_T = (h - b) * CE(yhat, T(x_U)) + CE(y_L, T(x_L))`` (``h > 0``: the
    pseudo-labels helped, make them likelier; plus the teacher's supervised loss; UDA is left out).

    The sign is the paper's (eq. 12 and its Taylor expansion: before minus after). The authors' released
    code computes ``after - before`` (kekmodel/MPL-pytorch keeps that "author's code formula", with the
    paper's form commented as "theoretically correct"); gendistill follows the paper. ``b`` is an optional
    moving-average baseline of ``h``, as in the reference code: with ``baseline: d`` (``0.99`` there),
    ``b <- d b + (1 - d) h`` before it is subtracted; ``baseline: 0`` (default) is no baseline, ``b = 0``. Because the trainer
    steps the student after ``forward`` returns, the teacher's update for step ``k`` happens at the start of
    step ``k + 1`` (one step late); the last step of an epoch gets none, so resume at epoch boundaries is
    exact. The two student losses in ``h`` are measured with the student in eval mode, without gradients.

    The teacher is kept outside the module tree (not in the trainer's optimizer); it and its own optimizer
    (``teacher_optimizer``: SGD with momentum 0.9, or Adam, at ``teacher_lr``) are stepped inside
    ``forward`` and saved through :meth:`get_extra_state`. Single process only (no DDP).
    """

    def __init__(self, student: nn.Module, objective: Objective, teacher_init: nn.Module, y_train: Tensor,
                 labeled: float = 0.1, split_seed: int = 0, noise: float = 0.5, teacher_lr: float = 1e-3,
                 teacher_optimizer: str = "adam", baseline: float = 0.0):
        super().__init__(student, objective, y_train, labeled, split_seed)
        if not 0.0 <= baseline < 1.0:
            raise ConfigError(f"mpl: baseline (the moving-average decay) must be in [0, 1), got {baseline!r}")
        self.baseline = float(baseline)
        self.register_buffer("moving_reward", torch.zeros(()))
        net, opt = trainable_teacher("mpl", teacher_init, teacher_lr, teacher_optimizer)
        object.__setattr__(self, "mpl_teacher", net)
        object.__setattr__(self, "teacher_opt", opt)
        self.noise = float(noise)
        self._pending: tuple | None = None

    def teacher_models(self) -> list[nn.Module]:
        return [self.mpl_teacher]

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self._pending = None

    @torch.no_grad()
    def _student_loss(self, x: Tensor, y: Tensor) -> Tensor:
        was = self.student.training
        self.student.eval()
        loss = F.cross_entropy(self.student(x).float(), y)
        self.student.train(was)
        return loss

    def _teacher_step(self) -> Tensor:
        x_l, y_l, x_u, yhat, before = self._pending
        self._pending = None
        reward = before - self._student_loss(x_l, y_l)
        advantage = reward
        if self.baseline > 0:
            d = self.baseline
            self.moving_reward.mul_(d).add_((1 - d) * reward.detach())
            advantage = reward - self.moving_reward
        t_u, t_l = self.mpl_teacher(x_u).float(), self.mpl_teacher(x_l).float()
        loss = advantage * F.cross_entropy(t_u, yhat) + F.cross_entropy(t_l, y_l)
        self.teacher_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.teacher_opt.step()
        self.teacher_opt.zero_grad(set_to_none=True)
        return reward

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        lab = self._split(batch)
        u = ~lab
        learning = self.training and torch.is_grad_enabled()
        reward = None
        if learning and self._pending is not None:
            with torch.enable_grad():
                reward = self._teacher_step()
        with torch.no_grad():
            self.mpl_teacher.eval()
            t_logits = self.mpl_teacher(batch.x)
            self.mpl_teacher.train()
        yhat = t_logits.argmax(-1)
        x = batch.x + self.noise * torch.randn_like(batch.x) if self.noise > 0 else batch.x
        logits = self.student(x)
        loss = F.cross_entropy(logits[u].float(), yhat[u]) if u.any() else logits.sum() * 0.0
        if learning and lab.any() and u.any():
            self._pending = (batch.x[lab], batch.y[lab], batch.x[u], yhat[u], self._student_loss(batch.x[lab], batch.y[lab]))
        parts = {"loss": loss, "pseudo": loss.detach(),
                 "teacher_acc_l": (t_logits[lab].argmax(-1) == batch.y[lab]).float().mean() if lab.any() else loss.detach() * 0}
        parts["reward"] = reward.detach() if reward is not None else loss.detach() * 0
        return {**parts, "logits": logits}

    def get_extra_state(self) -> dict[str, Any]:
        return {"teacher": {k: v.detach().clone() for k, v in self.mpl_teacher.state_dict().items()},
                "optimizer": self.teacher_opt.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.mpl_teacher.load_state_dict(state["teacher"])
        self.teacher_opt.load_state_dict(state["optimizer"])


@scheme("mpl", kind="pseudo-label", trains_gen0=True,
        paper="Pham, Dai, Xie, Luong & Le 2021, Meta Pseudo Labels (arXiv:2003.10580)",
        summary="the pseudo-labelling teacher is updated from the student's feedback on labeled data")
def mpl(ctx: SchemeContext, labeled: float = 0.1, split_seed: int = 0, noise: float = 0.5, teacher_lr: float = 1e-3,
        teacher_optimizer: str = "adam", baseline: float = 0.0) -> StudentTask:
    """Meta Pseudo Labels. Generation 0 learns from the labeled part only (the objective's label terms);
    generation ``k >= 1`` trains a student with a trainable teacher initialised from generation ``k - 1``.
    Options: ``labeled`` / ``split_seed`` (the split, as for ``noisy_student``), ``noise`` (student input
    noise), ``teacher_lr`` and ``teacher_optimizer`` (``adam`` | ``sgd``) of the teacher's own optimizer,
    ``baseline`` (moving-average decay of the reward baseline; 0 = none, the reference code uses 0.99)."""
    if ctx.gen == 0:
        return NoisyStudentTask(ctx.student, ctx.objective, None, ctx.data.train.y, labeled, split_seed)
    return MetaPseudoLabelTask(ctx.student, ctx.objective, ctx.previous[-1], ctx.data.train.y, labeled, split_seed,
                               noise, teacher_lr, teacher_optimizer, baseline)
