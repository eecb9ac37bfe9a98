#!/usr/bin/env bash
# CartPole policy distillation grid for docs/rl.md: losses (KL / MSE / NLL), DAgger on / off, student widths.
# One student generation per run, 3 seeds, the cached PPO teacher of examples/rl/cartpole.yaml.
set -euo pipefail
run() { name=$1; shift; gendistill run examples/rl/cartpole.yaml --progress off --set name=$name \
  --set 'seeds=[0,1,2]' --set generations.count=1 --set generations.ensembles=false "$@" > /dev/null; echo "$name done"; }
run rl-cp-kl-w16-dagger
run rl-cp-kl-w16-nodagger --set data.dagger.steps=0
run rl-cp-mse-w16-dagger --set 'objective=[{term: policy_mse}]'
run rl-cp-nll-w16-dagger --set 'objective=[{term: policy_nll}]'
run rl-cp-kl-w4-dagger --set model.width=4
run rl-cp-kl-w4-nodagger --set model.width=4 --set data.dagger.steps=0
