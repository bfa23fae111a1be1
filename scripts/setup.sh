#!/usr/bin/env bash
# Set up a development environment in .venv: samplecnn (editable) with its test and corpus extras.
# The constraints file pins torch to the CPU build, so pip never pulls a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,corpus]"
# The musicnn teacher's weights (TF1 checkpoints inside the musicnn wheel, read without TensorFlow). --no-deps: its
# metadata pins numpy<1.17 and requires TensorFlow and librosa, none of which the PyTorch port needs.
.venv/bin/python -m pip install --quiet --no-deps musicnn==0.1.0
# The linter CI runs (scripts/test.sh; its rules are in pyproject.toml), pinned so that a new release cannot fail CI.
.venv/bin/python -m pip install --quiet ruff==0.17.6
.venv/bin/python -c "import torch, samplecnn; print(f'samplecnn {samplecnn.__version__} ready (torch {torch.__version__})')"
