#!/usr/bin/env bash
# CartPole policy distillation grid for docs/rl.md: student widths 16 / 8 / 4 (11.9x / 32x / 92x fewer parameters
# than the 64x64 teacher), losses KL / MSE / NLL (Rusu et al. 2016), DAgger on / off. One student generation per
# run, 3 seeds, the cached PPO teacher of examples/rl/cartpole.yaml. Rows: python examples/rl/tables.py runs/rl/rl-cp-*
set -euo pipefail
run() { name=$1; shift; gendistill run examples/rl/cartpole.yaml --progress off --set name=$name --set jobs=1 \
  --set train.threads=1 --set 'seeds=[0,1,2]' --set generations.count=1 --set generations.ensembles=false "$@" \
  > /dev/null; echo "$name done"; }
for width in 16 8 4; do
  for loss in kl mse nll; do
    obj="objective=[{term: policy_$loss}]"
    [ "$loss" = kl ] && obj="objective=[{term: policy_kl, tau: 0.01}]"
    [ -e "runs/rl/rl-cp-$loss-w$width-dagger/summary.json" ] || run "rl-cp-$loss-w$width-dagger" --set model.width=$width --set "$obj"
    [ -e "runs/rl/rl-cp-$loss-w$width-nodagger/summary.json" ] || run "rl-cp-$loss-w$width-nodagger" --set model.width=$width --set "$obj" --set data.dagger.steps=0
  done
done
