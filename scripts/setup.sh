#!/usr/bin/env bash
# Create .venv and install gendistill with its test tools.
# Where no NVIDIA GPU is present, PyTorch's CPU build is installed first (seconds, instead of several GB of CUDA
# packages); with a GPU, pip picks the platform's build. The package itself only requires torch>=2.6 (the first release without the weights_only bypass, CVE-2025-32434).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.6"
  else
    # PyTorch's CPU wheel index: a plain `pip install torch` on Linux would pull the CUDA build
    .venv/bin/pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu --retries 1 --timeout 20 \
      || .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q "torch>=2.6"
  fi
fi
.venv/bin/pip install -q -e ".[dev]"
# The optional extras the tests exercise when present (each test of an extra skips cleanly without it). PyTorch is
# pinned to the build installed above, so no extra can swap it; set GENDISTILL_CORE_ONLY=1 to skip them.
if [ -z "${GENDISTILL_CORE_ONLY:-}" ]; then
  TORCH_PIN="torch==$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  .venv/bin/pip install -q -e ".[dev,tensorboard,nlp,hf,rl]" "$TORCH_PIN" \
    || echo "note: optional extras (tensorboard, sacrebleu, transformers, gymnasium, stable-baselines3, minatar) not installed; their tests will skip"
fi
