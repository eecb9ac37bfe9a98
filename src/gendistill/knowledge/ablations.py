"""Knowledge ablations: terms that keep part of what a teacher's soft targets carry and destroy the rest.

They answer *why* distillation (and Born-Again training in particular) helps: by comparing a lineage
trained with ``kd`` to one trained with each ablation.

All soft-target terms here share one form: with a target distribution ``q_i`` built from the teacher (or
from the label alone) and the student's distribution at temperature ``T``, ``p_s,i = softmax(z_s,i / T)``,

``L = T^2 * (1/N) sum_i KL(q_i || p_s,i) = T^2 * (1/N) sum_i sum_c q_i(c) (log q_i(c) - log p_s,i(c))``

which is the cross-entropy ``-sum_c q_i(c) log p_s,i(c)`` minus the target's entropy: the two have the
same gradient, and the KL is 0 when the student matches the target (as ``kd`` is). Targets are detached.

=============  ==================================================================  ==========================
term           target ``q_i``                                                      keeps / destroys
=============  ==================================================================  ==========================
cwtm           labels, each sample's CE weighted by the teacher's max probability  confidence / soft targets
dkpp           teacher probs, non-argmax entries randomly permuted per sample      confidence, argmax / rest
kd_universe    label smoothing, true-class prob = batch mean of teacher's          universe / domain+instance
kd_domain      teacher probs, non-target entries permuted by a fixed per-class     universe+instance / domain
               permutation
kd_instance    per-class mean teacher distribution (running mean)                  universe+domain / instance
tf_kd          virtual teacher: ``a`` on the true class, ``(1-a)/(C-1)`` elsewhere  no teacher at all
=============  ==================================================================  ==========================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs
from .response import _check_temperature

BAN = "Furlanello et al. 2018, Born-Again Neural Networks (ICML; arXiv:1805.04770)"
TANG = "Tang et al. 2020, Understanding and Improving Knowledge Distillation (arXiv:2002.03532)"
TFKD = (
    "Yuan et al. 2020, Revisiting Knowledge Distillation via Label Smoothing Regularization "
    "(CVPR; arXiv:1909.11723), Tf-KD_reg"
)


def soft_target_kl(student_logits: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``T^2 * (1/N) sum_i sum_c q_i(c) (log q_i(c) - log softmax(z_s,i / T)(c))`` with ``0 log 0 = 0``."""
    target = target.detach().float()
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (torch.xlogy(target, target) - target * log_ps).sum(-1).mean()
    return kl * (temperature * temperature)


def _teacher_probs(teacher: Outputs, temperature: float) -> Tensor:
    return F.softmax(teacher.logits.detach().float() / temperature, dim=-1)


def _non_index_columns(index: Tensor, num_classes: int) -> Tensor:
    """``N x (C-1)`` column indices of each row except ``index[i]``, in increasing order."""
    cols = torch.arange(num_classes, device=index.device).expand(index.shape[0], num_classes)
    return cols[cols != index[:, None]].view(index.shape[0], num_classes - 1)


def permute_non_argmax(probs: Tensor, generator: torch.Generator) -> Tensor:
    """``probs`` (``N x C``) with each row's argmax kept in place and its other entries randomly permuted
    (an independent permutation per row, drawn from ``generator`` on the CPU)."""
    n, c = probs.shape
    if c < 3:
        return probs.clone()
    others = _non_index_columns(probs.argmax(-1), c)
    order = torch.rand(n, c - 1, generator=generator).argsort(-1).to(probs.device)
    values = probs.gather(1, others).gather(1, order)
    return probs.clone().scatter_(1, others, values)


def class_permutations(num_classes: int, seed: int) -> Tensor:
    """``C x C`` long tensor whose row ``c`` is a random permutation of ``0..C-1`` that fixes ``c``."""
    g = torch.Generator().manual_seed(seed)
    perms = torch.arange(num_classes).repeat(num_classes, 1)
    for c in range(num_classes):
        others = torch.cat([torch.arange(c), torch.arange(c + 1, num_classes)])
        perms[c, others] = others[torch.randperm(num_classes - 1, generator=g)]
    return perms


@METHODS.register("cwtm", kind="ablation", paper=BAN)
class CWTM(KnowledgeTerm):
    """Confidence-Weighted by Teacher Max (Born-Again Networks, Furlanello et al. 2018).

    Label cross-entropy with each sample weighted by the teacher's confidence, normalized over the batch:

    ``L = sum_i w_i CE(z_s,i, y_i) / sum_i w_i``,  ``w_i = max_c softmax(z_t,i)(c)`` (temperature 1, detached)

    The student sees only the teacher's confidence, none of its distribution over wrong classes: if it
    still gains, the gain is importance weighting of samples, not dark knowledge.
    """

    name = "cwtm"

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        w = _teacher_probs(teacher, 1.0).max(-1).values
        ce = F.cross_entropy(student.logits.float(), batch.y, reduction="none")
        return (w * ce).sum() / w.sum()


@METHODS.register("dkpp", kind="ablation", paper=BAN)
class DKPP(KnowledgeTerm):
    """Dark Knowledge with Permuted Predictions (Born-Again Networks, Furlanello et al. 2018).

    Target ``q_i = pi_i(softmax(z_t,i / T))``: the teacher's argmax probability stays in place, the other
    ``C - 1`` probabilities are randomly permuted, with a new permutation for every sample and step. The
    confidence and the argmax survive; the structure over wrong classes does not.

    ``L = T^2 * (1/N) sum_i KL(q_i || softmax(z_s,i / T))``  (same gradient as the cross-entropy to ``q_i``)

    The permutations come from a ``torch.Generator`` seeded with ``seed``: the same seed and batch order give
    the same targets. Its state is part of the term's ``state_dict`` (extra state), so a resumed run continues
    the same stream.
    """

    name = "dkpp"

    def __init__(self, temperature: float = 1.0, seed: int = 0):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        target = permute_non_argmax(_teacher_probs(teacher, self.temperature), self.generator)
        return soft_target_kl(student.logits, target, self.temperature)


@METHODS.register("kd_universe", kind="ablation", paper=TANG)
class KDUniverse(KnowledgeTerm):
    """Universe-level knowledge only (Tang et al. 2020: KD as label smoothing).

    The teacher is reduced to one number per batch, its mean probability of the true class at temperature
    ``T``, ``m = (1/N) sum_i softmax(z_t,i / T)(y_i)``. The target is label smoothing with that strength:

    ``q_i = (1 - eps) onehot(y_i) + eps / C``  with  ``eps = C (1 - m) / (C - 1)``,

    i.e. ``q_i(y_i) = m`` and ``q_i(c) = (1 - m) / (C - 1)`` for every other class. (With ``m < 1/C``,
    ``eps > 1``; the target is still a distribution.) Passing ``epsilon`` fixes ``eps`` instead of deriving
    it from the teacher, which is plain label smoothing at temperature ``T``.

    ``L = T^2 * (1/N) sum_i KL(q_i || softmax(z_s,i / T))``

    Keeps: the uniform regularization KD brings. Destroys: class relationships (domain knowledge) and
    per-sample difficulty (instance knowledge).
    """

    name = "kd_universe"

    def __init__(self, temperature: float = 4.0, epsilon: float | None = None):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        if epsilon is not None and not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] or None, got {epsilon}")
        self.epsilon = None if epsilon is None else float(epsilon)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        logits, y = student.logits, batch.y
        c = logits.shape[-1]
        if self.epsilon is not None:
            eps = torch.tensor(self.epsilon, device=logits.device)
        elif c == 1:
            eps = torch.zeros((), device=logits.device)
        else:
            m = _teacher_probs(teacher, self.temperature).gather(1, y[:, None]).mean()
            eps = c * (1.0 - m) / (c - 1)
        onehot = F.one_hot(y, c).float()
        target = (1.0 - eps) * onehot + eps / c
        return soft_target_kl(logits, target, self.temperature)


@METHODS.register("kd_domain", kind="ablation", paper=TANG)
class KDDomain(KnowledgeTerm):
    """Domain knowledge destroyed, universe and instance knowledge kept (after Tang et al. 2020).

    For every class ``c`` a permutation ``pi_c`` of the classes that fixes ``c`` is drawn once from ``seed``.
    A sample of true class ``y`` gets the teacher's distribution at temperature ``T`` with its non-target
    probabilities moved by ``pi_y``:

    ``q_i(pi_{y_i}(j)) = softmax(z_t,i / T)(j)``  for all ``j``  (so ``q_i(y_i) = p_t,i(y_i)``)

    ``L = T^2 * (1/N) sum_i KL(q_i || softmax(z_s,i / T))``

    The true-class probability (the teacher's per-sample view of difficulty) and the entropy survive; the
    *semantic* class relationships are replaced by arbitrary ones, consistent within a class (all samples of
    class ``c`` see the same relabelling). The permutations are a non-persistent buffer rebuilt from
    ``seed`` and ``C``, so every run and every resume sees the same ones.
    """

    name = "kd_domain"

    def __init__(self, temperature: float = 4.0, seed: int = 0):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.seed = int(seed)
        self.register_buffer("perms", None, persistent=False)

    def setup(self, *, num_train: int, num_classes: int) -> None:
        self.perms = class_permutations(num_classes, self.seed)

    def _permutations(self, num_classes: int, device: torch.device) -> Tensor:
        if self.perms is None:
            self.perms = class_permutations(num_classes, self.seed)
        if self.perms.shape[0] != num_classes:
            raise ValueError(
                f"kd_domain was set up for {self.perms.shape[0]} classes, got logits with {num_classes}"
            )
        if self.perms.device != device:
            self.perms = self.perms.to(device)
        return self.perms

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        p = _teacher_probs(teacher, self.temperature)
        perms = self._permutations(p.shape[-1], p.device)
        target = torch.zeros_like(p).scatter_(1, perms[batch.y], p)
        return soft_target_kl(student.logits, target, self.temperature)


@METHODS.register("kd_instance", kind="ablation", paper=TANG)
class KDInstance(KnowledgeTerm):
    """Instance knowledge destroyed, universe and domain knowledge kept (after Tang et al. 2020).

    Each sample's target is the mean teacher distribution (at temperature ``T``) of its true class, so every
    sample of a class gets the same target: class relationships survive, per-sample difficulty does not.

    ``q_i = mbar_{y_i}``,  ``L = T^2 * (1/N) sum_i KL(q_i || softmax(z_s,i / T))``

    ``mbar_c`` is a running mean over training batches: when class ``c`` appears with batch mean ``b_c``,
    ``mbar_c <- momentum * mbar_c + (1 - momentum) * b_c`` (``mbar_c = b_c`` the first time), then the
    updated value is used. With ``momentum=None`` the batch means ``b_c`` are used directly (a class seen
    once in a batch then gets its own teacher distribution back, which is why the running mean is the
    default). The means are updated only in training mode; they are saved with the task (a resumed run
    continues them exactly) and are not synchronized across DDP ranks.
    """

    name = "kd_instance"

    def __init__(self, temperature: float = 4.0, momentum: float | None = 0.9):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
        self.momentum = None if momentum is None else float(momentum)
        self.register_buffer("class_mean", None)
        self.register_buffer("seen", None)

    def setup(self, *, num_train: int, num_classes: int) -> None:
        self._reset(num_classes, torch.device("cpu"))

    def _reset(self, num_classes: int, device: torch.device) -> None:
        self.class_mean = torch.zeros(num_classes, num_classes, device=device)
        self.seen = torch.zeros(num_classes, dtype=torch.bool, device=device)

    @torch.no_grad()
    def class_targets(self, p: Tensor, y: Tensor) -> Tensor:
        """``C x C`` table whose row ``c`` is the target for class ``c`` (updating the running means)."""
        c = p.shape[-1]
        if self.class_mean is None:
            self._reset(c, p.device)
        if self.class_mean.shape[0] != c:
            raise ValueError(f"kd_instance was set up for {self.class_mean.shape[0]} classes, got {c}")
        if self.class_mean.device != p.device:
            self.class_mean, self.seen = self.class_mean.to(p.device), self.seen.to(p.device)
        counts = torch.bincount(y, minlength=c)
        present = counts > 0
        batch_mean = torch.zeros(c, c, device=p.device).index_add_(0, y, p) / counts.clamp_min(1)[:, None]
        if self.momentum is None:
            return batch_mean
        if self.training:
            m = self.momentum
            blended = torch.where(self.seen[:, None], m * self.class_mean + (1 - m) * batch_mean, batch_mean)
            self.class_mean = torch.where(present[:, None], blended, self.class_mean)
            self.seen = self.seen | present
        return torch.where(self.seen[:, None], self.class_mean, batch_mean)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        p = _teacher_probs(teacher, self.temperature)
        target = self.class_targets(p, batch.y)[batch.y]
        return soft_target_kl(student.logits, target, self.temperature)


@METHODS.register("tf_kd", kind="ablation", paper=TFKD, needs_teacher=False)
class TfKD(KnowledgeTerm):
    """Teacher-free KD with a manually designed virtual teacher (Tf-KD_reg, Yuan et al. 2020).

    The virtual teacher puts probability ``a`` (``correct_prob``) on the true class and spreads the rest
    evenly: ``p^d(c) = a`` if ``c = y``, else ``(1 - a) / (C - 1)``. The paper's loss is
    ``L_reg = (1 - alpha) H(q, p) + alpha D_KL(p^d_T, p_T)``; this term is the KL part (combine it with
    ``ce``, weights ``1 - alpha`` and ``alpha``, in the objective). Two forms:

    * ``form: code`` (default), the authors' ``loss_kd_regularization`` (Teacher-free-Knowledge-Distillation,
      ``my_loss_function.py``): the target is ``softmax(p^d / T)`` (the probabilities used as logits), the
      student is at temperature 1, and ``nn.KLDivLoss()``'s default reduction averages over all ``N C``
      entries, times a hand-set ``multiplier``:

      ``L = multiplier * (1/(N C)) sum_{i,c} q_i(c) log( q_i(c) / softmax(z_s,i)(c) )``,  ``q = softmax(p^d / T)``

      so the authors' (``multiplier``, ``T``, ``alpha``) values mean the same here (pinned against their
      function in ``tests/test_reference_values.py``);
    * ``form: paper``: the formula with the usual softening on both sides, ``p^d_T = softmax(log p^d / T)``
      and ``p_T = softmax(z_s / T)``, ``L = T^2 (1/N) sum_i KL(p^d_T,i || p_T,i)`` (``multiplier`` is ignored).

    ``correct_prob`` defaults to the code's 0.99. No teacher is needed.
    """

    name = "tf_kd"
    needs_teacher = False

    def __init__(self, correct_prob: float = 0.99, temperature: float = 4.0, multiplier: float = 1.0,
                 form: str = "code"):
        super().__init__()
        if not 0.0 < correct_prob <= 1.0:
            raise ValueError(f"correct_prob must be in (0, 1], got {correct_prob}")
        if form not in ("code", "paper"):
            raise ValueError(f"form must be 'code' (the authors' code) or 'paper', got {form!r}")
        if not multiplier > 0:
            raise ValueError(f"multiplier must be > 0, got {multiplier}")
        self.correct_prob = float(correct_prob)
        self.temperature = _check_temperature(temperature)
        self.multiplier, self.form = float(multiplier), form

    def virtual_distribution(self, y: Tensor, num_classes: int) -> Tensor:
        """``N x C`` hand-made teacher ``p^d`` (not softened)."""
        a, c = self.correct_prob, num_classes
        if c == 1:
            return torch.ones(y.shape[0], 1, device=y.device)
        p = torch.full((y.shape[0], c), (1 - a) / (c - 1), device=y.device)
        return p.scatter_(1, y[:, None], a)

    def virtual_target(self, y: Tensor, num_classes: int) -> Tensor:
        """``N x C`` softened virtual-teacher distribution (``softmax(p^d / T)`` in the code form,
        ``softmax(log p^d / T)`` in the paper form)."""
        p = self.virtual_distribution(y, num_classes)
        if self.form == "code":
            return F.softmax(p / self.temperature, dim=-1)
        return F.softmax(torch.log(p) / self.temperature, dim=-1)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        target = self.virtual_target(batch.y, student.logits.shape[-1])
        if self.form == "paper":
            return soft_target_kl(student.logits, target, self.temperature)
        c = student.logits.shape[-1]
        return soft_target_kl(student.logits, target, 1.0) * (self.multiplier / c)
