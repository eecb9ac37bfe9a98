"""Multi-task policy distillation (Rusu et al. 2016, Sec. 4.2 / 5.3): several single-task teachers into one
student with a shared trunk and one output head per task.

Observation sizes differ between environments, so each task also has its own input layer; the trunk in
between is shared. Training goes through the one :class:`~gendistill.engine.trainer.Trainer`: a
:class:`MultiTaskSource` interleaves batches from each task's replay memory of teacher states (one task per
batch, round robin, as the paper's per-task replay memories), and :class:`MultiTaskDistill` applies the
objective (``policy_kl`` at tau = 0.01 by default) between the task's head and the task's teacher.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.settings import TrainConfig, parse_train
from ..engine.task import Task
from ..engine.trainer import Trainer, seed_everything
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from .envs import make_env, space_dims
from .losses import PolicyKL
from .metrics import evaluate_policy, mean_ci
from .rollouts import greedy, rollout


@dataclass
class TaskBatch(Batch):
    """A batch of one task's states."""

    task: int = 0


class MultiTaskPolicy(nn.Module):
    """``input_k -> ReLU -> [Linear -> ReLU] x depth (shared) -> head_k`` for task ``k``."""

    def __init__(self, obs_dims: Sequence[int], n_actions: Sequence[int], width: int = 64, depth: int = 1):
        super().__init__()
        self.inputs = nn.ModuleList(nn.Linear(d, width) for d in obs_dims)
        self.trunk = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])
        self.heads = nn.ModuleList(nn.Linear(width, a) for a in n_actions)

    def forward(self, x: Tensor, task: int = 0) -> Tensor:
        return self.heads[task](self.trunk(torch.relu(self.inputs[task](x.flatten(1)))))


class TaskView(nn.Module):
    """One task's policy of a multi-task student, as a plain module (for rollouts and metrics)."""

    def __init__(self, model: MultiTaskPolicy, task: int):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, self.task)


class MultiTaskSource:
    """Round-robin batches over the tasks' memories, each shuffled with its own seeded generator."""

    memory_format = None

    def __init__(self, memories: Sequence[Tensor], labels: Sequence[Tensor], batch_size: int, seed: int,
                 device: torch.device):
        self.memories, self.labels = [m.float() for m in memories], list(labels)
        self.batch_size, self.device = batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.per_task = min(math.ceil(len(m) / batch_size) for m in self.memories)
        self.num_samples = self.per_task * batch_size * len(self.memories)

    def __len__(self) -> int:
        return self.per_task * len(self.memories)

    def __iter__(self) -> Iterator[TaskBatch]:
        orders = [torch.randperm(len(m), generator=self.generator) for m in self.memories]
        for i in range(self.per_task):
            for k, (m, y) in enumerate(zip(self.memories, self.labels)):
                idx = orders[k][i * self.batch_size : (i + 1) * self.batch_size]
                yield TaskBatch(m[idx].to(self.device), y[idx].to(self.device), idx.to(self.device), task=k)

    def example(self, n: int) -> TaskBatch:
        return TaskBatch(self.memories[0][:n].to(self.device), self.labels[0][:n].to(self.device), task=0)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class MultiTaskDistill(Task):
    """``objective(student head k, teacher k)`` on a batch of task ``k``'s states."""

    def __init__(self, student: MultiTaskPolicy, teachers: Sequence[nn.Module], objective: Objective):
        super().__init__()
        self.student, self.objective = student, objective
        object.__setattr__(self, "teachers", list(teachers))  # frozen, never parameters of the task

    @property
    def eval_model(self) -> nn.Module:
        return self.student

    def teacher_models(self) -> list[nn.Module]:
        return self.teachers

    def forward(self, batch: TaskBatch) -> dict[str, Tensor]:
        with torch.no_grad():
            t = self.teachers[batch.task](batch.x)
        return self.objective(Outputs(self.student(batch.x, batch.task)), Outputs(t), batch)


def distill_multitask(envs: Sequence[str], teachers: Sequence[nn.Module], *, states: int = 5000,
                      width: int = 64, depth: int = 1, train: TrainConfig | dict[str, Any] | None = None,
                      objective: Objective | None = None, eval_episodes: int = 10, seed: int = 0,
                      out: str | Path | None = None, progress: str = "off") -> dict[str, Any]:
    """Distil one single-task teacher per environment into one multi-task student; per task, the teacher's
    and the student's greedy return (mean, CI) and the student's agreement with its teacher on held-out
    teacher-visited states. Parameters of the student vs all teachers together."""
    if len(envs) != len(teachers) or not envs:
        raise ConfigError("give one teacher per environment")
    cfg = parse_train(train)
    dims, acts = [], []
    for env_id, teacher in zip(envs, teachers):
        obs, n = space_dims(make_env(env_id))
        with torch.no_grad():
            out_dim = teacher(torch.zeros(1, *obs)).shape[-1]
        if out_dim != n:
            raise ConfigError(f"the teacher for {env_id} has {out_dim} actions but {env_id} has {n}")
        dims.append(math.prod(obs))
        acts.append(n)
    memories = [rollout(greedy(t), e, steps=states, seed=seed).states for e, t in zip(envs, teachers)]
    labels = [greedy(t)(m) for t, m in zip(teachers, memories)]
    seed_everything(seed)
    student = MultiTaskPolicy(dims, acts, width, depth)
    task = MultiTaskDistill(student, teachers, objective or Objective([(PolicyKL(0.01), 1.0)]))
    trainer = Trainer(cfg, run_dir=out, progress=progress, desc="multitask")
    source = MultiTaskSource(memories, labels, cfg.batch_size, seed, trainer.device)
    history = trainer.fit(task, source, num_classes=max(acts))
    student.cpu().eval()
    rows = []
    for k, (env_id, teacher) in enumerate(zip(envs, teachers)):
        view = TaskView(student, k)
        held = rollout(greedy(teacher), env_id, episodes=2, seed=seed + 1_000_000).states
        agree = (greedy(view)(held) == greedy(teacher)(held)).float().mean().item()
        t_eval = evaluate_policy(teacher, None, env_id, episodes=eval_episodes, seed=seed + 2_000_000, temperature=1.0)
        s_eval = evaluate_policy(view, None, env_id, episodes=eval_episodes, seed=seed + 2_000_000, temperature=1.0)
        rows.append({"env": env_id, "teacher_return": t_eval["return"], "teacher_ci95": t_eval["return_ci95"],
                     "student_return": s_eval["return"], "student_ci95": s_eval["return_ci95"],
                     "agreement": agree})
    return {"tasks": rows, "student_params": sum(p.numel() for p in student.parameters()),
            "teacher_params": sum(p.numel() for t in teachers for p in t.parameters()),
            "final_loss": history[-1]["train_loss"]}


__all__ = ["MultiTaskPolicy", "MultiTaskSource", "MultiTaskDistill", "TaskView", "distill_multitask", "mean_ci"]
