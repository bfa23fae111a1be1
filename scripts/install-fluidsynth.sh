#!/usr/bin/env bash
# Install Debian's FluidSynth library and the three General MIDI soundfonts that `samplecnn corpus midi` renders with
# (tests/test_corpus_midi.py renders real pieces): fluid-soundfont-gm and timgm6mb-soundfont for training renders,
# csound-soundfont for the instrument evaluation set only. Idempotent: returns at once when all are there.
set -euo pipefail
bash "$(dirname "$0")/apt-install.sh" install-fluidsynth.sh \
    libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont csound-soundfont
