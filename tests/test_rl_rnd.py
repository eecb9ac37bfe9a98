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
