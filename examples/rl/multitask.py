"""Multi-task policy distillation (Rusu et al. 2016): the CartPole and Acrobot PPO teachers (trained or loaded
from the teacher cache, as examples/rl/cartpole.yaml does) into one student with a shared trunk and per-task
heads, trained by gendistill's trainer. Prints per-task returns of teacher and student, and agreement.

    OMP_NUM_THREADS=1 python examples/rl/multitask.py --seeds 0 1 2 --out runs/rl/multitask.json
"""

from __future__ import annotations

import argparse
import json

import torch

from gendistill.rl.multitask import distill_multitask
from gendistill.rl.teachers import load_or_train, teacher_spec

ENVS = ["CartPole-v1", "Acrobot-v1"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--states", type=int, default=10_000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    teachers = [load_or_train(teacher_spec(env, {"algo": "ppo", "steps": 60_000}))[0] for env in ENVS]
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
