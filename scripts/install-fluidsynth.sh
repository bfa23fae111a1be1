#!/usr/bin/env bash
# Install Debian's FluidSynth library and the three General MIDI soundfonts that `samplecnn corpus midi` renders with
# (tests/test_corpus_midi.py renders real pieces): fluid-soundfont-gm and timgm6mb-soundfont for training renders,
# csound-soundfont for the instrument evaluation set only. Idempotent: returns at once when all are there.
set -euo pipefail
PACKAGES=(libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont csound-soundfont)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-fluidsynth.sh: not root and no sudo: install ${missing[*]} yourself" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-fluidsynth.sh: installed ${missing[*]}"
