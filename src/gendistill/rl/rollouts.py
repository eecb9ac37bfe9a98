"""Rollouts, the replay memory of teacher states, and DAgger mixing (Ross, Gordon & Bagnell 2011).

The training batches of a policy-distillation generation come from a :class:`DAggerSource` (the trainer's
``BatchSource``): a memory that starts with the states the teacher visited (its replay memory, Rusu et al.
2016) and, from epoch ``dagger.start`` on, grows with states visited by the mixture policy
``pi_i = beta_i * teacher + (1 - beta_i) * student``, ``beta_i = beta0 * decay^(i - start)`` (``i`` the epoch),
each relabelled by the teacher: the task asks the generation's teacher for its outputs on every state it
trains on, so a student-visited state gets the teacher's targets like any other. Every epoch draws the same
number of states (the first memory's size) uniformly without replacement from the aggregated memory, so the
learning-rate schedule sees a fixed epoch length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..knowledge.base import Batch
from .envs import make_env

Policy = Callable[[Tensor], Tensor]  # (N, *obs) states -> (N,) actions


@dataclass
class Rollouts:
    """States visited (in order), and each episode's return and length."""

    states: Tensor
    returns: list[float]
    lengths: list[int]


def greedy(model: nn.Module) -> Policy:
    """``argmax_a model(s)_a`` (Q-values or action logits)."""
    def act(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x).argmax(-1)
    return act


def rollout(policy: Policy, env_id: str, *, episodes: int | None = None, steps: int | None = None, seed: int = 0,
            epsilon: float = 0.0, max_steps: int | None = None) -> Rollouts:
    """Run ``policy`` for ``episodes`` whole episodes or until ``steps`` states were visited; episode ``e`` is
    reset with seed ``seed + e``; with probability ``epsilon`` a uniformly random action is taken (seeded)."""
    if (episodes is None) == (steps is None):
        raise ValueError("give episodes or steps")
    env = make_env(env_id, seed=seed, max_steps=max_steps)
    rng = np.random.default_rng(seed)
    n_actions = env.action_space.n
    states: list[np.ndarray] = []
    returns: list[float] = []
    lengths: list[int] = []
    e = 0
    while (episodes is not None and e < episodes) or (steps is not None and len(states) < steps):
        obs, _ = env.reset(seed=seed + e)
        total, length, done = 0.0, 0, False
        while not done:
            states.append(np.asarray(obs, dtype=np.float32))
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                action = int(policy(torch.as_tensor(states[-1])[None])[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
            if steps is not None and len(states) >= steps:
                break
        if done:
            returns.append(total)
            lengths.append(length)
        e += 1
    env.close()
    return Rollouts(torch.from_numpy(np.stack(states)), returns, lengths)


def mixture(teacher: Policy, student: Policy, beta: float, seed: int) -> Policy:
    """Per state: the teacher's action with probability ``beta``, else the student's (seeded)."""
    rng = np.random.default_rng(seed)

    def act(x: Tensor) -> Tensor:
        return teacher(x) if rng.random() < beta else student(x)
    return act


@dataclass
class DAggerSchedule:
    """From epoch ``start`` on, ``steps`` new states per epoch from the mixture policy with teacher
    probability ``beta_i = beta0 * decay^(i - start)``; ``steps = 0`` turns DAgger off (teacher states only)."""

    steps: int = 0
    start: int = 2
    beta0: float = 0.5
    decay: float = 0.5

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> DAggerSchedule:
        o = dict(options or {})
        unknown = set(o) - {"steps", "start", "beta0", "decay"}
        if unknown:
            raise ConfigError(f"unknown dagger option(s) {sorted(unknown)}; known: steps, start, beta0, decay")
        s = cls(int(o.get("steps", 0)), int(o.get("start", 2)), float(o.get("beta0", 0.5)), float(o.get("decay", 0.5)))
        if s.steps < 0 or s.start < 1 or not 0 <= s.beta0 <= 1 or not 0 <= s.decay <= 1:
            raise ConfigError("dagger needs steps >= 0, start >= 1, beta0 and decay in [0, 1]")
        return s

    def beta(self, epoch: int) -> float | None:
        """The teacher's share of the mixture policy in ``epoch``, or ``None`` when no states are added."""
        if self.steps == 0 or epoch < self.start:
            return None
        return self.beta0 * self.decay ** (epoch - self.start)


class DAggerSource:
    """The replay memory of teacher states, aggregated with relabelled student states (module docstring).

    ``labels`` are the original teacher's greedy actions (``batch.y``: the trainer's ``train_acc`` is the
    agreement with it on the states trained on). The student is bound by the trainer (``bind``)."""

    memory_format = None

    def __init__(self, states: Tensor, teacher: nn.Module, env_id: str, batch_size: int, *, seed: int,
                 device: torch.device, schedule: DAggerSchedule, max_steps: int | None = None):
        self.states = states.float().cpu()
        self.teacher = teacher
        self.labels = greedy(teacher)(self.states)
        self.env_id, self.batch_size, self.seed, self.device = env_id, batch_size, seed, device
        self.schedule, self.max_steps = schedule, max_steps
        self.num_samples = len(states)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.student: nn.Module | None = None
        self.added: list[dict[str, float]] = []  # per DAgger epoch: beta, states added, mixture return

    def bind(self, model: nn.Module) -> None:
        self.student = model

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _aggregate(self) -> None:
        beta = self.schedule.beta(self.epoch)
        if beta is None or self.student is None:
            return
        was = self.student.training
        self.student.eval()
        dev = next(self.student.parameters()).device
        student = greedy(self.student)
        pol = mixture(greedy(self.teacher), lambda x: student(x.to(dev)).cpu(), beta, seed=self.seed * 7919 + self.epoch)
        got = rollout(pol, self.env_id, steps=self.schedule.steps, seed=self.seed * 100_003 + self.epoch * 1009,
                      max_steps=self.max_steps)
        self.student.train(was)
        self.states = torch.cat([self.states, got.states])
        self.labels = torch.cat([self.labels, greedy(self.teacher)(got.states)])
        self.added.append({"epoch": self.epoch, "beta": beta, "states": len(got.states),
                           "mixture_return": float(np.mean(got.returns)) if got.returns else float("nan")})

    def __iter__(self) -> Iterator[Batch]:
        self.epoch += 1
        self._aggregate()
        order = torch.randperm(len(self.states), generator=self.generator)[: self.num_samples]
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield Batch(self.states[idx].to(self.device), self.labels[idx].to(self.device), idx.to(self.device))

    def example(self, n: int) -> Batch:
        idx = torch.arange(min(n, len(self.states)))
        return Batch(self.states[idx].to(self.device), self.labels[idx].to(self.device), idx.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "states": self.states.clone(),
                "labels": self.labels.clone(), "added": list(self.added)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.states, self.labels = state["states"], state["labels"]
        self.added = list(state["added"])
