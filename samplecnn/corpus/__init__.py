"""Training corpora of music that may be redistributed: `samplecnn corpus debian|midi --out DIR` (docs/corpus.md).

Modules: packages.py (the fixed package list, the music rule of each, the validation hold-out), debs.py (apt-get
download / dpkg-deb -x), unpack.py (one package -> its music and a record), probe.py (decode, duration, hashes),
dep5.py (licence per file from debian/copyright), manifest.py (cross-package duplicates, manifest.csv),
summary.py (the printed summary, shared with the voice corpus),
debian.py (the resumable recipe tying them together).

`samplecnn corpus midi --out DIR` (docs/corpus.md, MIDI renders): soundfonts.py (which soundfont may be used for
what), music21_works.py (music21's works, their terms, their notes), midi_files.py (planetblupi-music-midi),
piece.py (the notes in seconds), programs.py and drums.py (the instruments drawn, an added drum part), arrange.py
(a piece's voices), render.py (FluidSynth, FLAC), midi.py (the resumable recipe), eval_instruments.py (the
instrument evaluation set through csound-soundfont).
"""

from __future__ import annotations

from .debian import build
from .packages import DEFAULT_PACKAGES, VALID_PACKAGES

__all__ = ["build", "DEFAULT_PACKAGES", "VALID_PACKAGES"]
