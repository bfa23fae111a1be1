#!/usr/bin/env bash
# Set up a development environment in .venv: samplecnn (editable) with its test extras.
# The constraints file pins torch to the CPU build, so pip never pulls a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
.venv/bin/python -c "import torch, samplecnn; print(f'samplecnn {samplecnn.__version__} ready (torch {torch.__version__})')"
