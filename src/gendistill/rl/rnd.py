"""Random network distillation (Burda, Edwards, Storkey & Klimov 2018, Exploration by Random Network
Distillation, arXiv:1810.12894) for stable-baselines3's PPO.

A fixed, randomly initialised *target* network ``f`` and a *predictor* ``f_hat`` trained to match it, both on
whitened observations ``x = clip((s - mu) / sigma, -5, 5)`` (running mean and std of the observations). The
intrinsic reward of a transition is the predictor's error on the next observation,
``i_t = ||f_hat(x_{t+1}) - f(x_{t+1})||^2``, which stays high on states unlike those seen so far. It is divided
by a running std of the *intrinsic returns* ``R_t = gamma_int * R_{t-1} + i_t`` (per environment, never reset:
the paper's non-episodic intrinsic return), so its scale does not drift. :class:`RNDVecEnv` wraps a
stable-baselines3 ``VecEnv`` and hands PPO ``r_ext * ext_coef + r_int * int_coef``; the predictor is trained
on the observations of the last ``update_every`` steps (a fraction ``update_proportion`` of them, as in the
paper) with Adam.

Deviation, stated: the paper gives PPO two value heads (an episodic extrinsic and a non-episodic intrinsic
return, with their own discounts). Stable-baselines3's PPO has one value head and one discount, so here the
two rewards are summed into one episodic return. The normalisation and the predictor are the paper's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class RunningStats:
    """Running mean and (population) variance of batches, merged exactly (Chan et al.'s parallel formula);
    empty at first (``count`` 0)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 0

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64)
        n, mean, var = batch.shape[0], batch.mean(0), batch.var(0)
        if self.count == 0:
            self.mean, self.var, self.count = mean, var, n
            return
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.var, 1e-8))


class RewardNormalizer:
    """``i_t / std(R)``, ``R_t = gamma * R_{t-1} + i_t`` per environment (never reset), std over all R seen."""

    def __init__(self, num_envs: int, gamma: float = 0.99):
        self.gamma = gamma
        self.returns = np.zeros(num_envs, np.float64)
        self.stats = RunningStats()

    def __call__(self, rewards: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        return rewards / self.stats.std


class ObsNormalizer:
    """``clip((s - mean) / std, -clip, clip)`` with running statistics of the observations seen."""

    def __init__(self, shape: tuple[int, ...], clip: float = 5.0):
        self.stats = RunningStats(shape)
        self.clip = clip

    def __call__(self, obs: np.ndarray, update: bool = True) -> np.ndarray:
        if update:
            self.stats.update(obs)
        return np.clip((obs - self.stats.mean) / self.stats.std, -self.clip, self.clip).astype(np.float32)


def _net(inputs: int, width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, out))


class RND(nn.Module):
    """The fixed random target and the trained predictor (the predictor one layer deeper, as in the paper)."""

    def __init__(self, obs_dim: int, width: int = 64, out: int = 64, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.target = _net(obs_dim, width, out)
            self.predictor = nn.Sequential(_net(obs_dim, width, width), nn.ReLU(), nn.Linear(width, out))
        self.target.requires_grad_(False)

    def error(self, x: Tensor) -> Tensor:
        """``||f_hat(x) - f(x)||^2`` per row."""
        return (self.predictor(x) - self.target(x)).pow(2).sum(-1)


def _vec_env_wrapper():
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class _RNDVecEnv(VecEnvWrapper):
        def __init__(self, venv: Any, *, int_coef: float = 1.0, ext_coef: float = 2.0, gamma_int: float = 0.99,
                     lr: float = 1e-3, update_every: int = 128, epochs: int = 4, update_proportion: float = 0.25,
                     width: int = 64, seed: int = 0):
            super().__init__(venv)
            shape = venv.observation_space.shape
            self.rnd = RND(int(np.prod(shape)), width, seed=seed)
            self.opt = torch.optim.Adam(self.rnd.predictor.parameters(), lr=lr)
            self.obs_norm = ObsNormalizer(shape)
            self.rew_norm = RewardNormalizer(venv.num_envs, gamma_int)
            self.int_coef, self.ext_coef = int_coef, ext_coef
            self.update_every, self.epochs, self.update_proportion = update_every, epochs, update_proportion
            self.buffer: list[np.ndarray] = []
            self.rng = np.random.default_rng(seed)
            self.intrinsic: list[float] = []  # raw mean intrinsic reward per step (for logging)

        def reset(self):
            obs = self.venv.reset()
            self.obs_norm.stats.update(obs)
            return obs

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            nxt = obs.copy()
            for i, d in enumerate(dones):  # the transition's next state is the terminal one, not the reset
                if d and infos[i].get("terminal_observation") is not None:
                    nxt[i] = infos[i]["terminal_observation"]
            x = self.obs_norm(nxt)
            with torch.no_grad():
                raw = self.rnd.error(torch.as_tensor(x)).numpy()
            self.intrinsic.append(float(raw.mean()))
            r_int = self.rew_norm(raw)
            self.buffer.append(x)
            if len(self.buffer) >= self.update_every:
                self._train()
            for i in range(len(infos)):
                infos[i]["intrinsic_reward"] = float(r_int[i])
            return obs, (self.ext_coef * rewards + self.int_coef * r_int).astype(np.float32), dones, infos

        def _train(self) -> None:
            data = torch.as_tensor(np.concatenate(self.buffer))
            self.buffer = []
            for _ in range(self.epochs):
                keep = torch.as_tensor(self.rng.random(len(data)) < self.update_proportion)
                if keep.any():
                    loss = self.rnd.error(data[keep]).mean()
                    self.opt.zero_grad()
                    loss.backward()
                    self.opt.step()

    return _RNDVecEnv


def RNDVecEnv(venv: Any, **options: Any) -> Any:  # noqa: N802
    """Wrap a stable-baselines3 ``VecEnv`` so PPO is trained on ``ext_coef * r_ext + int_coef * r_int``."""
    return _vec_env_wrapper()(venv, **options)
