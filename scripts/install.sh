#!/usr/bin/env bash
# Install the project into the active Python environment (plain pip does the same:
# `pip install torch==2.13.0 && pip install -e ".[dev]"`; this script is kept for old habits).
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
