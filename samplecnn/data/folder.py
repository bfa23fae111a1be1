"""Any collection: a folder of audio plus a CSV/TSV label table, with one of three label formats.

The table (delimiter sniffed: comma or tab; a header row is required) has
- a path column (--path-column; found automatically when named path, file, filename, filepath, audio or
  mp3_path), relative to the audio folder (absolute paths work too);
- labels in ONE of these forms:
  * a tag-list column (--tag-column, or a column named "tags"): tags separated by ';' (e.g. "rock;guitar"),
    spaces around them ignored, empty cell = no tag. ';' because tag names contain spaces and commas are the
    table's own delimiter;
  * 0/1 columns, one per tag (the column name is the tag);
  * float columns in [0, 1], one per tag: soft labels (e.g. a teacher's scores, for distillation).
  Without a tag-list column, every other column whose cells all parse as numbers in [0, 1] is a tag; the rest
  (title, artist, an id...) are ignored and listed on stderr.
- optionally a split column (train / valid / test; 'val' and 'validation' mean valid), or else a seeded random
  split, by an optional group column (artist, album) so that no group has clips on both sides.
"""

from __future__ import annotations

import collections
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import SampleCNNError
from ..tags import MTAT_TOP50
from . import vocab
from .build import Source

__all__ = ["TAG_SEPARATOR", "group_split", "read_table", "source"]

TAG_SEPARATOR = ";"
PATH_COLUMNS = ("path", "file", "filename", "filepath", "audio", "mp3_path")
_SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def read_table(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV or TSV file; the delimiter is sniffed from the first 64 kB."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(65536)
            f.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",\t").delimiter
            except csv.Error:
                first = sample.splitlines()[0] if sample else ""
                delimiter = "\t" if "\t" in first else ","
            rows = [r for r in csv.reader(f, delimiter=delimiter)]
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror})", path) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SampleCNNError(f"is not a UTF-8 CSV/TSV table ({e})", path) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise SampleCNNError("needs a header row and at least one clip", path)
    header = [h.strip() for h in rows[0]]
    for line, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise SampleCNNError(f"a row has {len(r)} fields, the header {len(header)} (row {line})", path)
    return header, rows[1:]


def group_split(groups: list[str], valid_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A split of len(groups) clips in which each group lies on one side only; same seed, same split.

    Groups are shuffled (NumPy's default_rng(seed) over the sorted group names), then dealt to test until it
    holds test_fraction of the clips, then to valid, the rest to train; so the fractions are met up to one group.
    An empty group name makes the clip a group of its own."""
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise SampleCNNError("--valid-fraction and --test-fraction must be >= 0 and sum to less than 1")
    keys = [g if g else f"\0{i}" for i, g in enumerate(groups)]
    sizes = collections.Counter(keys)
    names = sorted(sizes)
    n = len(keys)
    n_test, n_valid = round(test_fraction * n), round(valid_fraction * n)
    side, filled = {}, 0
    for j in np.random.default_rng(seed).permutation(len(names)):
        side[names[j]] = "test" if filled < n_test else "valid" if filled < n_test + n_valid else "train"
        filled += sizes[names[j]]
    return [side[k] for k in keys]


def _column(header: list[str], name: str | None, candidates: tuple[str, ...], what: str, table: Path) -> int | None:
    if name is not None:
        if name not in header:
            raise SampleCNNError(f"has no {what} column {name!r} (columns: {', '.join(header)})", table)
        return header.index(name)
    lower = [h.lower() for h in header]
    return next((lower.index(c) for c in candidates if c in lower), None)


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None


def _labels(header, rows, skip: set[int], tag_col: int | None, table: Path):
    """(tag names, (N, T) float32 labels, format name, ignored column names)."""
    if tag_col is not None:
        lists = [[t.strip() for t in r[tag_col].split(TAG_SEPARATOR) if t.strip()] for r in rows]
        names = sorted({t for tags in lists for t in tags})
        if not names:
            raise SampleCNNError(f"its tag column {header[tag_col]!r} has no tags", table)
        pos = {t: j for j, t in enumerate(names)}
        labels = np.zeros((len(rows), len(names)), np.float32)
        for i, tags in enumerate(lists):
            labels[i, [pos[t] for t in tags]] = 1.0
        return names, labels, "tag-list", []
    cols, ignored, values = [], [], []
    for j, name in enumerate(header):
        if j in skip:
            continue
        col = [_number(r[j]) for r in rows]
        if all(v is not None for v in col):
            cols.append(j)
            values.append(col)
        else:
            ignored.append(name)
    if not cols:
        raise SampleCNNError("has no label columns: give a tag-list column (--tag-column) or columns of numbers "
                             "in [0, 1], one per tag", table)
    labels = np.array(values, dtype=np.float32).T
    binary = bool(np.isin(labels, (0.0, 1.0)).all())
    return [header[j] for j in cols], labels, "binary" if binary else "soft", ignored


def source(audio_dir: str | os.PathLike, labels: str | os.PathLike, top: int | None = None,
           tags: list[str] | None = None, path_column: str | None = None, tag_column: str | None = None,
           split_column: str | None = None, group_column: str | None = None, valid_fraction: float = 0.1,
           test_fraction: float = 0.1, seed: int = 0) -> Source:
    """The clips to cache, their splits and labels, from a label table (see the module docstring)."""
    table = Path(labels)
    header, rows = read_table(table)
    if len(set(header)) != len(header):
        raise SampleCNNError("has repeated column names", table)
    path_col = _column(header, path_column, PATH_COLUMNS, "path", table)
    if path_col is None:
        raise SampleCNNError(f"has no path column (name it one of {', '.join(PATH_COLUMNS)} or pass "
                             f"--path-column)", table)
    split_col = _column(header, split_column, (), "split", table) if split_column else None
    group_col = _column(header, group_column, (), "group", table) if group_column else None
    skip = {path_col} | {c for c in (split_col, group_col) if c is not None}
    tag_col = _column(header, tag_column, ("tags",), "tag", table)
    if tag_col in skip:
        tag_col = None

    paths = [r[path_col].strip() for r in rows]
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        if not p:
            raise SampleCNNError(f"row {i + 2} has an empty path", table)
        if p in seen:
            raise SampleCNNError(f"lists {p!r} twice (rows {seen[p] + 2} and {i + 2})", table)
        seen[p] = i

    all_tags, matrix, fmt, ignored = _labels(header, rows, skip, tag_col, table)
    if ignored:
        print(f"samplecnn: {table}: ignoring columns that are not labels: {', '.join(ignored)}", file=sys.stderr)
    freq = vocab.counts(matrix, all_tags)
    chosen = vocab.choose(freq, top=top, tags=tags)
    labels_out = matrix[:, [all_tags.index(t) for t in chosen]]

    if split_col is not None:
        splits = []
        for i, r in enumerate(rows):
            s = _SPLIT_NAMES.get(r[split_col].strip().lower())
            if s is None:
                raise SampleCNNError(f"row {i + 2}: split {r[split_col]!r} is not train, valid or test", table)
            splits.append(s)
        split_info: dict = {"column": header[split_col]}
    else:
        groups = [r[group_col].strip() for r in rows] if group_col is not None else [""] * len(rows)
        splits = group_split(groups, valid_fraction, test_fraction, seed)
        split_info = {"group_column": header[group_col] if group_col is not None else None,
                      "valid_fraction": valid_fraction, "test_fraction": test_fraction, "seed": seed}

    info = {"labels_table": str(table), "label_format": fmt, "split": split_info, "ignored_columns": ignored,
            "tag_order": "given" if tags is not None else "mtat-standard" if chosen == list(MTAT_TOP50)
            else "frequency",
            "tag_frequency": {t: round(freq[t], 6) for t in vocab.ranked(freq)}}
    return Source(name="folder", root=Path(audio_dir), paths=paths, splits=splits, labels=labels_out,
                  tags=chosen, info=info)
