"""The voice corpus as training reads it: `read_manifest(dir)` and `load_clip(dir, row)`.

`samplecnn corpus voices --out DIR` (voice_build) writes DIR/manifest.csv and 22050 Hz mono FLAC clips; this is
the small, dependency-free side the mixing code needs: rows with typed fields, filtered by split or kind, and a
clip's samples as float32 at the model's rate (read with PyAV; no resampling happens, the clips are stored at it).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import SampleCNNError
from ..segments import SAMPLE_RATE
from .voice_build import build
from .voice_decode import decode
from .voice_tables import MANIFEST_COLUMNS

__all__ = ["build", "read_manifest", "load_clip", "MANIFEST_COLUMNS"]

_FLOATS = ("duration",)
_INTS = ("source_rate", "source_channels")


def read_manifest(folder: str | os.PathLike, split: str | None = None, kind: str | None = None) -> list[dict]:
    """The rows of DIR/manifest.csv (duration a float, rates ints), optionally only one split (train/valid) or
    kind (speech/choir). A missing or foreign table raises SampleCNNError."""
    path = Path(folder) / "manifest.csv"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("path", "duration", "split", "kind") if c not in (reader.fieldnames or [])]
            if missing:
                raise SampleCNNError(f"not a voice manifest (no {', '.join(missing)} column)", path)
            rows = list(reader)
    except FileNotFoundError:
        raise SampleCNNError("no manifest.csv here (build it with `samplecnn corpus voices --out DIR`)",
                             path) from None
    out = []
    for row in rows:
        if (split is not None and row["split"] != split) or (kind is not None and row["kind"] != kind):
            continue
        for k in _FLOATS:
            row[k] = float(row[k])
        for k in _INTS:
            if k in row:
                row[k] = int(row[k])
        out.append(row)
    return out


def load_clip(folder: str | os.PathLike, row: dict | str) -> np.ndarray:
    """A clip's samples: mono float32 at 22050 Hz. `row` is a manifest row or its `path` (relative to DIR)."""
    rel = row["path"] if isinstance(row, dict) else row
    clip = decode(Path(folder) / rel, sr=SAMPLE_RATE)
    return clip.samples
