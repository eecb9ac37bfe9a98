"""Evaluation metrics, defined once and used by the trainer, the lineage, the CLI and the report.

All functions take logits (``N x C``) and return Python floats. Probabilities are ``p = softmax(z)`` at
temperature 1. An ensemble's prediction is the mean of its members' probabilities (:func:`ensemble_logits`
returns ``log`` of that mean, so it can be passed anywhere logits are expected).

============================  =====================================================================
metric                        formula
============================  =====================================================================
accuracy                      ``(1/N) sum_i 1{argmax_c p_i(c) = y_i}``
nll                           ``-(1/N) sum_i log p_i(y_i)``
brier                         ``(1/N) sum_i sum_c (p_i(c) - 1{c = y_i})^2``
ece (15 bins)                 ``sum_b (|B_b|/N) |acc(B_b) - conf(B_b)|`` with ``conf = max_c p_i(c)``, equal-width bins
agreement (top-1)             ``(1/N) sum_i 1{argmax p_t,i = argmax p_s,i}``   (Stanton et al. 2021)
kl_teacher_student            ``(1/N) sum_i KL(p_t,i || p_s,i) = (1/N) sum_i sum_c p_t,i(c) (log p_t,i(c) - log p_s,i(c))``
============================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ECE_BINS = 15


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


def nll(logits: Tensor, y: Tensor) -> float:
    return F.cross_entropy(logits.float(), y).item()


def brier(logits: Tensor, y: Tensor) -> float:
    p = logits.float().softmax(-1)
    onehot = F.one_hot(y, p.shape[-1]).float()
    return (p - onehot).pow(2).sum(-1).mean().item()


def ece(logits: Tensor, y: Tensor, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins (torchmetrics, L1 norm)."""
    # imported here: torchmetrics takes seconds to import (more with transformers installed), which every CLI
    # command would otherwise pay before doing anything
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = logits.float().softmax(-1)
    return multiclass_calibration_error(p, y, num_classes=p.shape[-1], n_bins=n_bins, norm="l1").item()


def agreement(teacher_logits: Tensor, student_logits: Tensor) -> float:
    return (teacher_logits.argmax(-1) == student_logits.argmax(-1)).float().mean().item()


def kl_teacher_student(teacher_logits: Tensor, student_logits: Tensor) -> float:
    log_pt = F.log_softmax(teacher_logits.float(), -1)
    log_ps = F.log_softmax(student_logits.float(), -1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True).clamp_min(0.0).item()


def ensemble_logits(members: Sequence[Tensor]) -> Tensor:
    """``log( (1/M) sum_m softmax(z_m) )``: the logits of the mean-probability ensemble."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    probs = torch.stack([m.float().softmax(-1) for m in members]).mean(0)
    return probs.clamp_min(1e-12).log()


def classification_metrics(logits: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of one model on one split."""
    return {"acc": accuracy(logits, y), "nll": nll(logits, y), "brier": brier(logits, y), "ece": ece(logits, y)}


def fidelity_metrics(teacher_logits: Tensor, student_logits: Tensor) -> dict[str, float]:
    """Top-1 agreement and KL(teacher || student) at temperature 1."""
    return {
        "agreement": agreement(teacher_logits, student_logits),
        "kl": kl_teacher_student(teacher_logits, student_logits),
    }


def reliability_bins(logits: Tensor, y: Tensor, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per-bin confidence, accuracy and count, binned exactly as :func:`ece`.

    ``conf_i = max_c softmax(z_i)(c)`` (float32, as :func:`ece`) falls in bin ``b`` when
    ``b/n <= conf_i < (b+1)/n`` (equal-width bins, ``torchmetrics`` binning). ``torchmetrics`` keeps samples
    whose confidence is exactly 1.0 in a bin of their own, so the result has ``n_bins + 1`` entries and the
    last one is ``[1, 1]``; it is empty unless a softmax saturates in float32. With these bins

    ``ECE = sum_b (count_b / N) |bin_acc_b - bin_conf_b|``  (``analysis.plots.ece_from_bins``)

    reproduces :func:`ece`. Empty bins have ``bin_conf = bin_acc = 0``.
    Returns ``{"bin_lower", "bin_upper", "bin_conf", "bin_acc", "bin_count"}`` as lists.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = logits.detach().float().softmax(-1)
    conf, pred = p.max(-1)
    correct = (pred == y.to(pred.device)).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    idx = torch.bucketize(conf, edges, right=True) - 1
    k = n_bins + 1
    count = torch.zeros(k, dtype=torch.float64, device=conf.device).index_add_(
        0, idx, torch.ones_like(correct)
    )
    conf_sum = torch.zeros_like(count).index_add_(0, idx, conf.double())
    acc_sum = torch.zeros_like(count).index_add_(0, idx, correct)
    safe = count.clamp_min(1)
    lower = edges.double().tolist()
    return {
        "bin_lower": lower,
        "bin_upper": lower[1:] + [1.0],
        "bin_conf": (conf_sum / safe).tolist(),
        "bin_acc": (acc_sum / safe).tolist(),
        "bin_count": [int(c) for c in count.tolist()],
    }
