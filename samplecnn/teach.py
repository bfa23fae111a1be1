"""`samplecnn teach`: label every 59049-sample segment of a prepared cache with a musicnn teacher.

Why per segment: the student learns from 2.7-s crops, and a track's mean label says only what the teacher hears
somewhere in it; a label for the crop itself says what is in the crop. Format of what is written: data/cache.py.

Alignment. Grid segment k of a clip covers samples [k * hop, k * hop + 59049) at 22050 Hz. The default hop is one
segment: the grid of non-overlapping segments that song-level inference uses (k < length // 59049, one zero-padded
segment for a shorter clip). `labels_per_segment` 3 or 9 makes the grid denser (hop 59049 / 3 or / 9; every 3rd or
9th row is then the default grid's row, exactly): precomputed labels for as many distinct crops as the teacher run
in every training step would give on plain audio, at a one-off cost (`train --teacher labels`). A segment's centre is
c = (k * hop + 59049 / 2) / 22050 s. The teacher decodes the ORIGINAL file at 16 kHz with samplecnn.audio
(soxr HQ: the pipeline the port was verified with; resampling the cache's 22050-Hz audio again would be another
one), computes the log-mel of the whole track once (frame f centred at f * 256 / 16000 s) and takes the 187-frame
patch [s, s + 187) whose middle frame s + 93 is nearest to c, shifted back inside the track at its ends. A track
shorter than one patch is zero-padded to one, as MusicnnTeacher.tag does. Labels are the teacher's sigmoid
outputs (with `both`, the mean of MTT_musicnn and MTT_vgg), columns mapped by name to the cache's tags.json.

How a run survives being killed: teacher/.partial/plan.json names the cache and the teachers; every finished clip
is one atomically written .npy in teacher/.partial/clips/ (a file the teacher cannot read: a .err file, then a
0-row .npy), so a rerun computes only the missing clips. At the end the arrays are assembled, labels.npy is
replaced by the clip means (the original kept once as labels_original.npy), and teacher/meta.json, the
completeness marker, is written last. Unreadable files are listed, never fatal, and not retried (--force
starts over).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import audio
from .data.cache import LABELS, LABELS_ORIGINAL, META, SEGMENT_LABELS, SEGMENT_OFFSETS, TEACHER, Cache
from .errors import AudioError, SampleCNNError
from .fileio import atomic_path
from .models import SAMPLE_RATE, SEGMENT_SAMPLES
from .tags import MTAT_TOP50
from .teachers import musicnn as M
from .workers import Pool

__all__ = ["TEACHER_CHOICES", "LABELS_PER_SEGMENT", "CROP_SLACK", "teach", "teacher_names", "segment_counts",
           "patch_starts", "tag_columns", "make_table", "tag_statistics", "Taught"]

TEACHER_CHOICES = {"musicnn": ("MTT_musicnn",), "vgg": ("MTT_vgg",), "both": ("MTT_musicnn", "MTT_vgg")}
FORMAT, VERSION = "samplecnn-teacher-labels", 1
PARTIAL = ".partial"
LABELS_PER_SEGMENT = (1, 3, 9)  # divisors of 59049 = 3**10, so that a denser grid contains the default one
# How far a training crop may move from its grid segment and stay inside the teacher's patch: the patch spans
# (187 - 1) * 256 samples at 16 kHz = 2.976 s between its outer frame centres, the crop 2.678 s, and the patch's
# middle frame is up to half a frame (176 samples at 22050 Hz) from the segment's centre.
CROP_SLACK = int(((M.PATCH_FRAMES - 1) * M.HOP * SAMPLE_RATE / M.SAMPLE_RATE - SEGMENT_SAMPLES) / 2
                 - M.HOP / 2 * SAMPLE_RATE / M.SAMPLE_RATE)
_AHEAD = 2  # clips queued per worker process


def teacher_names(choice: str) -> tuple[str, ...]:
    if choice not in TEACHER_CHOICES:
        raise SampleCNNError(f"unknown --teacher {choice!r}: choose {', '.join(TEACHER_CHOICES)}")
    return TEACHER_CHOICES[choice]


def segment_counts(lengths: np.ndarray, hop: int = SEGMENT_SAMPLES) -> np.ndarray:
    """Grid segments per clip: the whole 59049-sample segments starting every `hop` samples, at least one (a short
    clip is padded to one)."""
    return np.maximum(1, (np.asarray(lengths, dtype=np.int64) - SEGMENT_SAMPLES) // hop + 1)


def patch_starts(n_segments: int, n_frames: int, hop: int = SEGMENT_SAMPLES) -> np.ndarray:
    """First log-mel frame of the teacher patch for each student segment (module docstring: Alignment)."""
    centres = (np.arange(n_segments) * hop + SEGMENT_SAMPLES / 2) / SAMPLE_RATE
    middle = np.floor(centres * M.SAMPLE_RATE / M.HOP + 0.5).astype(np.int64)
    return np.clip(middle - M.PATCH_FRAMES // 2, 0, n_frames - M.PATCH_FRAMES)


def tag_columns(cache_tags: Iterable[str], teacher_tags: Iterable[str] = MTAT_TOP50) -> list[int]:
    """The teacher output column of each cache tag, matched by name (case and outer spaces ignored)."""
    index = {t.strip().casefold(): j for j, t in enumerate(teacher_tags)}
    cache_tags = list(cache_tags)
    unknown = [t for t in cache_tags if t.strip().casefold() not in index]
    if unknown:
        raise SampleCNNError(f"the cache has tags the teacher does not know ({', '.join(map(repr, unknown))}); "
                             f"musicnn predicts only the 50 MTAT tags: prepare the cache with a subset of them")
    return [index[t.strip().casefold()] for t in cache_tags]


# ----------------------------------------------------------------------------------------------------------------
# labelling one file (in a worker process or in this one)


class _Labeller:
    """Teacher labels of one file's grid segments: (clip index, rows or None, error)."""

    def __init__(self, names: tuple[str, ...], columns: list[int]):
        self.teachers = [M.load_teacher(name) for name in names]
        self.columns = columns

    def __call__(self, job: tuple[int, str, int, int]) -> tuple[int, np.ndarray | None, str]:
        i, path, n_segments, hop = job
        try:
            return i, self.label(path, n_segments, hop), ""
        except AudioError as e:
            return i, None, e.reason
        except Exception as e:  # a decoder bug or MemoryError on one file must not stop the whole cache
            return i, None, f"unexpected {type(e).__name__}: {e}"

    def label(self, path: str, n_segments: int, hop: int = SEGMENT_SAMPLES) -> np.ndarray:
        wave = audio.decode_mono(path, sr=M.SAMPLE_RATE)
        if len(wave) < M.MIN_SAMPLES:
            wave = np.pad(wave, (0, M.MIN_SAMPLES - len(wave)))
        features = M.log_compress(M.melpower(wave))        # (frames, 96), once per track
        patches = np.stack([features[s:s + M.PATCH_FRAMES] for s in patch_starts(n_segments, len(features), hop)])
        outputs = np.mean([t.patch_outputs(patches) for t in self.teachers], axis=0)
        return np.ascontiguousarray(outputs[:, self.columns], dtype=np.float32)


_WORKER: _Labeller | None = None


def _init_worker(names: tuple[str, ...], columns: list[int]) -> None:
    """Each worker loads the teachers once (one torch thread each: batch-1 CPU inference scales better across
    processes than across threads; workers.quiet_worker)."""
    global _WORKER
    _WORKER = _Labeller(names, columns)


def _work(job: tuple[int, str, int, int]) -> tuple[int, np.ndarray | None, str]:
    return _WORKER(job)


def _teachers(names: tuple[str, ...], columns: list[int], jobs: list[tuple[int, str, int, int]], workers: int) -> Pool:
    """Results of `jobs` in completion order, from `workers` processes (1: in this process). They run torch, so
    they are spawned (workers.context)."""
    return Pool(_work, jobs, workers, ahead=_AHEAD, runs_torch=True, ordered=False,
                initializer=_init_worker, initargs=(names, columns), local=lambda: _Labeller(names, columns),
                broken="a teacher worker died (out of memory?); finished clips are kept: run `samplecnn teach` "
                       "again to resume")


# ----------------------------------------------------------------------------------------------------------------
# the run


class Taught:
    """What `teach` did: the cache (reopened), all segment labels (memory-mapped), clips computed in this run,
    unreadable files, seconds taken."""

    def __init__(self, cache: Cache, computed: int, failures: list[tuple[str, str]], seconds: float):
        self.cache, self.computed, self.failures, self.seconds = cache, computed, failures, seconds
        self.rows = np.load(cache.path / TEACHER / SEGMENT_LABELS, mmap_mode="r")


def teach(data: str | os.PathLike, teacher: str = "both", workers: int = 1, force: bool = False,
          audio_root: str | os.PathLike | None = None, progress: bool = True,
          on_clip: Callable[[int], None] | None = None, labels_per_segment: int = 1) -> Taught:
    """Label the cache at `data` (resuming an interrupted run there); see the module docstring.

    audio_root: where the cache's paths are relative to (default: the root recorded by prepare). on_clip(i) is
    called after clip i's labels are safely on disk (progress reporting; tests interrupt a run with it)."""
    started = time.monotonic()
    names = teacher_names(teacher)
    if int(workers) < 1:
        raise SampleCNNError(f"--workers must be at least 1, got {workers}")
    if labels_per_segment not in LABELS_PER_SEGMENT:
        raise SampleCNNError(f"--labels-per-segment must be one of {', '.join(map(str, LABELS_PER_SEGMENT))}, "
                             f"got {labels_per_segment}")
    hop = SEGMENT_SAMPLES // labels_per_segment
    cache = Cache(data)
    columns = tag_columns(cache.tags)
    for name in names:
        M.checkpoint_dir(name)  # not installed: one clear line now, not one failure per clip
    root = Path(audio_root if audio_root is not None else cache.meta["root"])
    if not root.is_dir():
        raise SampleCNNError("the audio folder the cache was prepared from is not there (pass --audio DIR)", root)
    folder = cache.path / TEACHER
    partial = folder / PARTIAL
    counts = segment_counts(cache.lengths, hop)
    plan = {"format": FORMAT, "version": VERSION, "cache_id": cache.id, "teachers": list(names),
            "tags": cache.tags, "clips": len(cache), "segments": int(counts.sum())}
    if hop != SEGMENT_SAMPLES:  # so that a run interrupted before denser grids existed still resumes
        plan["segment_hop"] = hop

    if cache.has_segment_labels and not force:
        raise SampleCNNError("already has teacher labels (pass --force to compute them again)", cache.path)
    _forget_stale(cache, folder, partial)
    if (folder / META).exists():
        (folder / META).unlink()  # first: from here on the old labels no longer look complete
    old_plan = _read_json(partial / "plan.json")
    if old_plan and (force or old_plan != plan):
        if not force:
            _say(f"{cache.path}: the interrupted run used other teachers or tags; starting over")
        shutil.rmtree(partial)
    if not (partial / "plan.json").exists():
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "clips").mkdir(parents=True)
        _write(partial / "plan.json", json.dumps(plan, indent=1).encode())

    done = _finished(partial, counts, len(cache.tags))
    todo = [i for i in range(len(cache)) if i not in done]
    if done:
        _say(f"{cache.path}: resuming, {len(done)} of {len(cache)} clips already labelled")
    paths = {i: str(root / cache.paths[i]) for i in todo}
    if todo and not any(os.path.isfile(p) for p in paths.values()):
        raise SampleCNNError(f"none of the cache's {len(todo)} audio files is under this folder (pass --audio DIR)",
                             root)
    computed = _label_all(partial, [(i, paths[i], int(counts[i]), hop) for i in todo], names, columns, int(workers),
                          total=len(cache), progress=progress, on_clip=on_clip)
    failures = _finalise(cache, folder, partial, names, hop, root)
    return Taught(Cache(cache.path), computed, failures, time.monotonic() - started)


def _forget_stale(cache: Cache, folder: Path, partial: Path) -> None:
    """Drop teacher files left from before `prepare --force` rebuilt this cache (prepare leaves teacher/ alone):
    their labels_original.npy is not this cache's (its labels.npy is prepare's own again)."""
    records = [r.get("cache_id") for r in (_read_json(folder / META), _read_json(partial / "plan.json")) if r]
    if not records or cache.id in records:
        return
    _say(f"{cache.path}: teacher labels of an earlier build of this cache found; discarding them")
    (folder / META).unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    for name in (SEGMENT_LABELS, SEGMENT_OFFSETS):
        (folder / name).unlink(missing_ok=True)
    (cache.path / LABELS_ORIGINAL).unlink(missing_ok=True)


def _clip_file(partial: Path, i: int, suffix: str = ".npy") -> Path:
    return partial / "clips" / f"{i:07d}{suffix}"


def _finished(partial: Path, counts: np.ndarray, n_tags: int) -> set[int]:
    """Clips whose .npy is complete and of the expected shape (anything else is computed again)."""
    done = set()
    for f in (partial / "clips").glob("*.npy"):
        try:
            i = int(f.stem)
            rows = np.load(f, mmap_mode="r")
        except (ValueError, OSError):
            continue
        if 0 <= i < len(counts) and rows.dtype == np.float32 and rows.shape in ((counts[i], n_tags), (0, n_tags)):
            done.add(i)
    return done


def _label_all(partial: Path, jobs: list[tuple[int, str, int, int]], names: tuple[str, ...], columns: list[int],
               workers: int, total: int, progress: bool, on_clip: Callable[[int], None] | None) -> int:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(jobs), unit="clip", desc="teaching", dynamic_ncols=True,
               file=sys.stderr, disable=not progress or not jobs)
    computed = 0
    try:
        with _teachers(names, columns, jobs, min(workers, max(1, len(jobs)))) as results:
            for i, rows, error in results:
                if rows is None:
                    _write(_clip_file(partial, i, ".err"), " ".join(error.split()).encode("utf-8"))
                    rows = np.zeros((0, len(columns)), dtype=np.float32)
                _write(_clip_file(partial, i), _npy(rows))
                computed += 1
                bar.update(1)
                if on_clip is not None:
                    on_clip(i)
    finally:
        bar.close()
    return computed


def _finalise(cache: Cache, folder: Path, partial: Path, names: tuple[str, ...], hop: int,
              root: Path) -> list[tuple[str, str]]:
    """Assemble the arrays, replace labels.npy by the clip means, write teacher/meta.json last, drop .partial."""
    per_clip = [np.load(_clip_file(partial, i)) for i in range(len(cache))]
    failures = [(cache.paths[i], _clip_file(partial, i, ".err").read_text(encoding="utf-8"))
                for i in range(len(cache)) if len(per_clip[i]) == 0]
    offsets = np.zeros(len(cache) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in per_clip])
    rows = np.concatenate(per_clip).astype(np.float32, copy=False)
    _write(folder / SEGMENT_LABELS, _npy(rows))
    _write(folder / SEGMENT_OFFSETS, _npy(offsets))

    original_path = cache.path / LABELS_ORIGINAL
    original = np.load(original_path) if original_path.exists() else cache.labels
    if original.shape != cache.labels.shape:
        raise SampleCNNError(f"{LABELS_ORIGINAL} does not fit this cache's labels; move it away and run "
                             f"`samplecnn teach --force`", cache.path)
    if not original_path.exists():
        _write(original_path, _npy(original))
    means = original.copy()  # a file the teacher could not read keeps its original labels
    for i, r in enumerate(per_clip):
        if len(r):
            means[i] = r.mean(axis=0, dtype=np.float64)
    _write(cache.path / LABELS, _npy(means.astype(np.float32)))

    meta = {
        "format": FORMAT, "version": VERSION, "teachers": list(names), "musicnn_version": _musicnn_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cache_id": cache.id, "clips": len(cache), "segments": int(len(rows)), "tags": cache.tags,
        "segment_samples": SEGMENT_SAMPLES, "sample_rate": SAMPLE_RATE, "teacher_sample_rate": M.SAMPLE_RATE,
        "patch_frames": M.PATCH_FRAMES, "hop": M.HOP, "segment_hop": hop, "crop_slack": CROP_SLACK,
        "alignment": "187-frame patch centred on each 59049-sample grid segment, clamped to the track",
        "audio_root": str(root), "labels_replaced": "labels.npy = clip mean of the segment labels",
        "failures": [{"path": p, "error": e} for p, e in failures],
    }
    _write(folder / META, (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))  # last
    shutil.rmtree(partial, ignore_errors=True)
    return failures


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return buf.getvalue()


def _write(path: Path, content: bytes) -> None:
    """Atomic write, readable by the other users of a shared cache (mkstemp alone makes 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(content)
        os.chmod(tmp, 0o666 & ~umask)


def _musicnn_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("musicnn")
    except metadata.PackageNotFoundError:
        return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _say(text: str) -> None:
    print(f"samplecnn: {text}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------
# around the run: the label table to prepare a corpus with, and what the teacher said


def make_table(manifests, out: str | os.PathLike, force: bool = False) -> int:
    """A label table for `samplecnn prepare folder` from one or more corpus manifests (docs/corpus.md): their path
    and split columns plus the 50 MTAT tags as all-zero columns, so that the cache's tags.json is the teacher's
    vocabulary. Paths are written relative to the FIRST manifest's folder, which is the `--audio` folder to give
    `prepare folder`: that is how the Debian corpus and the MIDI renders (e.g. `corpus midi --out corpus/midi`)
    make one cache. Returns the number of rows."""
    if isinstance(manifests, (str, os.PathLike)):
        manifests = [manifests]
    manifests = [Path(m) for m in manifests]
    root = Path(os.path.abspath(manifests[0])).parent   # not resolve(): a linked-in folder keeps its place
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "split", *MTAT_TOP50])
    seen: dict[str, Path] = {}
    for manifest in manifests:
        try:
            with open(manifest, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise SampleCNNError(f"cannot be read ({e.strerror})", manifest) from None
        if not rows or not {"path", "split"} <= set(rows[0]):
            raise SampleCNNError("needs 'path' and 'split' columns and at least one row (a corpus manifest.csv)",
                                 manifest)
        base = Path(os.path.abspath(manifest)).parent
        for r in rows:
            path = Path(os.path.relpath(base / r["path"], root)).as_posix()
            if path in seen:
                raise SampleCNNError(f"lists {path!r}, which {seen[path]} lists too", manifest)
            seen[path] = manifest
            writer.writerow([path, r["split"], *(["0.0"] * len(MTAT_TOP50))])
    with atomic_path(out, overwrite=force) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    return len(seen)


def tag_statistics(rows: np.ndarray, tags: list[str]) -> list[dict]:
    """Per tag over all segments: mean score; how many segments rank it in their top decile of tags (top 5 of 50:
    what the teacher says the segment mostly is); how many give it >= 0.2. Sorted by mean, highest first."""
    rows = np.asarray(rows, dtype=np.float32)
    top = max(1, int(round(0.1 * rows.shape[1])))
    ranks = np.argsort(-rows, axis=1, kind="stable")[:, :top]
    in_top = np.bincount(ranks.ravel(), minlength=rows.shape[1])
    stats = [{"tag": t, "mean": float(rows[:, j].mean()), "top_decile": int(in_top[j]),
              "at_least_0.2": int((rows[:, j] >= 0.2).sum())} for j, t in enumerate(tags)]
    return sorted(stats, key=lambda s: -s["mean"])
