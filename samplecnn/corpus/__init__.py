"""Training corpora of music that may be redistributed: `samplecnn corpus debian --out DIR` (docs/corpus.md).

Modules: packages.py (the fixed package list, the music rule of each, the validation hold-out), debs.py (apt-get
download / dpkg-deb -x), unpack.py (one package -> its music and a record), probe.py (decode, duration, hashes),
dep5.py (licence per file from debian/copyright), manifest.py (cross-package duplicates, manifest.csv, summary),
debian.py (the resumable recipe tying them together).
"""

from __future__ import annotations

from .debian import build
from .packages import DEFAULT_PACKAGES, VALID_PACKAGES

__all__ = ["build", "DEFAULT_PACKAGES", "VALID_PACKAGES"]
