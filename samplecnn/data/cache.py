"""The training cache: every clip decoded once to 22050 Hz int16, read back at memory speed.

Layout of a cache folder (format version 1):

    audio.i16    all clips back to back, int16 little-endian, sample = round(clip(x, -1, 1) * 32767);
                 one memmap-able file, so a crop is a slice of the page cache, not a decode (30-s clip: 1.3 MB)
    index.csv    one row per clip, in label order: path, split, offset, length (samples), seconds
    labels.npy   float32 (N, T): 0/1 tags or soft labels in [0, 1]
    tags.json    the T tag names, in label-column order
    meta.json    written LAST, atomically: its presence is what makes the cache complete. Holds the format
                 version, the sample rate, the dataset and options, split sizes, tag frequencies, every file that
                 could not be decoded with its error, and how many clips each (resumed) run decoded.
    .partial/    only while `samplecnn prepare` runs or after it was interrupted (see build.py)

Optional teacher labels, written by `samplecnn teach` (teach.py) at the student's segment resolution:

    teacher/segment_labels.npy   float32 (S, T): one row per 59049-sample grid segment (start k * hop,
                                 k < max(1, (length - 59049) // hop + 1)), columns in tags.json order; hop is
                                 meta.json's segment_hop (59049 where it is absent: non-overlapping segments)
    teacher/segment_offsets.npy  int64 (N + 1,): clip i's segments are rows offsets[i]:offsets[i + 1]
                                 (none for a file the teacher could not read)
    teacher/meta.json            written last: teacher(s), counts, and the cache it belongs to (`cache_id`, a hash
                                 of meta.json), so that labels left over from before a `prepare --force` are ignored
    labels_original.npy          the labels prepare wrote; labels.npy then holds each clip's mean teacher label

int16 halves the size of float32 (MTAT: ~27 GB instead of ~54 GB), and its quantisation noise (-96 dB) is far
below an mp3's. Scale 32767 (not 32768) keeps -1 and 1 symmetric.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import SampleCNNError
from ..segments import SEGMENT_SAMPLES

__all__ = ["Cache", "FORMAT", "VERSION", "SCALE", "DTYPE", "SPLITS", "INCOMPLETE", "cache_id"]

FORMAT = "samplecnn-cache"
VERSION = 1
SCALE = 32767.0
DTYPE = np.dtype("<i2")
SPLITS = ("train", "valid", "test")
AUDIO, INDEX, LABELS, TAGS, META, PARTIAL = "audio.i16", "index.csv", "labels.npy", "tags.json", "meta.json", ".partial"
INDEX_COLUMNS = ("path", "split", "offset", "length", "seconds")
INCOMPLETE = "not a complete samplecnn cache: run `samplecnn prepare` again to resume"
TEACHER, SEGMENT_LABELS, SEGMENT_OFFSETS, LABELS_ORIGINAL = ("teacher", "segment_labels.npy", "segment_offsets.npy",
                                                             "labels_original.npy")


def cache_id(meta_text: str) -> str:
    """Identity of one prepared cache: prepare rewrites meta.json on every (re)build, nothing else does."""
    return hashlib.sha256(meta_text.encode("utf-8")).hexdigest()[:16]


class Cache:
    """Read-only view of a prepared cache; cheap to open, safe to pickle into DataLoader workers.

    tags, labels (N, T) float32, splits (N,) str, paths, lengths (N,) int64 samples, offsets, sample_rate,
    meta (the meta.json dict) and failures [(path, error)] are plain attributes. The audio file is memory-mapped
    (clip) or opened (clip_float) on first use in each process: a pickled Cache carries neither. So are the
    teacher's segment labels (segment_labels), when `samplecnn teach` wrote them for this very cache.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise SampleCNNError(INCOMPLETE, self.path)
        try:
            meta_text = meta_path.read_text()
            self.id = cache_id(meta_text)
            self.meta = json.loads(meta_text)
            if self.meta.get("format") != FORMAT:
                raise SampleCNNError("is not a samplecnn cache (meta.json has another format)", self.path)
            if self.meta.get("version") != VERSION:
                raise SampleCNNError(f"is a version {self.meta.get('version')} cache; this samplecnn reads version "
                                     f"{VERSION} (run `samplecnn prepare --force` to rebuild it)", self.path)
            self.tags: list[str] = json.loads((self.path / TAGS).read_text())
            self.labels: np.ndarray = np.load(self.path / LABELS)
            rows = _read_index(self.path / INDEX)
        except (OSError, ValueError, KeyError) as e:
            raise SampleCNNError(f"{INCOMPLETE} ({type(e).__name__}: {e})", self.path) from None
        self.paths: list[str] = [r[0] for r in rows]
        self.splits: np.ndarray = np.array([r[1] for r in rows], dtype="<U5")
        self.offsets: np.ndarray = np.array([int(r[2]) for r in rows], dtype=np.int64)
        self.lengths: np.ndarray = np.array([int(r[3]) for r in rows], dtype=np.int64)
        self.sample_rate: int = int(self.meta["sample_rate"])
        self.failures: list[tuple[str, str]] = [(f["path"], f["error"]) for f in self.meta.get("failures", [])]
        self._check()
        self._audio: np.ndarray | None = None
        self._fd: int | None = None
        self.teacher_meta: dict | None = self._teacher_meta()
        self._segments: tuple[np.ndarray, np.ndarray] | None = None

    def _check(self) -> None:
        n = len(self.paths)
        if self.labels.shape != (n, len(self.tags)) or self.labels.dtype != np.float32:
            raise SampleCNNError(f"{INCOMPLETE} (labels.npy is {self.labels.shape} {self.labels.dtype}, "
                                 f"expected ({n}, {len(self.tags)}) float32)", self.path)
        size = (self.path / AUDIO).stat().st_size if (self.path / AUDIO).exists() else -1
        if size != self.meta.get("audio_bytes"):
            raise SampleCNNError(f"{INCOMPLETE} (audio.i16 has {size} bytes, meta.json says "
                                 f"{self.meta.get('audio_bytes')})", self.path)
        if n and int((self.offsets + self.lengths).max()) * DTYPE.itemsize > size:
            raise SampleCNNError(f"{INCOMPLETE} (index.csv points past the end of audio.i16)", self.path)
        bad = set(self.splits.tolist()) - set(SPLITS)
        if bad:
            raise SampleCNNError(f"index.csv has unknown split names: {', '.join(sorted(bad))}", self.path)

    # -- audio --

    @property
    def audio(self) -> np.ndarray:
        """All samples as one int16 memmap (opened lazily, per process)."""
        if self._audio is None:
            self._audio = np.memmap(self.path / AUDIO, dtype=DTYPE, mode="r")
        return self._audio

    def clip(self, i: int) -> np.ndarray:
        """Clip i's int16 samples: a view into the memmap (no copy, no read until touched)."""
        i = range(len(self.paths))[i]  # negative indices, IndexError
        off = int(self.offsets[i])
        return self.audio[off : off + int(self.lengths[i])]

    def clip_float(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 copy of samples [start, start + length) of clip i, scaled back to [-1, 1].

        length None reads to the clip's end; a window reaching past the end is zero-padded, so a crop always has
        `length` samples (a clip shorter than one segment still yields a full segment)."""
        i = range(len(self.paths))[i]
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"start and length must be >= 0, got start={start}, length={length}")
        n = int(self.lengths[i])
        if length is None:
            length = max(0, n - start)
        out = np.zeros(length, dtype=np.float32)
        piece = self._read(int(self.offsets[i]) + start, max(0, min(length, n - start)))
        np.multiply(piece, np.float32(1.0 / SCALE), out=out[: len(piece)], casting="unsafe")
        return out

    def _read(self, offset: int, n: int) -> np.ndarray:
        """n int16 samples from `offset` as a copy: one pread, twice as fast as memmap page faults when the file
        is not in the page cache (a first epoch over a cache larger than RAM), as fast when it is."""
        if not hasattr(os, "preadv"):  # Windows
            return np.array(self.audio[offset : offset + n])
        if self._fd is None:
            self._fd = os.open(self.path / AUDIO, os.O_RDONLY)
        buf = np.empty(n, dtype=DTYPE)
        if n and os.preadv(self._fd, [buf], offset * DTYPE.itemsize) != buf.nbytes:
            raise SampleCNNError("audio.i16 is shorter than its index says (changed since it was written?)",
                                 self.path)
        return buf

    # -- teacher labels --

    def _teacher_meta(self) -> dict | None:
        """teacher/meta.json if it is complete and was written for this cache (not one rebuilt since)."""
        try:
            meta = json.loads((self.path / TEACHER / META).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("cache_id") != self.id or meta.get("clips") != len(self) or meta.get("tags") != self.tags:
            return None
        return meta

    @property
    def has_segment_labels(self) -> bool:
        """True when `samplecnn teach` labelled this cache's segments."""
        return self.teacher_meta is not None

    @property
    def segment_hop(self) -> int:
        """Samples between the starts of consecutive teacher-labelled segments (one segment unless `samplecnn teach
        --labels-per-segment` made the grid denser)."""
        return int((self.teacher_meta or {}).get("segment_hop", SEGMENT_SAMPLES))

    @property
    def crop_slack(self) -> int:
        """How many samples a training crop may move either way from its labelled segment and stay inside the
        window the teacher heard (0 for labels written before teach recorded it)."""
        return int((self.teacher_meta or {}).get("crop_slack", 0))

    def segment_labels(self, i: int) -> np.ndarray | None:
        """(n_segments, T) float32 teacher labels of clip i's grid segments (row k: samples [k * segment_hop,
        k * segment_hop + 59049)), read-only from a memory map; None without teacher labels. n_segments is 0 for
        a file the teacher could not read."""
        if self.teacher_meta is None:
            return None
        i = range(len(self.paths))[i]
        if self._segments is None:
            folder = self.path / TEACHER
            try:
                rows = np.load(folder / SEGMENT_LABELS, mmap_mode="r")
                offsets = np.load(folder / SEGMENT_OFFSETS)
            except (OSError, ValueError) as e:
                raise SampleCNNError(f"unreadable teacher labels ({type(e).__name__}: {e}); run `samplecnn teach "
                                     f"--force` again", folder) from None
            if (offsets.shape != (len(self) + 1,) or rows.ndim != 2 or rows.shape[1] != len(self.tags)
                    or offsets[0] != 0 or offsets[-1] != len(rows) or (np.diff(offsets) < 0).any()):
                raise SampleCNNError("teacher labels do not fit this cache; run `samplecnn teach --force` again",
                                     folder)
            self._segments = rows, offsets
        rows, offsets = self._segments
        return rows[int(offsets[i]):int(offsets[i + 1])]

    # -- splits --

    def indices(self, split: str) -> np.ndarray:
        """Clip indices of one split ('train', 'valid' or 'test'), ascending."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return np.flatnonzero(self.splits == split)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s} {int((self.splits == s).sum())}" for s in SPLITS)
        return f"Cache({str(self.path)!r}: {len(self)} clips ({sizes}), {len(self.tags)} tags)"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_audio"] = state["_fd"] = state["_segments"] = None  # each process maps/opens the files itself
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _read_index(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if tuple(header) != INDEX_COLUMNS:
            raise ValueError(f"index.csv header is {header}, expected {list(INDEX_COLUMNS)}")
        return list(reader)
