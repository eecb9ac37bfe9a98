"""RND vs plain PPO on MountainCar-v0 with a sparse reward, per seed, at a fixed step budget.

Reward (``--reward``): ``sparse`` (default) replaces MountainCar's -1 per step by 1 when the car reaches the flag
and 0 otherwise (the episode still ends at the flag or after 200 steps); ``standard`` keeps the -1 per step.
Both variants see the same observations, scaled to [-1, 1] by the observation space's bounds, and use the same
PPO settings (stable-baselines3, 8 environments, 128 steps each per update, 4 epochs, minibatch 256, lr 3e-4,
gamma 0.999, ent_coef 0.001). ``rnd`` is :func:`gendistill.rl.rnd.RNDPPO`: the paper's two value heads
(extrinsic episodic with gamma 0.999, intrinsic non-episodic with gamma_int 0.99), advantages 2 * A_ext +
int_coef * A_int, observation statistics started from a random agent, predictor trained on 25% of the samples.
``rnd1`` is the one-head ablation: :func:`gendistill.rl.rnd.RNDVecEnv` alone, PPO's one value head on
``ext_coef * r_ext + int_coef * r_int`` (same RND settings).

An episode is a success when it ends at the flag (terminated, not truncated). Prints, per seed and variant,
whether any episode succeeded within the budget, the environment step of the first success and the number of
successful episodes, then a table and one JSON line (``--out`` also writes the rows).

    OMP_NUM_THREADS=1 python examples/rl/rnd_mountaincar.py --steps 150000 --seeds 0 1 2 --out runs/rl/rnd.json
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from gendistill.rl.rnd import RNDPPO, RNDVecEnv


class SparseGoal(gym.Wrapper):
    """Reward 1 on reaching the flag, 0 otherwise."""

    def step(self, action):  # noqa: ANN001, ANN201
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(terminated), terminated, truncated, info


def wrap(reward: str):
    def make(env: gym.Env) -> gym.Env:
        low, high = env.observation_space.low, env.observation_space.high
        env = gym.wrappers.TransformObservation(
            env, lambda o: (2 * (o - low) / (high - low) - 1).astype(np.float32),
            gym.spaces.Box(-1.0, 1.0, low.shape, np.float32))
        return SparseGoal(env) if reward == "sparse" else env
    return make


class Successes(BaseCallback):
    def __init__(self):
        super().__init__()
        self.first: int | None = None
        self.count = self.episodes = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            self.episodes += int(done)
            if done and not info.get("TimeLimit.truncated", False):
                self.count += 1
                if self.first is None:
                    self.first = self.num_timesteps
        return True


PPO_ARGS = dict(n_steps=128, batch_size=256, n_epochs=4, gamma=0.999, gae_lambda=0.95, ent_coef=0.001,
                learning_rate=3e-4, device="cpu", verbose=0)


def run(seed: int, steps: int, variant: str, reward: str = "sparse", int_coef: float = 1.0,
        ext_coef: float = 2.0, n_envs: int = 8) -> dict:
    torch.set_num_threads(1)
    env = make_vec_env("MountainCar-v0", n_envs=n_envs, seed=seed, wrapper_class=wrap(reward))
    if variant == "rnd":
        agent = RNDPPO(env, int_coef=int_coef, ext_coef=ext_coef, gamma_int=0.99, seed=seed, vf_coef=1.0,
                       rnd={"obs_init_steps": 50}, **PPO_ARGS)
    elif variant == "rnd1":
        env = RNDVecEnv(env, int_coef=int_coef, ext_coef=ext_coef, gamma_int=0.99, seed=seed, obs_init_steps=50)
        agent = PPO("MlpPolicy", env, seed=seed, **PPO_ARGS)
    else:
        agent = PPO("MlpPolicy", env, seed=seed, **PPO_ARGS)
    cb = Successes()
    t0 = time.perf_counter()
    agent.learn(total_timesteps=steps, callback=cb)
    return {"seed": seed, "variant": variant, "reward": reward, "steps": steps, "n_envs": n_envs,
            "int_coef": 0.0 if variant == "ppo" else int_coef, "ext_coef": 1.0 if variant == "ppo" else ext_coef,
            "success": cb.first is not None, "first_success": cb.first, "successful_episodes": cb.count,
            "episodes": cb.episodes, "seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| variant | seed | reached the goal | first success (env steps) | successful episodes / episodes |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {'yes' if r['success'] else 'no'} | "
                     f"{r['first_success'] if r['first_success'] is not None else '-'} | "
                     f"{r['successful_episodes']} / {r['episodes']} |")
    for v in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == v]
        lines.append(f"\n{v}: success in {sum(r['success'] for r in mine)} of {len(mine)} seeds "
                     f"within {mine[0]['steps']} steps")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=150_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["ppo", "rnd"], choices=["ppo", "rnd", "rnd1"])
    p.add_argument("--reward", default="sparse", choices=["sparse", "standard"])
    p.add_argument("--int-coef", type=float, default=1.0)
    p.add_argument("--ext-coef", type=float, default=2.0)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        for v in a.variants:
            rows.append(run(seed, a.steps, v, a.reward, a.int_coef, a.ext_coef, a.envs))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    print(json.dumps({"rnd_mountaincar": rows}))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
