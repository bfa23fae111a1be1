#!/usr/bin/env bash
# Set everything up, then run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh  # Debian chromium for tests/test_browser.py
bash scripts/install-fluidsynth.sh  # libfluidsynth3 and the soundfonts for tests/test_corpus_midi.py
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
