#!/usr/bin/env bash
# The other runs behind docs/rl.md: Acrobot students of the PPO teacher at width 4, a DQN (Q-value) Acrobot
# teacher with rl-baselines3-zoo's Acrobot settings and its 16x16 student, and plain PPO on sparse MountainCar
# at a 4x larger budget (does it ever reach the goal?).
set -euo pipefail
[ -e runs/rl/rl-acrobot-w4/summary.json ] || gendistill run examples/rl/acrobot.yaml --progress off --set jobs=1 \
  --set name=rl-acrobot-w4 --set model.width=4 > /dev/null
[ -e runs/rl/rl-acrobot-dqn/summary.json ] || gendistill run examples/rl/acrobot.yaml --progress off --set jobs=1 \
  --set name=rl-acrobot-dqn --set 'data.teacher={algo: dqn, steps: 100000, width: 256, depth: 2, seed: 0, hyper: {learning_rate: 0.00063, batch_size: 128, buffer_size: 50000, learning_starts: 0, gamma: 0.99, target_update_interval: 250, train_freq: 4, gradient_steps: -1, exploration_fraction: 0.12, exploration_final_eps: 0.1}}' > /dev/null
[ -e runs/rl/ppo_sparse_600k.json ] || python examples/rl/rnd_mountaincar.py --steps 600000 --seeds 0 1 2 \
  --variants ppo --out runs/rl/ppo_sparse_600k.json > /dev/null
