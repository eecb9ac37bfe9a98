"""Fidelity and performance of policies: action agreement and KL on teacher- and student-visited states,
mean episode return with std and a 95% CI, parameters and inference time."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rollouts import greedy, rollout


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """``mean``, sample ``std`` and the half-width ``ci95`` of the t-interval (0 for one value)."""
    n = len(values)
    mean = float(sum(values) / n)
    if n < 2:
        return {"mean": mean, "std": 0.0, "ci95": 0.0}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy import stats

    return {"mean": mean, "std": std, "ci95": float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))}


def action_logprobs(outputs: Tensor, temperature: float) -> Tensor:
    """The action distribution a network's outputs stand for: ``log softmax(outputs / temperature)``."""
    return F.log_softmax(outputs.float() / temperature, -1)


def policy_fidelity(teacher_logp: Tensor, student_logp: Tensor) -> dict[str, float]:
    """``agreement`` of greedy actions and ``kl`` = KL(teacher || student), averaged over states."""
    agree = (teacher_logp.argmax(-1) == student_logp.argmax(-1)).float().mean().item()
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).clamp_min(0).mean().item()
    return {"agreement": agree, "kl": kl}


def inference_us(model: nn.Module, example: Tensor, repeats: int = 200) -> float:
    """Microseconds per single-state forward pass (CPU, no grad, median of ``repeats``)."""
    x = example[:1].cpu()
    model = model.cpu()
    times = []
    with torch.no_grad():
        for _ in range(10):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6


def evaluate_policy(model: nn.Module, teacher: nn.Module | None, env_id: str, *, episodes: int, seed: int,
                    temperature: float, max_steps: int | None = None) -> dict[str, Any]:
    """Greedy episodes of ``model``: return mean/std/CI, and on the states it visited the agreement and KL of
    its action distribution with ``teacher``'s (the student-visited side of the DAgger gap)."""
    model = model.cpu().eval()
    got = rollout(greedy(model), env_id, episodes=episodes, seed=seed, max_steps=max_steps)
    ret = mean_ci(got.returns)
    out: dict[str, Any] = {"return": ret["mean"], "return_std": ret["std"], "return_ci95": ret["ci95"],
                           "episode_length": float(sum(got.lengths) / len(got.lengths))}
    if teacher is not None:
        with torch.no_grad():
            fid = policy_fidelity(action_logprobs(teacher.cpu()(got.states), temperature),
                                  action_logprobs(model(got.states), temperature))
        out["agreement_student_states"], out["kl_student_states"] = fid["agreement"], fid["kl"]
    return out
