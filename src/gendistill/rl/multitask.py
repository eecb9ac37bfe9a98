"""Multi-task policy distillation (Rusu et al. 2016, Sec. 4.2 / 5.3): several single-task teachers into one
student with a shared trunk and one output head per task.

Observation sizes differ between environments, so each task also has its own input layer; the trunk in
between is shared. Training goes through the one :class:`~gendistill.engine.trainer.Trainer`: a
:class:`MultiTaskSource` interleaves batches from each task's replay memory of teacher states (one task per
batch, round robin, as the paper's per-task replay memories), and :class:`MultiTaskDistill` applies the
objective (``policy_kl`` at tau = 0.01 by default) between the task's head and the task's teacher.

Through ``gendistill run`` (the ``gym_multitask`` dataset, the ``rl_multitask`` domain, the ``multitask_mlp``
model): every task's states are **packed** into one row ``[k, s_1 .. s_d, 0 .. 0]`` (the task id, then the
flattened observation zero-padded to the widest task), so the teachers become one generation-0 module
(:class:`MultiTaskTeacher`) and the student one module, and the one lineage, trainer and run directory apply
unchanged. Outputs are padded to the most actions with :data:`MASKED` (-1e4), which both sides share, so the
padded actions carry probability 0 and add nothing to the KL, MSE or NLL. Batches draw states from all tasks'
memories at once (the Python path above goes round robin, one task per batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.progress import log
from ..engine.settings import TrainConfig, parse_train
from ..engine.task import Task
from ..engine.trainer import Trainer, seed_everything
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective, Outputs
from ..registry import DATASETS, MODELS
from .data import MultiTaskInfo, PolicyBundle, StateSplit
from .envs import check_env_id, make_env, space_dims
from .losses import PolicyKL
from .metrics import evaluate_policy, mean_ci
from .rollouts import greedy, rollout
from .teachers import load_or_train, teacher_spec


@dataclass
class TaskBatch(Batch):
    """A batch of one task's states."""

    task: int = 0


MASKED = -1e4  # the output of an action a task does not have, in packed outputs


def pack(states: Tensor, task: int, width: int) -> Tensor:
    """``[task, flattened state, zeros]`` rows of ``1 + width`` columns."""
    flat = states.float().flatten(1)
    out = torch.zeros(len(flat), 1 + width, dtype=torch.float32, device=flat.device)
    out[:, 0] = task
    out[:, 1 : 1 + flat.shape[1]] = flat
    return out


def dispatch(x: Tensor, nets: Sequence[Any], obs_dims: Sequence[int], n_actions: Sequence[int]) -> Tensor:
    """Packed rows ``x`` through ``nets[k]`` for the rows of task ``k``, outputs padded with :data:`MASKED`."""
    task = x[:, 0].round().long()
    out = x.new_full((len(x), max(n_actions)), MASKED)
    for k, (net, d, a) in enumerate(zip(nets, obs_dims, n_actions)):
        rows = (task == k).nonzero().flatten()
        if len(rows):
            out[rows, :a] = net(x[rows, 1 : 1 + d]).to(out.dtype)
    return out


class MultiTaskPolicy(nn.Module):
    """``input_k -> ReLU -> [Linear -> ReLU] x depth (shared) -> head_k`` for task ``k``; called without
    ``task``, ``x`` holds packed rows (:func:`pack`) of any tasks."""

    def __init__(self, obs_dims: Sequence[int], n_actions: Sequence[int], width: int = 64, depth: int = 1):
        super().__init__()
        self.obs_dims, self.n_actions = list(obs_dims), list(n_actions)
        self.inputs = nn.ModuleList(nn.Linear(d, width) for d in obs_dims)
        self.trunk = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])
        self.heads = nn.ModuleList(nn.Linear(width, a) for a in n_actions)

    def forward(self, x: Tensor, task: int | None = None) -> Tensor:
        if task is None:
            nets = [lambda s, k=k: self(s, k) for k in range(len(self.heads))]
            return dispatch(x, nets, self.obs_dims, self.n_actions)
        return self.heads[task](self.trunk(torch.relu(self.inputs[task](x.flatten(1)))))


class MultiTaskTeacher(nn.Module):
    """Single-task teachers as one module on packed rows (generation 0 of a multi-task lineage)."""

    def __init__(self, teachers: Sequence[nn.Module], obs_shapes: Sequence[tuple[int, ...]],
                 n_actions: Sequence[int]):
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.obs_shapes = [tuple(s) for s in obs_shapes]
        self.obs_dims, self.n_actions = [math.prod(s) for s in self.obs_shapes], list(n_actions)

    def forward(self, x: Tensor) -> Tensor:
        nets = [lambda s, t=t, shape=shape: t(s.reshape(len(s), *shape)) for t, shape in
                zip(self.teachers, self.obs_shapes)]
        return dispatch(x, nets, self.obs_dims, self.n_actions)


class TaskSlice(nn.Module):
    """Task ``k`` of a packed-input model as a policy on that environment's raw states (its ``n`` actions)."""

    def __init__(self, model: nn.Module, task: int, width: int, n_actions: int):
        super().__init__()
        self.model, self.task, self.width, self.n = model, task, width, n_actions

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pack(x, self.task, self.width))[:, : self.n]


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


@MODELS.register("multitask_mlp", input_rank=1, domain="rl_multitask", summary="rl multi-task student: per-task input layer and head, shared trunk")
def multitask_mlp(num_classes: int, input_shape: tuple[int, ...], width: int = 64, depth: int = 1,
                  layout: list[list[int]] | None = None) -> MultiTaskPolicy:
    """``layout`` (``[[obs_dim, n_actions], ...]`` per task) is filled in by the ``rl_multitask`` domain."""
    if not layout:
        raise ValueError("multitask_mlp needs the gym_multitask dataset (data: {name: gym_multitask, tasks: ...})")
    if width < 1 or depth < 1:
        raise ValueError(f"multitask_mlp needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
    return MultiTaskPolicy([d for d, _ in layout], [a for _, a in layout], width, depth)


@DATASETS.register("gym_multitask",
                   summary="rl: several teachers' visited states, packed with a task id (teachers = gen0)")
def gym_multitask(tasks: list[dict[str, Any]] | None = None, states: int = 5000, test_episodes: int = 5,
                  eval_episodes: int = 10, seed: int = 0, temperature: float = 1.0, max_steps: int | None = None,
                  root: str | None = None) -> PolicyBundle:
    """``tasks: [{env: CartPole-v1, teacher: {...}}, {env: minatar/breakout, teacher: {...}}]``: each teacher
    trained or loaded as in the ``gym`` dataset, ``states`` of its greedy states per task in the training
    memory, ``test_episodes`` held-out episodes per task; rows packed (:func:`pack`)."""
    if not tasks or not isinstance(tasks, list) or len(tasks) < 2:
        raise ConfigError("data.tasks needs at least two tasks: [{env: CartPole-v1, teacher: {...}}, ...]")
    if states < 1 or test_episodes < 1 or eval_episodes < 1 or temperature <= 0:
        raise ConfigError("data.states, data.test_episodes, data.eval_episodes must be >= 1 and temperature > 0")
    envs, shapes, acts, teachers = [], [], [], []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or set(t) - {"env", "teacher"} or "env" not in t:
            raise ConfigError(f"data.tasks[{i}] must be {{env: <id>, teacher: {{...}}}}, got {t!r}")
        check_env_id(t["env"])
        shape, n = space_dims(make_env(t["env"]))
        model, _ = load_or_train(teacher_spec(t["env"], t.get("teacher")), log=lambda m: log(m, "auto"))
        envs.append(t["env"])
        shapes.append(shape)
        acts.append(n)
        teachers.append(model.eval())
    if len(set(envs)) != len(envs):
        raise ConfigError(f"data.tasks names an environment twice: {envs}")
    width = max(math.prod(s) for s in shapes)
    teacher = MultiTaskTeacher(teachers, shapes, acts).eval()
    train_x, test_x = [], []
    for k, (env, t) in enumerate(zip(envs, teachers)):
        train_x.append(pack(rollout(greedy(t), env, steps=states, seed=seed, max_steps=max_steps).states, k, width))
        test_x.append(pack(rollout(greedy(t), env, episodes=test_episodes, seed=seed + 1_000_000,
                                   max_steps=max_steps).states, k, width))
    train, test = torch.cat(train_x), torch.cat(test_x)
    info = MultiTaskInfo("+".join(envs), teacher, eval_episodes, seed + 2_000_000, temperature, max_steps,
                         envs=envs, layout=[[math.prod(s), a] for s, a in zip(shapes, acts)])
    act = greedy(teacher)
    return PolicyBundle(f"gym_multitask:{'+'.join(envs)}", StateSplit(train, act(train), info=info),
                        StateSplit(test, act(test), info=info), max(acts), (1 + width,), domain="rl_multitask",
                        teacher=teacher)


__all__ = ["MultiTaskPolicy", "MultiTaskSource", "MultiTaskDistill", "TaskView", "distill_multitask", "mean_ci",
           "MultiTaskTeacher", "TaskSlice", "pack", "dispatch", "MASKED"]
