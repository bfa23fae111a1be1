"""MagnaTagATune as distributed: annotations_final.csv (tab-separated) and the mp3 folders 0-9, a-f.

- Vocabulary: the 50 most frequent of the 188 tags over the whole table (vocab.py: ties by name; MTAT_TOP50's
  order when the set matches, which it does on the real table).
- Splits by folder, as every paper since Dieleman & Schrauwen 2014: 0-b train, c valid, d-f test.
- 'lee2017' (Lee et al. 2017; minzwon's split) keeps only clips with at least one top-50 tag: 15,244 / 1,529 /
  4,332 on real MTAT. Lee et al. also dropped clips shorter than 29.1 s: pass min_seconds=29.1 (CLI --min-seconds)
  for that. 'full' (Pons et al. 2018) keeps every clip: 18,706 / 1,825 / 5,329 once the 3 unreadable mp3s are out.
  Unreadable files are dropped in both, and listed in the cache's meta.json.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import SampleCNNError
from ..tags import MTAT_TOP50
from . import vocab
from .build import Source

__all__ = ["ANNOTATIONS", "SPLIT_MODES", "folder_split", "read_annotations", "source"]

ANNOTATIONS = "annotations_final.csv"
SPLIT_MODES = ("lee2017", "full")
_FOLDER_SPLIT = {**{f: "train" for f in "0123456789ab"}, "c": "valid", **{f: "test" for f in "def"}}


def folder_split(mp3_path: str) -> str:
    """'train' | 'valid' | 'test' from the clip's folder (the first path component, 0-f)."""
    folder = mp3_path.replace("\\", "/").split("/", 1)[0].lower()
    try:
        return _FOLDER_SPLIT[folder]
    except KeyError:
        raise SampleCNNError(f"mp3_path {mp3_path!r} is not in one of the MTAT folders 0-9, a-f") from None


def read_annotations(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """(tag names in column order, mp3 paths, (N, 188) uint8 0/1 matrix) from annotations_final.csv."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror}); --root must hold MTAT's {ANNOTATIONS}", path) from None
    with f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, [])
        if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise SampleCNNError("is not MTAT's annotations file (expected a tab-separated header "
                                 "clip_id, <tags>, mp3_path)", path)
        tags = header[1:-1]
        paths, matrix = [], []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header) or not row[-1]:
                raise SampleCNNError(f"line {line} has {len(row)} fields, expected {len(header)}", path)
            values = row[1:-1]
            if any(v not in ("0", "1") for v in values):
                raise SampleCNNError(f"line {line} has tag values other than 0 and 1", path)
            paths.append(row[-1])
            matrix.append([v == "1" for v in values])
    if not paths:
        raise SampleCNNError("lists no clips", path)
    return tags, paths, np.array(matrix, dtype=np.uint8).reshape(len(paths), len(tags))


def source(root: str | os.PathLike, split: str = "lee2017", top: int = 50) -> Source:
    """The clips to cache, their splits and their top-`top` labels."""
    if split not in SPLIT_MODES:
        raise SampleCNNError(f"--split must be one of {', '.join(SPLIT_MODES)}, not {split!r}")
    root = Path(root)
    all_tags, paths, matrix = read_annotations(root / ANNOTATIONS)
    freq = vocab.counts(matrix, all_tags)
    tags = vocab.choose(freq, top=top)
    labels = matrix[:, [all_tags.index(t) for t in tags]].astype(np.float32)
    keep = np.ones(len(paths), bool) if split == "full" else labels.any(axis=1)
    splits = [folder_split(p) for p in paths]
    info = {
        "split": split, "top": top, "annotations": str(root / ANNOTATIONS), "table_rows": len(paths),
        "dropped_no_top_tag": int((~keep).sum()),
        "tag_order": "mtat-standard" if tags == list(MTAT_TOP50) else "frequency",
        "tags_by_frequency": [t for t in vocab.ranked(freq) if t in set(tags)],
        "tag_frequency": {t: int(freq[t]) for t in vocab.ranked(freq)},
    }
    idx = np.flatnonzero(keep)
    return Source(name="mtat", root=root, paths=[paths[i] for i in idx], splits=[splits[i] for i in idx],
                  labels=labels[idx], tags=tags, info=info)
