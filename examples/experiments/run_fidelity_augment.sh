#!/usr/bin/env bash
# Self-distillation fidelity, second half: does distilling on MORE inputs (augmented copies of the training
# set) raise the student's agreement with the SAME teacher? (Stanton et al. 2021, Sec. 5.)
# For each seed s, the teacher is generation 0 of the baseline run (fidelity-self-distillation.yaml, which
# must have finished), loaded with generations.gen0_checkpoint, and generation 1 is trained from scratch with
# the same init seed as the baseline's gen1, with train.augment on (8 recorded views per sample whose teacher
# outputs are cached once). Only the student's inputs change, so the comparison with the baseline is paired.
# Usage (from the repository root):  bash examples/experiments/run_fidelity_augment.sh [noise mixup ...]
set -euo pipefail
GD=${GENDISTILL:-gendistill}
OUT=${OUT:-runs/experiments}
BASE=$OUT/fidelity-self-distillation
CFG=examples/experiments/fidelity-self-distillation.yaml
AUGS=("$@")
[ $# -eq 0 ] && AUGS=(noise mixup)
for aug in "${AUGS[@]}"; do
  for s in 0 1 2 3 4; do
    d="$OUT/fidelity-self-distillation-$aug-fixed-teacher/seed$s"
    if [ -f "$d/summary.json" ]; then continue; fi
    $GD run "$CFG" --set "seeds=[$s]" --set "train.augment.name=$aug" \
      --set "generations.gen0_checkpoint=$BASE/seed$s/gen0/model.safetensors" \
      --set "name=fidelity-self-distillation-$aug-fixed-teacher" --out "$d" --progress lines
  done
done
$GD compare "$BASE" $(for a in "${AUGS[@]}"; do echo "$OUT/fidelity-self-distillation-$a-fixed-teacher"; done) \
  --md "$OUT/fidelity-augment.md"
echo "wrote $OUT/fidelity-augment.md"
