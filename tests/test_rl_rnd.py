"""Random network distillation: the running statistics and both normalisations on hand-made numbers, and the
VecEnv wrapper adds a normalised intrinsic reward that falls on states the predictor has learned."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gendistill.rl.rnd import RND, ObsNormalizer, RewardNormalizer, RunningStats


def test_running_stats_merge_batches_exactly():
    s = RunningStats()
    s.update(np.array([1.0, 3.0]))
    s.update(np.array([2.5, 3.5]))
    assert s.count == 4 and s.mean == pytest.approx(2.5) and s.var == pytest.approx(0.875)  # of [1, 3, 2.5, 3.5]


def test_intrinsic_reward_is_divided_by_the_std_of_intrinsic_returns():
    norm = RewardNormalizer(num_envs=2, gamma=0.5)
    # step 1: returns R = [1, 3], mean 2, std 1 -> rewards unchanged
    assert norm(np.array([1.0, 3.0])) == pytest.approx([1.0, 3.0])
    # step 2: R = 0.5 * [1, 3] + [2, 2] = [2.5, 3.5]; std of [1, 3, 2.5, 3.5] = sqrt(0.875)
    assert norm(np.array([2.0, 2.0])) == pytest.approx([2 / math.sqrt(0.875)] * 2)


def test_observations_are_whitened_and_clipped():
    norm = ObsNormalizer((1,), clip=5.0)
    x = norm(np.array([[0.0], [2.0]]))  # mean 1, std 1
    assert x[:, 0] == pytest.approx([-1.0, 1.0])
    far = norm(np.array([[1000.0]]), update=False)
    assert far[0, 0] == 5.0


def test_target_is_fixed_and_predictor_learns():
    rnd = RND(3, width=16, out=8, seed=0)
    assert not any(p.requires_grad for p in rnd.target.parameters())
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    before = rnd.error(x).mean().item()
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=3e-2)
    for _ in range(60):
        loss = rnd.error(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert rnd.error(x).mean().item() < 0.1 * before
    assert torch.equal(RND(3, width=16, out=8, seed=0).target[1].weight, rnd.target[1].weight)  # seeded, fixed


def test_the_vec_env_wrapper_adds_a_normalised_intrinsic_reward():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    from gendistill.rl.rnd import RNDVecEnv

    env = RNDVecEnv(make_vec_env("MountainCar-v0", n_envs=2, seed=0), int_coef=1.0, ext_coef=0.0,
                    update_every=8, seed=0)
    env.reset()
    rewards = []
    for _ in range(32):
        _, r, _, infos = env.step(np.zeros(2, dtype=np.int64))
        assert r == pytest.approx([i["intrinsic_reward"] for i in infos])  # ext_coef 0: intrinsic only
        rewards.append(r)
    assert all(np.isfinite(r).all() and (r >= 0).all() for r in rewards)
    x = torch.as_tensor(np.concatenate(env.buffer or [env.obs_norm(env.venv.reset(), update=False)]))
    with torch.no_grad():
        before = env.rnd.error(x).mean().item()
    for _ in range(64):  # eight more predictor updates on the states this (constant) policy visits
        env.step(np.zeros(2, dtype=np.int64))
    with torch.no_grad():
        assert env.rnd.error(x).mean().item() < before


def test_two_head_advantages_by_hand():
    """GAE per head on a hand-made rollout: the extrinsic one stops at an episode end, the intrinsic one runs on
    (non-episodic); advantages = ext_coef * A_ext + int_coef * A_int; returns = A + V per head."""
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym

    from gendistill.rl.rnd import _two_head_parts

    buf = _two_head_parts().TwoHeadRolloutBuffer(2, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2),
                                                  gae_lambda=1.0, gamma=0.5, gamma_int=0.5, ext_coef=2.0,
                                                  int_coef=1.0, n_envs=1)
    for start, reward in ((False, [1.0, 4.0]), (True, [0.0, 2.0])):  # step 1 starts a new episode
        buf.add(np.zeros((1, 1)), np.zeros((1, 1)), np.array([reward]), np.array([start]),
                torch.tensor([[0.0, 0.0]]), torch.zeros(1))
    buf.compute_returns_and_advantage(torch.tensor([[8.0, 8.0]]), np.array([False]))
    # step 1: A_ext = 0 + 0.5 * 8 = 4, A_int = 2 + 0.5 * 8 = 6
    # step 0: A_ext = 1 (episode ended: no bootstrap), A_int = 4 + 0.5 * 6 = 7
    assert buf.returns[:, 0].tolist() == [[1.0, 7.0], [4.0, 6.0]]
    assert buf.advantages[:, 0].tolist() == [2 * 1 + 7, 2 * 4 + 6]


def test_rnd_ppo_has_two_value_heads_and_fills_them():
    """RNDPPO through SB3's own loop: rollout shapes, the reward pair per step, and a time-limit truncation
    bootstrapped in the extrinsic head only (the intrinsic reward stays the wrapper's)."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from gendistill.rl.rnd import RNDPPO

    class Record(BaseCallback):
        def __init__(self):
            super().__init__()
            self.intrinsic = []

        def _on_step(self) -> bool:
            self.intrinsic.append([i["intrinsic_reward"] for i in self.locals["infos"]])
            return True

    env = make_vec_env("MountainCar-v0", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 5})
    agent = RNDPPO(env, seed=0, n_steps=16, batch_size=16, n_epochs=1, gamma=0.999, device="cpu",
                   rnd={"update_every": 8, "obs_init_steps": 4})
    assert agent.policy.value_net.out_features == 2
    assert agent.env.obs_norm.stats.count == 0  # the random-agent steps come with the first reset
    rec = Record()
    agent.learn(64, callback=rec)  # two rollouts of 16 steps x 2 environments, one PPO epoch each
    buf = agent.rollout_buffer
    assert agent.env.obs_norm.stats.count >= 4 * 2
    assert buf.rewards.shape == (16, 2, 2)  # (steps, envs, head)
    assert buf.values.shape == buf.returns.shape == (32, 2) and buf.advantages.shape == (32, 1)  # flattened by get()
    assert np.isfinite(buf.advantages).all()
    assert not np.allclose(buf.values[:, 0], buf.values[:, 1])  # two heads, two predictions
    ext, intr = buf.rewards[..., 0], buf.rewards[..., 1]
    truncated = np.zeros(16, bool)
    truncated[[3, 8, 13]] = True  # the second rollout: steps 16..31; 5-step episodes end at steps 19, 24, 29
    assert (ext[~truncated] == -1).all() and (ext[truncated] != -1).all()  # -1 + gamma * V_ext(s_T) at a cut
    assert intr == pytest.approx(np.array(rec.intrinsic[16:]))  # intrinsic: the wrapper's reward, unchanged
    assert (intr > 0).all()
