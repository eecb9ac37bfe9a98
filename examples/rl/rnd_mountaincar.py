"""RND vs plain PPO on MountainCar-v0 (sparse reward: -1 per step, the episode ends only at the flag).

For each seed, PPO (stable-baselines3, 4 envs) is trained for a fixed step budget with and without the RND
wrapper (gendistill.rl.rnd.RNDVecEnv); an episode is a success when it ends by reaching the goal (terminated,
not truncated at 200 steps). Prints success (any goal reached within the budget), the step of the first
success and the number of successful episodes, per seed, and writes them as JSON.

    OMP_NUM_THREADS=1 python examples/rl/rnd_mountaincar.py --steps 60000 --seeds 0 1 2 --out runs/rl/rnd.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from gendistill.rl.rnd import RNDVecEnv


class Successes(BaseCallback):
    def __init__(self):
        super().__init__()
        self.first: int | None = None
        self.count = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and not info.get("TimeLimit.truncated", False):
                self.count += 1
                if self.first is None:
                    self.first = self.num_timesteps
        return True


def run(seed: int, steps: int, rnd: bool, int_coef: float = 1.0, ext_coef: float = 2.0) -> dict:
    torch.set_num_threads(1)
    env = make_vec_env("MountainCar-v0", n_envs=4, seed=seed)
    if rnd:
        env = RNDVecEnv(env, int_coef=int_coef, ext_coef=ext_coef, seed=seed)
    agent = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, n_steps=256, batch_size=256, n_epochs=4,
                gamma=0.99, gae_lambda=0.95, ent_coef=0.0, learning_rate=3e-4)
    cb = Successes()
    t0 = time.perf_counter()
    agent.learn(total_timesteps=steps, callback=cb)
    return {"seed": seed, "rnd": rnd, "int_coef": int_coef if rnd else 0.0, "ext_coef": ext_coef if rnd else 1.0, "steps": steps, "success": cb.first is not None, "first_success": cb.first,
            "successful_episodes": cb.count, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["ppo", "rnd"])
    p.add_argument("--out", default=None)
    p.add_argument("--int-coef", type=float, default=1.0)
    p.add_argument("--ext-coef", type=float, default=2.0)
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        for v in a.variants:
            rows.append(run(seed, a.steps, v == "rnd", a.int_coef, a.ext_coef))
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
