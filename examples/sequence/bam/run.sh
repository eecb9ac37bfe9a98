#!/usr/bin/env bash
# BAM end to end: three single-task teachers, then the multi-task student distilled from them.
set -euo pipefail
cd "$(dirname "$0")/../../.."
for t in reverse sort add; do
  gendistill run examples/sequence/bam/teacher-$t.yaml --out runs/seq-bam-teacher-$t
done
gendistill run examples/sequence/bam/bam.yaml
