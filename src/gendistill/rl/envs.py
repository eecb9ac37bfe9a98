"""Environments: gymnasium's classic-control tasks and MinAtar (Young & Tian 2019, arXiv:1903.03176), offline.

``make_env(env_id, seed)`` returns a ``gymnasium.Env`` with a flat or image ``Box`` observation and a
``Discrete`` action space. MinAtar games are named ``minatar/<game>`` (``minatar/breakout``, ``minatar/space_invaders``
...) and wrapped here around ``minatar.Environment`` (its minimal action set, no sticky actions by default),
so nothing depends on MinAtar's own gym registration. gymnasium and minatar are imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

CLASSIC = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3")
MINATAR = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def _gym():
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("the rl domain needs gymnasium: pip install 'gendistill[rl]'") from None
    return gymnasium


def known_envs() -> list[str]:
    return [*CLASSIC, *(f"minatar/{g}" for g in MINATAR)]


def check_env_id(env_id: str) -> None:
    """A one-line ConfigError for an environment gendistill cannot make."""
    if env_id.startswith("minatar/"):
        if env_id.split("/", 1)[1] not in MINATAR:
            raise ConfigError(f"unknown environment {env_id!r}; known: {', '.join(known_envs())}")
        return
    gym = _gym()
    if env_id not in gym.envs.registry:
        raise ConfigError(f"unknown environment {env_id!r}; known: {', '.join(known_envs())} (or any registered "
                          "gymnasium id)")


def make_env(env_id: str, seed: int | None = None, max_steps: int | None = None) -> Any:
    """A seeded environment (``reset(seed=seed)`` is done by the caller; ``seed`` seeds MinAtar's RNG)."""
    check_env_id(env_id)
    gym = _gym()
    if env_id.startswith("minatar/"):
        env = MinAtarEnv(env_id.split("/", 1)[1], seed=seed)
        return gym.wrappers.TimeLimit(env, max_steps or 1000)
    env = gym.make(env_id)
    if max_steps is not None:
        env = gym.wrappers.TimeLimit(env.unwrapped, max_steps)
    return env


def space_dims(env: Any) -> tuple[tuple[int, ...], int]:
    """``(observation shape, number of actions)``; a one-line ConfigError for a non-discrete action space."""
    n = getattr(env.action_space, "n", None)
    if n is None:
        raise ConfigError(f"the rl domain needs a discrete action space, got {env.action_space}")
    return tuple(int(d) for d in env.observation_space.shape), int(n)


def _minatar_env_class():
    gym = _gym()

    class _MinAtar(gym.Env):
        """A gymnasium view of ``minatar.Environment``: float32 (10, 10, C) observations, minimal actions."""

        metadata: dict[str, Any] = {"render_modes": []}

        def __init__(self, game: str, seed: int | None = None, sticky_action_prob: float = 0.0):
            try:
                from minatar import Environment
            except ImportError:  # pragma: no cover
                raise ConfigError("MinAtar games need minatar: pip install 'gendistill[rl]'") from None
            self.game = Environment(game, sticky_action_prob=sticky_action_prob)
            if seed is not None:
                self.game.seed(seed)
            self.actions = self.game.minimal_action_set()
            shape = tuple(self.game.state_shape())
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape, np.float32)
            self.action_space = gym.spaces.Discrete(len(self.actions))

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            if seed is not None:
                self.game.seed(seed)
            self.game.reset()
            return self.game.state().astype(np.float32), {}

        def step(self, action: int):
            reward, done = self.game.act(self.actions[int(action)])
            return self.game.state().astype(np.float32), float(reward), bool(done), False, {}

    return _MinAtar


def MinAtarEnv(game: str, seed: int | None = None, sticky_action_prob: float = 0.0) -> Any:  # noqa: N802
    return _minatar_env_class()(game, seed, sticky_action_prob)
