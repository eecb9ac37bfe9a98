#!/usr/bin/env bash
# Knowledge ablations side by side (see examples/experiments/ablations.yaml and docs/experiments.md).
# Trains the shared teacher once, then one 3-seed run per objective, then a comparison table.
# Usage (from the repository root):  bash examples/experiments/run_ablations.sh [extra gendistill run flags]
# The extra flags (e.g. --set seeds=[0,1]) go to the student runs only; the shared teacher is always trained
# from ablation-teacher.yaml as written (one seed, so gen0/model.safetensors is where the students load it).
set -euo pipefail
GD=${GENDISTILL:-gendistill}
OUT=${OUT:-runs/experiments}
CFG=examples/experiments/ablations.yaml

if [ ! -f "$OUT/ablation-teacher/gen0/model.safetensors" ]; then
  $GD run examples/experiments/ablation-teacher.yaml --out "$OUT/ablation-teacher" --progress lines
fi

declare -A OBJ=(
  [ce]='[{term: ce, weight: 1.0}]'
  [kd]='[{term: ce, weight: 1.0}, {term: kd, weight: 1.0, temperature: 4.0}]'
  [cwtm]='[{term: cwtm, weight: 1.0}]'
  [dkpp]='[{term: ce, weight: 1.0}, {term: dkpp, weight: 1.0, temperature: 4.0}]'
  [kd_universe]='[{term: ce, weight: 1.0}, {term: kd_universe, weight: 1.0, temperature: 4.0}]'
  [kd_domain]='[{term: ce, weight: 1.0}, {term: kd_domain, weight: 1.0, temperature: 4.0}]'
  [kd_instance]='[{term: ce, weight: 1.0}, {term: kd_instance, weight: 1.0, temperature: 4.0}]'
  [tf_kd]='[{term: ce, weight: 1.0}, {term: tf_kd, weight: 1.0, temperature: 4.0, correct_prob: 0.9, form: paper}]'
)
TERMS=(ce kd cwtm dkpp kd_universe kd_domain kd_instance tf_kd)

dirs=()
for t in "${TERMS[@]}"; do
  d="$OUT/ablation-$t"
  dirs+=("$d")
  if [ -f "$d/summary.json" ]; then echo "== $t: done earlier ($d)"; continue; fi
  echo "== $t"
  resume=()
  [ -f "$d/config.yaml" ] && resume=(--resume)   # an interrupted run continues where it stopped
  $GD run "$CFG" --set "objective=${OBJ[$t]}" --set "name=ablation-$t" \
    --set "generations.gen0_checkpoint=$OUT/ablation-teacher/gen0/model.safetensors" \
    --out "$d" --progress lines "${resume[@]}" "$@"
done

$GD compare "${dirs[@]}" --md "$OUT/ablations.md"
echo "wrote $OUT/ablations.md"
