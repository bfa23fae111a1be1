"""Writing a cache: decode every file once, in parallel, resumably and atomically (format: cache.py).

How a run survives being killed:
- Work happens in the cache folder, with the bookkeeping in `.partial/`: plan.json (the ordered file list and its
  fingerprint), progress.tsv (one line per finished clip: plan index, offset, length, run number, error) and
  runs.tsv (one line per start). meta.json, the completeness marker, is written last, so a killed run never leaves
  something `Cache` accepts.
- Clips are appended to audio.i16 in plan order (workers decode ahead, the parent writes in order), so the file is
  byte-identical whether or not the run was interrupted. A progress line is written only after the audio it
  describes has been fsynced (batched about twice a second), so a line never points at samples that are not on
  disk; on resume, audio.i16 is cut back to the end of the last recorded clip and decoding goes on from there.
- An unreadable file is a progress line with its error, not a stop; it is listed in meta.json and printed at the
  end. It is not retried on resume (use --force to start again).
- A rerun whose file list differs from the interrupted one (other options, other root) starts over, and says so.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import audio
from ..errors import AudioError, SampleCNNError
from ..fileio import atomic_path
from ..models import SAMPLE_RATE
from ..workers import Pool, usable_cpus
from .cache import (
    AUDIO,
    DTYPE,
    FORMAT,
    INDEX,
    INDEX_COLUMNS,
    LABELS,
    META,
    PARTIAL,
    SCALE,
    SPLITS,
    TAGS,
    VERSION,
    Cache,
)

__all__ = ["Source", "build", "default_workers", "to_int16"]

_SYNC_SECONDS = 0.5  # fsync + progress-line interval: the most decoding work a kill can lose
_AHEAD = 4           # clips queued per worker, so that the in-order writer never starves them


@dataclasses.dataclass
class Source:
    """What to cache (made by mtat.py or folder.py): files in cache order, their splits and labels."""

    name: str              # "mtat" or "folder"
    root: Path             # paths are relative to this
    paths: list[str]       # as written in the label table
    splits: list[str]      # 'train' | 'valid' | 'test' per path
    labels: np.ndarray     # (N, T) float32
    tags: list[str]
    info: dict             # JSON-ready facts for meta.json: options, tag frequencies, what was dropped and why

    def __post_init__(self) -> None:
        n = len(self.paths)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if len(self.splits) != n or self.labels.shape != (n, len(self.tags)):
            raise ValueError("paths, splits and labels disagree in length")
        if set(self.splits) - set(SPLITS):
            raise ValueError(f"unknown split names {set(self.splits) - set(SPLITS)}")
        if n == 0:
            raise SampleCNNError("no clips to prepare (the label table selects none)")


def default_workers() -> int:
    return min(4, usable_cpus())


def to_int16(x: np.ndarray) -> np.ndarray:
    """float audio -> int16 at scale 32767, clipped to [-1, 1] first (mp3 overshoot), rounded to nearest."""
    y = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    y *= np.float32(SCALE)
    return np.rint(y, out=y).astype(DTYPE)


def build(source: Source, out: str | os.PathLike, workers: int | None = None, force: bool = False,
          min_seconds: float = 0.0, progress: bool = True) -> Cache:
    """Decode `source` into the cache folder `out` (resuming an interrupted run there) and open it.

    workers: decoding processes (default min(4, CPUs)); 1 decodes in this process. min_seconds: clips shorter
    than this after decoding are left out of the index (Lee et al. 2017 used 29.1 s on MTAT)."""
    out = Path(out)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise SampleCNNError(f"--workers must be at least 1, got {workers}")
    _claim(out, force)
    partial = out / PARTIAL
    fingerprint = _fingerprint(source)
    plan = partial / "plan.json"
    if plan.is_file() and _read_json(plan).get("fingerprint") != fingerprint:
        _say(f"{out}: the file list differs from the interrupted run's; starting over")
        _wipe(out)
    if not plan.is_file():
        _wipe(out)
        partial.mkdir(parents=True)
        (out / AUDIO).write_bytes(b"")
        (partial / "progress.tsv").write_text("")
        (partial / "runs.tsv").write_text("")
        with atomic_path(plan, overwrite=True) as tmp:  # last: its presence means the folder is set up
            tmp.write_text(json.dumps({"fingerprint": fingerprint, "root": str(source.root),
                                       "paths": source.paths}))

    done = _resume(out)
    run = (partial / "runs.tsv").read_text().count("\n") + 1
    with open(partial / "runs.tsv", "a") as f:
        f.write(f"{run}\t{_now()}\t{workers}\n")
    if done:
        _say(f"{out}: resuming, {len(done)} of {len(source.paths)} clips already done")
    todo = [str(source.root / p) for p in source.paths[len(done):]]
    try:
        _decode_all(out, todo, len(done), run, workers, total=len(source.paths), progress=progress)
    except OSError as e:  # disk full, folder removed...: what was recorded is safe
        raise SampleCNNError(f"cannot write the cache ({e.strerror or e}); fix that and run `samplecnn prepare` "
                             f"again to resume", out) from None
    return _finalise(out, source, min_seconds)


# ----------------------------------------------------------------------------------------------------------------
# the cache folder


def _claim(out: Path, force: bool) -> None:
    """Make `out` ours to write: new, empty, resumable, or (with force) a cache to rebuild; never someone's folder."""
    if out.exists() and not out.is_dir():
        raise SampleCNNError("exists and is not a folder", out)
    if (out / META).exists():
        if not force:
            raise SampleCNNError("is already a complete samplecnn cache (pass --force to rebuild it)", out)
        (out / META).unlink()  # first: from here on the old cache no longer looks complete
        _wipe(out)
    elif (out / PARTIAL).exists():
        if force:
            _wipe(out)
    elif out.exists() and any(out.iterdir()):
        raise SampleCNNError("exists and is not a samplecnn cache; choose a new or empty folder", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SampleCNNError(f"cannot create the cache folder ({e.strerror})", out) from None


def _wipe(out: Path) -> None:
    """Remove what prepare writes (never anything else in the folder)."""
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    for name in (META, AUDIO, INDEX, LABELS, TAGS):
        (out / name).unlink(missing_ok=True)


def _fingerprint(source: Source) -> str:
    key = json.dumps({"version": VERSION, "sr": SAMPLE_RATE, "root": str(Path(source.root).resolve()),
                      "paths": source.paths})
    return hashlib.sha256(key.encode()).hexdigest()


def _resume(out: Path) -> list[tuple[int, int, int, str]]:
    """The clips an earlier run finished, as (offset, length, run, error); cuts audio.i16 back to their end."""
    path = out / PARTIAL / "progress.tsv"
    size = (out / AUDIO).stat().st_size // DTYPE.itemsize
    done: list[tuple[int, int, int, str]] = []
    end = 0
    with open(path, newline="\n", encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a line cut by the kill
            k, off, length, run, error = line[:-1].split("\t", 4)
            if int(k) != len(done) or int(off) != end or end + int(length) > size:
                break  # not what we wrote (cannot happen short of a disk fault): keep the consistent prefix
            done.append((int(off), int(length), int(run), error))
            end += int(length)
    with open(out / AUDIO, "r+b") as f:
        f.truncate(end * DTYPE.itemsize)
    kept = "".join(f"{k}\t{o}\t{n}\t{r}\t{e}\n" for k, (o, n, r, e) in enumerate(done))
    if kept != path.read_text(encoding="utf-8"):
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(kept, encoding="utf-8")
    return done


# ----------------------------------------------------------------------------------------------------------------
# decoding


def _decode(path: str) -> tuple[np.ndarray | None, str]:
    """One file -> (int16 samples, "") or (None, the reason it could not be decoded). Runs in a worker."""
    try:
        return to_int16(audio.decode_mono(path, sr=SAMPLE_RATE)), ""
    except AudioError as e:
        return None, e.reason
    except Exception as e:  # a decoder bug or MemoryError on one file must not stop a 25,000-file job
        return None, f"unexpected {type(e).__name__}: {e}"


def _decoders(paths: Sequence[str], workers: int) -> Pool:
    """Decode results in `paths` order, with up to workers * _AHEAD files in flight; workers=1 decodes in-process.
    The workers run no torch and start before the caller's progress bar, so they are forked (workers.context)."""
    return Pool(_decode, paths, workers, ahead=_AHEAD, runs_torch=False,
                broken="a decoding worker died (out of memory, or a decoder crash); finished clips are kept: run "
                       "`samplecnn prepare` again to resume (--workers 1 finds the culprit)")


def _decode_all(out: Path, paths: list[str], first: int, run: int, workers: int, total: int,
                progress: bool) -> None:
    """Append each decoded clip to audio.i16 and record it in progress.tsv, in order, fsync before record."""
    from tqdm import tqdm

    offset = (out / AUDIO).stat().st_size // DTYPE.itemsize
    pending: list[str] = []
    with open(out / AUDIO, "ab") as data, open(out / PARTIAL / "progress.tsv", "a", encoding="utf-8") as log, \
            _decoders(paths, workers) as decoded:
        bar = tqdm(total=total, initial=first, unit="clip", disable=not progress or not paths, file=sys.stderr,
                   dynamic_ncols=True, desc="decoding")

        def sync() -> None:
            data.flush()
            os.fsync(data.fileno())
            log.writelines(pending)
            log.flush()
            os.fsync(log.fileno())
            pending.clear()

        last = time.monotonic()
        try:
            for k, (samples, error) in enumerate(decoded, start=first):
                n = 0
                if samples is not None:
                    data.write(samples.data)
                    n = len(samples)
                pending.append(f"{k}\t{offset}\t{n}\t{run}\t{_one_line(error)}\n")
                offset += n
                bar.update(1)
                if time.monotonic() - last >= _SYNC_SECONDS:
                    sync()
                    last = time.monotonic()
        finally:
            sync()  # what was written is whole: record it even when stopping on Ctrl-C or an error
            bar.close()


# ----------------------------------------------------------------------------------------------------------------
# finishing


def _finalise(out: Path, source: Source, min_seconds: float) -> Cache:
    """Write index, labels and tags, then meta.json (the completeness marker), then drop .partial."""
    partial = out / PARTIAL
    done = _resume(out)
    if len(done) != len(source.paths):
        raise SampleCNNError(f"only {len(done)} of {len(source.paths)} clips were decoded; run `samplecnn "
                             f"prepare` again to resume", out)
    min_len = int(round(min_seconds * SAMPLE_RATE))
    failures = [{"path": p, "error": e} for p, (_, _, _, e) in zip(source.paths, done) if e]
    too_short = [p for p, (_, n, _, e) in zip(source.paths, done) if not e and n < min_len]
    keep = [k for k, (_, n, _, e) in enumerate(done) if not e and n >= min_len]
    if not keep:
        raise SampleCNNError(f"none of the {len(done)} files could be used ({len(failures)} unreadable, "
                             f"{len(too_short)} shorter than {min_seconds} s)", out)

    def write(name: str, content: bytes) -> None:
        with atomic_path(out / name, overwrite=True) as tmp:
            tmp.write_bytes(content)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache is often shared with other users

    umask = os.umask(0o022)
    os.umask(umask)
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for k in keep:
        off, n, _, _ = done[k]
        writer.writerow([source.paths[k], source.splits[k], off, n, f"{n / SAMPLE_RATE:.3f}"])
    labels = io.BytesIO()
    np.save(labels, np.ascontiguousarray(source.labels[keep], dtype=np.float32))
    write(INDEX, index.getvalue().encode("utf-8"))
    write(LABELS, labels.getvalue())
    write(TAGS, (json.dumps(source.tags, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    kept_splits = [source.splits[k] for k in keep]
    runs = []
    for line in (partial / "runs.tsv").read_text().splitlines():
        r, started, w = line.split("\t")
        runs.append({"run": int(r), "started": started, "workers": int(w),
                     "decoded": sum(1 for d in done if d[2] == int(r))})
    meta = {
        "format": FORMAT, "version": VERSION, "sample_rate": SAMPLE_RATE, "dtype": "int16", "scale": SCALE,
        "created": _now(), "dataset": source.name, "root": str(source.root),
        "n_clips": len(keep), "splits": {s: kept_splits.count(s) for s in SPLITS}, "n_tags": len(source.tags),
        "audio_bytes": (out / AUDIO).stat().st_size,
        "audio_seconds": round(sum(done[k][1] for k in keep) / SAMPLE_RATE, 3),
        "min_seconds": min_seconds, "too_short": too_short, "failures": failures, "runs": runs,
        "source": source.info,
    }
    write(META, (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))  # last: complete
    shutil.rmtree(partial, ignore_errors=True)
    return Cache(out)


def _one_line(text: str) -> str:
    return " ".join(text.split()) if text else ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _say(text: str) -> None:
    print(f"samplecnn: {text}", file=sys.stderr)
