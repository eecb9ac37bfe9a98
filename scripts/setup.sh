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
