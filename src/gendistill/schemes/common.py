"""Small pieces shared by the schemes: gradient reversal, label-only objectives, fresh copies, network splits."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..knowledge.base import Objective
from ..knowledge.response import CrossEntropy, kl_div_with_temperature
from ..models import reset_parameters


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward, ``-scale * grad`` backward (Ganin & Lempitsky 2015). Everything upstream of ``x``
    ascends the loss that everything downstream descends: a min-max game in one optimizer step."""
    return _GradReverse.apply(x, scale)


def label_objective(objective: Objective) -> Objective:
    """The objective's terms that need no teacher (``ce``, ``tf_kd`` ...); plain CE when it has none."""
    terms = [(t, w) for t, w in zip(objective.terms, objective.weights) if not t.needs_teacher]
    return Objective(terms or [(CrossEntropy(), 1.0)])


def teacher_objective(objective: Objective) -> Objective | None:
    """The objective's terms that read a teacher (``kd``, ``fitnet`` ...), or ``None`` when it has none."""
    terms = [(t, w) for t, w in zip(objective.terms, objective.weights) if t.needs_teacher]
    return Objective(terms) if terms else None


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with re-initialised parameters (drawn from the global, seeded RNG)."""
    other = copy.deepcopy(model)
    reset_parameters(other)
    for p in other.parameters():
        p.requires_grad_(True)
    return other.train()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """``-(1/N) sum_i sum_c q_i(c) log softmax(z_i)(c)`` for a target distribution ``q``."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def kl_to(student_logits: Tensor, target_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 (1/N) sum_i KL(softmax(t_i/T) || softmax(s_i/T))`` with the target detached."""
    return kl_div_with_temperature(student_logits, target_logits.detach(), temperature)


def stages(model: nn.Module) -> list[str]:
    """Names of the model's top-level children called ``layer*`` (the bundled CNNs and MLPs), in order."""
    return [n for n, _ in model.named_children() if n.startswith("layer")]


def split_at(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a network whose ``forward`` applies its children in order into ``trunk`` (children before
    ``name``) and ``head`` (``name`` and after). The two share the model's modules (no copies). The split is
    checked on a random input: ``head(trunk(x))`` must equal ``model(x)``."""
    names = [n for n, _ in model.named_children()]
    if name not in names:
        raise ConfigError(f"cannot split {type(model).__name__} at {name!r}; its children are {names}")
    i = names.index(name)
    children = list(model.children())
    trunk, head = nn.Sequential(*children[:i]), nn.Sequential(*children[i:])
    was = model.training
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, *input_shape)
        same = torch.allclose(head(trunk(x)), model(x), atol=1e-5)
    model.train(was)
    if not same:
        raise ConfigError(
            f"{type(model).__name__}'s forward does not apply its children in order, so it cannot be split "
            f"at {name!r}; use a bundled model (cnn1d, cnn2d, mlp) or an nn.Sequential"
        )
    return trunk, head


def pooled(features: Tensor) -> Tensor:
    """Global average over the spatial dims of ``(N, C, *S)``; vectors ``(N, D)`` are returned as they are."""
    return features.flatten(2).mean(-1) if features.ndim > 2 else features


def close_all(*objs) -> None:
    for o in objs:
        if o is not None and hasattr(o, "close"):
            o.close()


def split_for_branches(scheme: str, student: nn.Module, objective: Objective, teacher: object | None,
                       branch_at: str | None, input_shape: tuple[int, ...]) -> tuple[nn.Sequential, nn.Sequential]:
    """The checks and the split shared by the schemes that grow branches on a shared trunk (ONE, OKDDip): a
    teacher when the objective needs one, logit-based terms only, and ``(trunk, head)`` split at ``branch_at``
    (default: the student's last ``layer*`` child)."""
    if objective.needs_teacher and teacher is None:
        raise ConfigError(f"objective {objective.describe()} needs a teacher, but none was given")
    if objective.student_layers:
        raise ConfigError(f"{scheme}: feature-based terms are not supported (the branches share one trunk); "
                          "use logit-based terms")
    names = stages(student)
    branch_at = branch_at or (names[-1] if names else None)
    if branch_at is None:
        raise ConfigError(f"{scheme}: the student has no 'layer*' children; give branch_at, the child where "
                          "branches start")
    return split_at(student, branch_at, input_shape)


def trainable_teacher(scheme: str, teacher_init: nn.Module, lr: float,
                      optimizer: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A trainable copy of ``teacher_init`` and its own optimizer (Adam, or SGD with momentum 0.9), for the
    schemes whose teacher learns from the student's feedback (MPL, MetaDistil)."""
    net = copy.deepcopy(teacher_init).train()
    for p in net.parameters():
        p.requires_grad_(True)
    if optimizer == "adam":
        return net, torch.optim.Adam(net.parameters(), lr=lr)
    if optimizer == "sgd":
        return net, torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    raise ConfigError(f"{scheme}: teacher_optimizer must be 'adam' or 'sgd', got {optimizer!r}")
