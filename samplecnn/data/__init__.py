"""Training data: decode a dataset once into a cache (build.py) and read random crops from it at memory speed.

    samplecnn prepare mtat --root MTAT --out cache/mtat            # or: samplecnn prepare folder ...
    cache = samplecnn.data.Cache("cache/mtat")
    x = cache.clip_float(i, start, 59049)                           # float32 in [-1, 1]
    y = cache.labels[i]                                             # (T,) float32

Modules: cache.py (format and reader), build.py (parallel, resumable, atomic writer), vocab.py (top-N tags),
mtat.py (MagnaTagATune), folder.py (any folder + CSV/TSV labels).
"""

from __future__ import annotations

import os

from .build import Source, build
from .cache import Cache

__all__ = ["Cache", "Source", "build", "prepare_mtat", "prepare_folder"]


def prepare_mtat(root: str | os.PathLike, out: str | os.PathLike, split: str = "lee2017", top: int = 50,
                 min_seconds: float = 0.0, workers: int | None = None, force: bool = False,
                 progress: bool = True) -> Cache:
    """MagnaTagATune at `root` (annotations_final.csv + folders 0-f) -> cache at `out` (see mtat.py)."""
    from . import mtat

    return build(mtat.source(root, split=split, top=top), out, workers=workers, force=force,
                 min_seconds=min_seconds, progress=progress)


def prepare_folder(audio_dir: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike,
                   min_seconds: float = 0.0, workers: int | None = None, force: bool = False,
                   progress: bool = True, **options) -> Cache:
    """Audio folder + label table -> cache at `out`; `options` are folder.source's (top, tags, split_column...)."""
    from . import folder

    return build(folder.source(audio_dir, labels, **options), out, workers=workers, force=force,
                 min_seconds=min_seconds, progress=progress)
