"""The ``gym`` dataset: a teacher's replay memory as a dataset bundle of the ``rl`` domain.

``data: {name: gym, env: CartPole-v1, teacher: {algo: dqn, steps: 50000}, states: 20000, test_episodes: 10}``
trains (or loads from its cache) the teacher, runs it greedily to fill the training memory (``states``
states, episodes seeded from ``seed``) and a held-out set of teacher-visited states (``test_episodes``
episodes from other seeds), labelled with its greedy actions. The teacher becomes generation 0 of the
lineage; the students (generations >= 1) are distilled from the memory (and, with ``dagger``, from their own
relabelled rollouts), and evaluated by ``eval_episodes`` greedy episodes each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..data import DatasetBundle, Split
from ..engine.progress import log
from ..errors import ConfigError
from ..registry import DATASETS
from .envs import check_env_id, make_env, space_dims
from .rollouts import DAggerSchedule, greedy, rollout
from .teachers import load_or_train, teacher_spec


@dataclass
class PolicyInfo:
    """What the rl domain needs besides the states: the environment, the original teacher, evaluation."""

    env: str
    teacher: nn.Module
    eval_episodes: int = 10
    eval_seed: int = 10_000
    temperature: float = 1.0
    max_steps: int | None = None
    dagger: DAggerSchedule = field(default_factory=DAggerSchedule)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class MultiTaskInfo(PolicyInfo):
    """:class:`PolicyInfo` of a packed multi-task dataset: its environments (task ``k`` = ``envs[k]``) and
    ``layout`` (``[obs_dim, n_actions]`` per task); ``teacher`` is the packed :class:`MultiTaskTeacher`."""

    envs: list[str] = field(default_factory=list)
    layout: list[list[int]] = field(default_factory=list)


@dataclass
class StateSplit(Split):
    """States (``x``) with the original teacher's greedy actions (``y``), and the :class:`PolicyInfo`."""

    info: PolicyInfo | None = None

    def head(self, n: int) -> StateSplit:
        return StateSplit(self.x[:n], self.y[:n], info=self.info)

    def to(self, device: Any) -> StateSplit:
        return StateSplit(self.x.to(device), self.y.to(device), info=self.info)


@dataclass
class PolicyBundle(DatasetBundle):
    """A dataset bundle that carries its own generation-0 teacher (``teacher``)."""

    teacher: nn.Module | None = None


@DATASETS.register("gym", summary="rl: a teacher's visited states on a gymnasium/MinAtar env (teacher = gen0)")
def gym_states(env: str = "CartPole-v1", teacher: dict[str, Any] | None = None, states: int = 20_000,
               test_episodes: int = 10, eval_episodes: int = 10, seed: int = 0, temperature: float = 1.0,
               epsilon: float = 0.0, max_steps: int | None = None, dagger: dict[str, Any] | None = None,
               root: str | None = None) -> PolicyBundle:
    check_env_id(env)
    if states < 1 or test_episodes < 1 or eval_episodes < 1:
        raise ConfigError("data.states, data.test_episodes and data.eval_episodes must be >= 1")
    if temperature <= 0:
        raise ConfigError(f"data.temperature must be > 0, got {temperature}")
    obs_shape, n_actions = space_dims(make_env(env))
    model, record = load_or_train(teacher_spec(env, teacher), log=lambda m: log(m, "auto"))
    model.eval()
    train = rollout(greedy(model), env, steps=states, seed=seed, epsilon=epsilon, max_steps=max_steps)
    test = rollout(greedy(model), env, episodes=test_episodes, seed=seed + 1_000_000, max_steps=max_steps)
    info = PolicyInfo(env, model, eval_episodes, seed + 2_000_000, temperature, max_steps,
                      DAggerSchedule.parse(dagger), record)
    act = greedy(model)
    bundle = PolicyBundle(f"gym:{env}", StateSplit(train.states, act(train.states), info=info),
                          StateSplit(test.states, act(test.states), info=info), n_actions, obs_shape, domain="rl",
                          teacher=model)
    return bundle
