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
paper) with Adam. With ``obs_init_steps`` the observation statistics start from that many steps of a random
agent before training (the paper does so).

Two value heads (the paper's Section 2.3): :class:`RNDPPO` is stable-baselines3's PPO, its loop and its
``train`` unchanged, with three small parts plugged in: the wrapper (``two_heads=True``) hands PPO the reward
pair ``(r_ext, r_int)``; :class:`TwoHeadPolicy` has a value layer with two outputs ``(V_ext, V_int)``;
:class:`TwoHeadRolloutBuffer` computes GAE per head -- the extrinsic one episodic with ``gamma`` (0.999 in the
paper), the intrinsic one **non-episodic** with ``gamma_int`` (0.99: episode ends do not cut it) -- and stores
the combined advantage ``A = ext_coef * A_ext + int_coef * A_int`` (2 and 1 in the paper). PPO's value loss
``mse(returns, values)`` over the flattened ``(V_ext, V_int)`` pairs is the mean of the two heads' losses, i.e.
the paper's ``0.5 * (L_ext + L_int)`` with ``vf_coef`` 1. SB3 bootstraps a time-limit truncation with
``gamma * V(s_T)`` added to the reward; here a callback does it for the extrinsic head only (the intrinsic
return runs on into the next episode), before SB3's loop would.

Without two heads (``RNDVecEnv`` alone, ``two_heads=False``) PPO sees ``ext_coef * r_ext + int_coef * r_int``
as one episodic reward with one value head and one discount: simpler, and not the paper's setting.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
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
                     width: int = 64, seed: int = 0, two_heads: bool = False, obs_init_steps: int = 0):
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
            self.two_heads, self.obs_init_steps = two_heads, obs_init_steps

        def reset(self):
            obs = self.venv.reset()
            if self.obs_init_steps and self.obs_norm.stats.count == 0:
                # the paper starts the observation statistics from a random agent's steps
                for _ in range(self.obs_init_steps):
                    acts = np.array([self.action_space.sample() for _ in range(self.num_envs)])
                    self.obs_norm.stats.update(self.venv.step(acts)[0])
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
            if self.two_heads:  # the pair (r_ext, r_int) for RNDPPO's two value heads
                return obs, np.stack([rewards, r_int], 1).astype(np.float32), dones, infos
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
    """Wrap a stable-baselines3 ``VecEnv`` so PPO is trained on ``ext_coef * r_ext + int_coef * r_int`` (or, with
    ``two_heads=True``, on the pair ``(r_ext, r_int)``, for :class:`RNDPPO`)."""
    return _vec_env_wrapper()(venv, **options)


@functools.cache
def _two_head_parts() -> SimpleNamespace:
    from stable_baselines3 import PPO
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import ActorCriticPolicy

    class TwoHeadPolicy(ActorCriticPolicy):
        """SB3's actor-critic with a value layer of two outputs, ``(V_ext, V_int)``."""

        def _build(self, lr_schedule: Any) -> None:
            super()._build(lr_schedule)
            self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 2)
            if self.ortho_init:
                self.value_net.apply(functools.partial(self.init_weights, gain=1))
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    class TwoHeadRolloutBuffer(RolloutBuffer):
        """Rewards, values and returns per head (last axis: extrinsic, intrinsic); GAE per head, the intrinsic
        one non-episodic; ``advantages = ext_coef * A_ext + int_coef * A_int``."""

        def __init__(self, *args: Any, gamma_int: float = 0.99, ext_coef: float = 2.0, int_coef: float = 1.0,
                     **kwargs: Any):
            self.gamma_int, self.ext_coef, self.int_coef = gamma_int, ext_coef, int_coef
            super().__init__(*args, **kwargs)

        def reset(self) -> None:
            super().reset()
            shape = (self.buffer_size, self.n_envs, 2)
            self.rewards, self.values, self.returns = (np.zeros(shape, np.float32) for _ in range(3))

        def add(self, obs, action, reward, episode_start, value, log_prob) -> None:  # noqa: ANN001
            self.observations[self.pos] = np.array(obs).reshape(self.n_envs, *self.obs_shape)
            self.actions[self.pos] = np.array(action).reshape(self.n_envs, self.action_dim)
            self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs, 2)
            self.episode_starts[self.pos] = np.array(episode_start)
            self.values[self.pos] = value.detach().cpu().numpy().reshape(self.n_envs, 2)
            self.log_probs[self.pos] = log_prob.detach().cpu().numpy().reshape(self.n_envs)
            self.pos += 1
            self.full = self.pos == self.buffer_size

        def compute_returns_and_advantage(self, last_values: Any, dones: np.ndarray) -> None:
            last = last_values.detach().cpu().numpy().reshape(self.n_envs, 2)
            adv = np.zeros_like(self.values)
            gae_ext = gae_int = np.zeros(self.n_envs, np.float32)
            for t in reversed(range(self.buffer_size)):
                if t == self.buffer_size - 1:
                    live, nxt = 1.0 - dones.astype(np.float32), last
                else:
                    live, nxt = 1.0 - self.episode_starts[t + 1], self.values[t + 1]
                r, v = self.rewards[t], self.values[t]
                delta_ext = r[:, 0] + self.gamma * nxt[:, 0] * live - v[:, 0]
                gae_ext = delta_ext + self.gamma * self.gae_lambda * live * gae_ext
                delta_int = r[:, 1] + self.gamma_int * nxt[:, 1] - v[:, 1]  # non-episodic: no `live`
                gae_int = delta_int + self.gamma_int * self.gae_lambda * gae_int
                adv[t, :, 0], adv[t, :, 1] = gae_ext, gae_int
            self.returns = adv + self.values
            self.advantages = (self.ext_coef * adv[..., 0] + self.int_coef * adv[..., 1]).astype(np.float32)

    class ExtrinsicBootstrap(BaseCallback):
        """At a time-limit truncation add ``gamma * V_ext(s_T)`` to the extrinsic reward only, and take the
        terminal observation out of ``infos`` so SB3's loop does not bootstrap both heads."""

        def _on_step(self) -> bool:
            rewards, infos = self.locals["rewards"], self.locals["infos"]
            for i, done in enumerate(self.locals["dones"]):
                if done and infos[i].get("TimeLimit.truncated", False) and "terminal_observation" in infos[i]:
                    obs = self.model.policy.obs_to_tensor(infos[i].pop("terminal_observation"))[0]
                    with torch.no_grad():
                        rewards[i, 0] += self.model.gamma * float(self.model.policy.predict_values(obs)[0, 0])
            return True

    class _RNDPPO(PPO):
        def __init__(self, env: Any, *, int_coef: float = 1.0, ext_coef: float = 2.0, gamma_int: float = 0.99,
                     rnd: dict | None = None, seed: int | None = None, **ppo: Any):
            env = RNDVecEnv(env, two_heads=True, gamma_int=gamma_int, seed=seed or 0, **(rnd or {}))
            ppo["rollout_buffer_class"] = TwoHeadRolloutBuffer
            ppo["rollout_buffer_kwargs"] = {"gamma_int": gamma_int, "ext_coef": ext_coef, "int_coef": int_coef}
            super().__init__(TwoHeadPolicy, env, seed=seed, **ppo)

        def learn(self, total_timesteps: int, callback: Any = None, **kwargs: Any) -> Any:
            callbacks = [] if callback is None else list(callback) if isinstance(callback, list) else [callback]
            return super().learn(total_timesteps, callback=[*callbacks, ExtrinsicBootstrap()], **kwargs)

    return SimpleNamespace(TwoHeadPolicy=TwoHeadPolicy, TwoHeadRolloutBuffer=TwoHeadRolloutBuffer,
                           ExtrinsicBootstrap=ExtrinsicBootstrap, RNDPPO=_RNDPPO)


def RNDPPO(env: Any, **options: Any) -> Any:  # noqa: N802
    """Stable-baselines3 PPO with RND and two value heads on the ``VecEnv`` ``env`` (wrapped here).

    ``int_coef``, ``ext_coef`` weight the two advantages; ``gamma_int`` discounts the non-episodic intrinsic
    return (PPO's own ``gamma`` the extrinsic one); ``rnd`` passes options to :func:`RNDVecEnv`; the rest go to
    ``PPO`` (``n_steps``, ``learning_rate`` ...). The model's ``env`` is the RND wrapper (``model.env.rnd``)."""
    return _two_head_parts().RNDPPO(env, **options)
