"""Multi-task policy distillation (Rusu et al. 2016): the CartPole and MinAtar Breakout PPO teachers of
examples/rl/cartpole.yaml and examples/rl/minatar-breakout.yaml (trained, or loaded from the teacher cache)
into one student with per-task input layers and heads around a shared trunk, trained by gendistill's
trainer. Prints per-task returns of teacher and student, and agreement on held-out teacher states.

    OMP_NUM_THREADS=1 python examples/rl/multitask.py --seeds 0 1 2 --out runs/rl/multitask.json
"""

from __future__ import annotations

import argparse
import json

import torch

from gendistill.rl.multitask import distill_multitask
from gendistill.rl.teachers import load_or_train, teacher_spec

TEACHERS = {"CartPole-v1": {"algo": "ppo", "steps": 60_000, "width": 64, "depth": 2, "seed": 0},
            "minatar/breakout": {"algo": "ppo", "steps": 100_000, "width": 128, "depth": 2, "seed": 0}}
ENVS = list(TEACHERS)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--states", type=int, default=10_000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    teachers = [load_or_train(teacher_spec(env, TEACHERS[env]))[0] for env in ENVS]
    rows = []
    for seed in a.seeds:
        res = distill_multitask(ENVS, teachers, states=a.states, width=a.width, seed=seed, eval_episodes=10,
                                train={"epochs": a.epochs, "batch_size": 64, "lr": 0.003, "schedule": "cosine",
                                       "weight_decay": 0.0})
        rows.append({"seed": seed, **res})
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
