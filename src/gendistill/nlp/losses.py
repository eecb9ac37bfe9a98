"""Token-level losses for sequence models, computed over the real positions (``batch.y != -100``) in chunks.

Every term reads the student's logits ``(N, T, V)`` and the teacher's :class:`~gendistill.knowledge.Outputs`:
either full logits ``(N, T, V)`` or a top-k cache entry (``logits`` = the teacher's top-k log-probabilities
``(N, T, k)``, ``features["topk_index"]`` their token ids). With a top-k teacher both distributions are
*coarsened* to ``k + 1`` buckets -- the k cached tokens and the rest -- and the divergence is the exact
divergence between the coarsened distributions (temperature, when not 1, is applied to the buckets).

Positions are flattened and processed ``chunk`` at a time; each chunk's gradient is taken in the forward pass and
written into one buffer the size of the student's logits, so the ``(positions, V)`` intermediates (softmaxes,
differences, their gradients) of only one chunk are alive at any time; the value and the gradient equal the
plain computation's (tests check both).

Divergences per position, with p = teacher, q = student (both at temperature T):

=============  =========================================================================================
term           formula
=============  =========================================================================================
word_kd        ``T^2 * KL(p || q) = T^2 * sum_v p_v (log p_v - log q_v)``       Kim & Rush 2016 (word-level KD)
reverse_kl     ``T^2 * KL(q || p)``                                           Gu et al. 2024 (MiniLLM)
gkd_jsd        ``beta KL(p || m) + (1 - beta) KL(q || m)``, ``m = beta p + (1 - beta) q``
                                                                              Agarwal et al. 2024 (GKD)
tv             ``1/2 sum_v |p_v - q_v|``                                      (total variation; Wen et al. 2023)
token_ce       ``-log q_{y_t}`` at every real position (labels; optional label smoothing)
=============  =========================================================================================

Each term is the mean over real positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..knowledge.base import Batch, KnowledgeTerm, Outputs
from ..registry import METHODS

Divergence = Callable[[Tensor, Tensor], Tensor]  # (student logp, teacher logp) rows -> per-row value


def forward_kl(s: Tensor, t: Tensor) -> Tensor:
    return (t.exp() * (t - s)).sum(-1)


def reverse_kl(s: Tensor, t: Tensor) -> Tensor:
    return (s.exp() * (s - t)).sum(-1)


def jsd(beta: float) -> Divergence:
    """Generalized JSD of GKD: ``beta KL(p || m) + (1 - beta) KL(q || m)``, ``m = beta p + (1 - beta) q``.
    ``0 < beta < 1``; ``beta = 0.5`` is the symmetric Jensen-Shannon divergence."""

    def f(s: Tensor, t: Tensor) -> Tensor:
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), 0)
        return beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)

    return f


def total_variation(s: Tensor, t: Tensor) -> Tensor:
    return 0.5 * (s.exp() - t.exp()).abs().sum(-1)


def _tail(logp: Tensor) -> Tensor:
    """log(1 - sum exp(logp)) over the last dim, kept finite."""
    return torch.log1p(-logp.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))


def _rows(s: Tensor, t: Tensor, idx: Tensor | None, T: float, div: Divergence) -> Tensor:
    """The divergence per position of student logits ``s`` and teacher logits/log-probs ``t``."""
    if idx is None:
        return div(F.log_softmax(s.float() / T, -1), F.log_softmax(t.float() / T, -1))
    s_all = F.log_softmax(s.float(), -1)
    s_b = torch.cat([s_all.gather(-1, idx), _tail(s_all.gather(-1, idx))], -1)
    t_b = torch.cat([t.float(), _tail(t.float())], -1)
    if T != 1.0:
        s_b, t_b = F.log_softmax(s_b / T, -1), F.log_softmax(t_b / T, -1)
    return div(s_b, t_b)


class _ChunkedDivergence(torch.autograd.Function):
    """Sum over real rows of ``div``, computed ``chunk`` rows at a time; the gradient of each chunk is taken in
    the forward pass and written into one ``(rows, V)`` buffer, so no full-size intermediate (softmaxes,
    differences, their gradients) ever exists -- only the student's own gradient."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, index: Tensor | None, real: Tensor, temperature: float, div: Divergence,
                chunk: int) -> Tensor:
        grad = torch.zeros_like(s, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        total = torch.zeros((), dtype=torch.float32, device=s.device)
        for i in range(0, s.shape[0], chunk):
            m = real[i : i + chunk]
            if not bool(m.any()):
                continue
            rows_s, rows_t = s[i : i + chunk][m], t[i : i + chunk][m]
            rows_i = None if index is None else index[i : i + chunk][m]
            if grad is None:
                total += _rows(rows_s, rows_t, rows_i, temperature, div).sum()
                continue
            with torch.enable_grad():
                x = rows_s.detach().requires_grad_()
                value = _rows(x, rows_t, rows_i, temperature, div).sum()
                (g,) = torch.autograd.grad(value, x)
            grad[i : i + chunk][m] = g.float()
            total += value.detach()
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        ctx.dtype = s.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.dtype), None, None, None, None, None, None


def chunked_divergence(student: Tensor, teacher: Tensor, real: Tensor, div: Divergence, *, temperature: float = 1.0,
                       index: Tensor | None = None, chunk: int = 1024) -> Tensor:
    """Mean over real positions of ``div`` between student and teacher token distributions, ``chunk``
    positions at a time: memory beyond the student's gradient is one chunk's, in the forward and backward pass."""
    v = student.shape[-1]
    s, t, r = student.reshape(-1, v), teacher.detach().reshape(-1, teacher.shape[-1]), real.reshape(-1)
    idx = None if index is None else index.reshape(-1, index.shape[-1])
    n = int(r.sum())
    if n == 0:
        return student.sum() * 0.0
    return _ChunkedDivergence.apply(s, t, idx, r, temperature, div, chunk) / n


class _TokenDivergence(KnowledgeTerm):
    scale_t2 = False

    def __init__(self, temperature: float = 1.0, chunk: int = 1024):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.T, self.chunk = float(temperature), int(chunk)

    def divergence(self) -> Divergence:  # pragma: no cover
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        real = batch.y != -100
        value = chunked_divergence(student.logits, teacher.logits, real, self.divergence(), temperature=self.T,
                                   index=teacher.features.get("topk_index"), chunk=self.chunk)
        return value * self.T**2 if self.scale_t2 else value


@METHODS.register("word_kd", kind="sequence", paper="Kim & Rush 2016, Sequence-Level Knowledge Distillation (arXiv:1606.07947)")
class WordKD(_TokenDivergence):
    """Word-level KD: ``T^2 * KL(p_T || q_T)`` per target position, mean over real positions (Kim & Rush 2016;
    forward KL as in Hinton et al. 2015)."""

    name = "word_kd"
    scale_t2 = True

    def divergence(self) -> Divergence:
        return forward_kl


@METHODS.register("reverse_kl", kind="sequence", paper="Gu et al. 2024, MiniLLM (arXiv:2306.08543)")
class ReverseKL(_TokenDivergence):
    """Reverse KL per position: ``T^2 * KL(q_T || p_T)`` (mode-seeking; MiniLLM, Gu et al. 2024)."""

    name = "reverse_kl"
    scale_t2 = True

    def divergence(self) -> Divergence:
        return reverse_kl


@METHODS.register("gkd_jsd", kind="sequence", paper="Agarwal et al. 2024, On-Policy Distillation of Language Models (GKD, arXiv:2306.13649)")
class GeneralizedJSD(_TokenDivergence):
    """Generalized JSD of GKD (Agarwal et al. 2024): ``beta KL(p || m) + (1 - beta) KL(q || m)``,
    ``m = beta p + (1 - beta) q``, per position."""

    name = "gkd_jsd"

    def __init__(self, beta: float = 0.5, temperature: float = 1.0, chunk: int = 1024):
        super().__init__(temperature, chunk)
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        self.beta = float(beta)

    def divergence(self) -> Divergence:
        return jsd(self.beta)


@METHODS.register("tv", kind="sequence", paper="Wen et al. 2023, f-Divergence Minimization for Sequence-Level KD (arXiv:2307.15190)")
class TotalVariation(_TokenDivergence):
    """Total variation distance per position: ``1/2 sum_v |p_v - q_v|`` (Wen et al. 2023, f-distill)."""

    name = "tv"

    def divergence(self) -> Divergence:
        return total_variation


@METHODS.register("token_ce", kind="sequence", paper="(labels) token cross-entropy; Vaswani et al. 2017")
class TokenCE(KnowledgeTerm):
    """Cross-entropy of the labels at every real position: ``-log q_{y_t}``, mean over ``y != -100``."""

    name = "token_ce"
    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.smoothing = float(label_smoothing)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        z = student.logits
        return F.cross_entropy(z.reshape(-1, z.shape[-1]).float(), batch.y.reshape(-1), ignore_index=-100,
                               label_smoothing=self.smoothing)
