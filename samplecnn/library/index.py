"""`samplecnn index`: tag whole folders into a library database, resumably.

The pipeline: decoder worker processes (decode.py) hash, decode and segment files in parallel, each streaming its
file's segments through its own pipe; this process gathers segments of any files into model batches as they come
(the model never waits for one file to be decoded whole), and commits each finished track in its own transaction.
With `ray=`, the decoding and the model run on a Ray cluster instead (cluster.py); the plan and the commits here
are the same (_Committing). Inputs are local paths or fsspec URLs (sources.py).

Reliability, by construction:
- each decoder holds one file at a time and has its own pipe, so a decoder that dies (killed, out of memory, a
  decoder crash) costs only the file it held: that file is tried once more in a fresh process, and recorded as a
  failure if it kills that one too. The other decoders and the run go on;
- decoders may run ahead of the model by a fixed number of segments each (decode.py's credit), so memory does not
  grow with a track's length.

What a rerun does with each file found, compared with the row of the same path and model:
- same size and mtime: skipped without reading it (with `verify=True`: hashed, and re-tagged if the bytes differ);
- different size or mtime, same bytes (copied back, touched): only the stat is updated;
- different bytes, or not indexed yet, or failed before: (re-)tagged;
- indexed before but gone from disk: reported as missing, deleted from the library with `prune=True` (refused for a
  root folder that is gone or empty as a whole: that is an unmounted drive or a renamed folder more often than a
  deleted collection).
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from typing import Iterable

import numpy as np

from .. import checkpoint, inference, packs, pretrained
from ..errors import SampleCNNError
from ..workers import context, sigint_held, usable_cpus
from . import decode, sources, store

_POLL_S = 1.0
_CHUNK_SEGMENTS = 16  # segments per message from a decoder: ~3.8 MB, a few dozen ms of model time
_RETRIES = 1          # a file whose decoder died is tried this many more times, each in a fresh process


def default_workers(device_type: str = "cpu") -> int:
    """Decoders to run beside the model, one core left to it. On a CPU at most 4: there the model is far slower
    than one decoder, so it is the bottleneck and more decoders only take its cores. On an accelerator the model is
    faster than many decoders together, so decoding is the bottleneck: up to 16 (README, Benchmarks)."""
    cap = 4 if device_type == "cpu" else 16
    return max(1, min(cap, usable_cpus() - 1))


def window_segments(batch_size: int, n_workers: int) -> int:
    """Segments each decoder may have sent that the model has not used yet: two messages (one arriving while one is
    used), and together at least two model batches, so the model never waits on a round trip. It bounds memory:
    n_workers x window x 236 KB, whatever the tracks' lengths."""
    return max(2 * _CHUNK_SEGMENTS, -(-2 * batch_size // max(1, n_workers)))


@dataclasses.dataclass
class Report:
    """What one index run did."""

    model_id: str = ""
    found: int = 0
    bad_inputs: int = 0          # arguments that gave no file (missing, not a folder, a folder without audio)
    new: int = 0
    retagged: int = 0
    unchanged: int = 0
    touched: int = 0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    pruned: int = 0
    interrupted: bool = False
    decoder_deaths: int = 0
    actor_restarts: int = 0           # with Ray: model actors that died and were replaced
    peak_segments_in_flight: int = 0  # decoded segments held for the model at once (bounded by the windows)
    packs: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)  # (name, add_pack's word, tracks)

    @property
    def indexed(self) -> int:
        return self.new + self.retagged

    @property
    def inputs(self) -> int:
        """Files found plus arguments that gave none: what "N of M input(s) failed" counts."""
        return self.found + self.bad_inputs


def tagger_and_record(name_or_path: str, device: str | None = None,
                      batch_size: int | None = None) -> tuple[inference.Tagger, store.Model]:
    """The Tagger of a registered name or checkpoint path, and the library's record of that model (its id hashes
    the checkpoint file: checkpoint.model_id)."""
    tagger = inference.load(name_or_path, device=device, batch_size=batch_size)
    source = pretrained.checkpoint_path(name_or_path)
    info = tagger.info
    record = store.Model(model_id=checkpoint.model_id(source, tagger.name), name=tagger.name or source.stem,
                         source=os.path.abspath(source) if os.path.exists(name_or_path) else str(name_or_path),
                         tags=list(info.tags), thresholds=[float(t) for t in info.thresholds],
                         embed_dim=tagger.embed_dim, sample_rate=info.sample_rate,
                         segment_samples=info.segment_samples)
    return tagger, record


@dataclasses.dataclass
class _Job:
    path: str
    known: tuple[int, int, str] | None  # (size, mtime_ns, hash) of its row, None if not indexed yet


def add_packs(lib: store.Library, model: store.Model, tag_packs: list) -> list[tuple[str, str, int]]:
    """Store `tag_packs` for `model` (a stored pack of the same name is replaced), each scored on every track from
    its stored embedding: nothing is decoded. Refused, before anything is stored, for a pack of another model or a
    tag name that the model or another stored pack already has. Returns (name, "added" | "replaced" | "unchanged",
    tracks of the model) per pack."""
    for pack in tag_packs:
        pack.check_model(model.model_id)
    names = {p.name for p in tag_packs}
    if len(names) < len(tag_packs):
        raise SampleCNNError("two tag packs have the same file name; a library names a pack by its file's stem")
    kept = [p for p in lib.packs(model.model_id) if p.name not in names]
    packs.check_tag_names(model.tags, kept + list(tag_packs))
    n = lib.count(model.model_id)
    return [(p.name, lib.add_pack(p, model.model_id), n) for p in tag_packs]


def index(inputs: Iterable[str | os.PathLike], db_path: str | os.PathLike, model: str = "default",
          workers: int | None = None, batch_size: int | None = None, device: str | None = None,
          taggrams: bool = False, prune: bool = False, progress: bool = True, verify: bool = False,
          tag_packs: list | None = None, ray: str | None = None, actors: int | None = None) -> Report:
    """Index every audio file under `inputs` (local paths or fsspec URLs: sources.py) into the library at `db_path`
    (created if needed).

    `verify` hashes every file, even those whose size and mtime match their row, and re-tags those whose bytes
    changed: the only way to catch an edit that kept both (a tool that restores the mtime). `tag_packs` are stored
    in the library first (add_packs); every track tagged is scored with all the model's stored packs. `ray`: run the
    decoding and the model on a Ray cluster instead of this machine's processes (cluster.py): "local" starts one
    here, "auto" or an address joins one; `actors` is then the number of model actors, `workers` the files decoded
    at once."""
    inputs = [os.fspath(p) for p in inputs]
    if workers is not None and workers < 1:
        raise SampleCNNError(f"--workers must be at least 1, got {workers}")
    if actors is not None and (actors < 1 or ray is None):
        raise SampleCNNError("--actors needs --ray" if ray is None else f"--actors must be at least 1, got {actors}")
    if ray is not None:
        from . import cluster

        cluster.check_available(ray)
    files, input_errors = sources.find(inputs)
    # with Ray the model runs in its actors; here only its song results are made (Tagger.song_result)
    tagger, record = tagger_and_record(model, device="cpu" if ray is not None else device, batch_size=batch_size)
    report = Report(model_id=record.model_id, found=len(files), bad_inputs=len(input_errors))
    report.failures.extend(input_errors)

    with store.Library(db_path, create=True) as lib:
        present = set(files)
        roots = [sources.key(p) for p in inputs]
        if prune:
            _check_prune_roots(lib, roots, present, record.model_id)
        lib.add_model(record)
        report.packs = add_packs(lib, record, tag_packs or [])
        jobs = _plan(files, lib.states(record.model_id), verify, report)
        report.missing = [p for p in lib.paths_under(roots, record.model_id)
                          if p not in present and not sources.exists(p)]
        if prune and report.missing:
            report.pruned = lib.prune(report.missing, record.model_id)

        if jobs:
            if ray is not None:
                pipeline = cluster.RayPipeline(tagger, lib, record, jobs, taggrams, progress, report, address=ray,
                                               model=model, decoders=workers, actors=actors, device=device,
                                               batch_size=batch_size)
            else:
                workers = default_workers(tagger.device.type) if workers is None else workers
                pipeline = _Pipeline(tagger, jobs, workers, progress, report, lib=lib, record=record,
                                     taggrams=taggrams)
            try:
                pipeline.run()
            except KeyboardInterrupt:
                report.interrupted = True
    return report


def _plan(files: list[str], known: dict, verify: bool, report: Report) -> list[_Job]:
    """The files to send to the decoders: new, changed stat, or every one with `verify`."""
    jobs = []
    for path in files:
        try:
            st = sources.stat(path)
        except OSError as e:
            report.failures.append((path, f"cannot be read ({e.strerror or e})"))
            continue
        old = known.get(path)
        if old is not None and old[:2] == st and not verify:
            report.unchanged += 1
        else:
            jobs.append(_Job(path, old))
    return jobs


def _check_prune_roots(lib: store.Library, roots: list[str], present: set[str], model_id: str) -> None:
    """Refuse --prune for a root that is gone or holds no audio while the library has rows under it: a renamed
    folder or an unmounted drive must not empty the library (its rows would all look deleted)."""
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        if root in present or any(p.startswith(prefix) for p in present):
            continue
        held = lib.paths_under([root], model_id)
        if held:
            state = "does not exist" if not sources.exists(root) else "has no audio files"
            raise SampleCNNError(f"{state}, but the library holds {len(held)} file(s) under it: --prune refused "
                                 "(an unmounted drive or a renamed folder?)", root)


@dataclasses.dataclass
class _InFlight:
    path: str
    known_hash: str | None
    probs: list = dataclasses.field(default_factory=list)
    embeds: list = dataclasses.field(default_factory=list)
    rows_pending: int = 0
    info: dict | None = None
    error: str | None = None


@dataclasses.dataclass(eq=False)
class _Worker:
    """A decoder process, the parent's ends of its two channels, the ring its segments are received into (used in
    arrival order: `tail` is where the next ones go), and the job it holds (None: idle)."""

    proc: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    data: socket.socket
    ring: np.ndarray
    tail: int = 0
    job: int | None = None
    alive: bool = True


def tag_files(tagger: inference.Tagger, paths: Iterable[str | os.PathLike], on_result, on_failure,
              workers: int | None = None, hop: float | None = None, progress: bool = True) -> Report:
    """Tag many files with one model through the index's pipeline (decoder processes beside the model, segments of
    any files in one batch), without a library: `on_result(path, TagResult, song embedding)` and
    `on_failure(path, reason)` are called as each file finishes (not in the given order). What `samplecnn tag`
    runs for several files."""
    hop_samples = tagger.hop_samples(hop)  # an option error stops the run before any decoder starts
    jobs = [_Job(os.fspath(p), None) for p in paths]
    report = Report(found=len(jobs))
    if jobs:
        pipeline = _Pipeline(tagger, jobs, default_workers(tagger.device.type) if workers is None else workers,
                             progress, report, hop_samples=hop_samples, on_result=on_result, on_failure=on_failure)
        pipeline.run()
    return report


class _Committing:
    """What every engine does with its files' results in this process, the one that holds the library: the song
    result of each finished file (Tagger.song_result) committed in its own transaction with its tag packs' scores,
    a failure recorded, a stat updated, the report and the progress bar; without a library (`lib` None: tag_files),
    `on_result` / `on_failure` called instead. An engine (the decoder processes here, Ray in cluster.py) cuts
    segments every `hop_samples`, fills `active` with one _InFlight per file and calls _finish_ready."""

    def __init__(self, tagger: inference.Tagger, jobs: list[_Job], progress: bool, report: Report,
                 lib: store.Library | None = None, record: store.Model | None = None, taggrams: bool = False,
                 hop_samples: int | None = None, on_result=None, on_failure=None):
        self.tagger, self.lib, self.record, self.jobs = tagger, lib, record, jobs
        self.hop_samples = hop_samples or tagger.info.segment_samples
        self.on_result, self.on_failure = on_result, on_failure
        self.taggrams, self.report = taggrams, report
        self.packs = lib.packs(record.model_id) if lib is not None else []
        self.active: dict[int, _InFlight] = {}
        self.unfinished = set(range(len(jobs)))
        self.show_progress = progress

    def _progress_bar(self):
        from tqdm import tqdm

        return tqdm(total=len(self.jobs), unit="file", file=sys.stderr, dynamic_ncols=True,
                    disable=not self.show_progress, smoothing=0.05)

    def _same(self, job: int, stat: dict) -> None:
        """The bytes are those of the row: only a changed stat is recorded."""
        known = self.jobs[job].known
        if known is not None and known[:2] == (stat["size"], stat["mtime_ns"]):
            self.report.unchanged += 1  # --verify: the file is as indexed
        else:
            self.lib.touch_track(self.jobs[job].path, self.record.model_id, stat["size"], stat["mtime_ns"],
                                 stat["hash"])
            self.report.touched += 1
        self._finished(job)

    # -- commits --

    def _finish_ready(self) -> None:
        for job, st in list(self.active.items()):
            if st.rows_pending or (st.info is None and st.error is None):
                continue
            if st.error is not None:
                self._fail(st)
            else:
                self._commit(st)
            self._finished(job)

    def _commit(self, st: _InFlight) -> None:
        """The track's row: its song-level result as Tagger.tag builds it (Tagger.song_result), its embedding and
        its packs' scores."""
        result = self.tagger.song_result(np.concatenate(st.probs), st.info["samples"], self.hop_samples,
                                         path=st.path, embeddings=np.concatenate(st.embeds))
        if self.lib is None:
            self.on_result(st.path, result, result.embedding)
            self.report.new += 1
            return
        self.lib.put_track(store.Track(
            path=st.path, model_id=self.record.model_id, size=st.info["size"], mtime_ns=st.info["mtime_ns"],
            hash=st.info["hash"], duration=result.duration, segments=len(result.taggram), padded=result.padded,
            scores=result.scores, decisions=result.decisions,
            embedding=result.embedding,
            taggram=result.taggram if self.taggrams else None),
            own=[(pack, pack.scores(result.embedding)) for pack in self.packs])
        if st.known_hash is None:
            self.report.new += 1
        else:
            self.report.retagged += 1

    def _fail(self, st: _InFlight) -> None:
        if self.lib is None:
            self.on_failure(st.path, st.error)
            self.report.failures.append((st.path, st.error))
            return
        info = st.info or {}
        if not info:
            try:
                size, mtime_ns = sources.stat(st.path)
                info = {"size": size, "mtime_ns": mtime_ns}
            except (OSError, SampleCNNError):
                pass
        self.lib.put_failure(st.path, self.record.model_id, info.get("size"), info.get("mtime_ns"), st.error)
        self.report.failures.append((st.path, st.error))

    def _finished(self, job: int) -> None:
        self.active.pop(job, None)
        self.unfinished.discard(job)
        self.progress.update(1)


class _Pipeline(_Committing):
    """Decoder processes -> a pipe each -> batches of segments across files -> the model -> one commit per track
    (into `lib`), or one `on_result` call per file (tag_files)."""

    def __init__(self, tagger: inference.Tagger, jobs: list[_Job], n_workers: int, progress: bool, report: Report,
                 **committing):
        super().__init__(tagger, jobs, progress, report, **committing)
        self.n_workers = min(n_workers, len(jobs))
        self.batch_size = tagger.batch_size
        self.window = window_segments(self.batch_size, self.n_workers)
        self.queue: collections.deque[int] = collections.deque(range(len(jobs)))
        self.attempts: collections.Counter[int] = collections.Counter()
        self.workers: list[_Worker] = []
        self.pending: collections.deque = collections.deque()  # (job, worker, segments) waiting for the model
        self.pending_rows = 0

    def run(self) -> None:
        # spawned: a decoder that died is replaced while the model's threads run (samplecnn.workers)
        self.ctx = context(runs_torch=False, started_late=True)
        self.progress = self._progress_bar()
        try:
            for _ in range(self.n_workers):
                self._start_worker()
            while self.unfinished:
                self._assign()
                self._receive(timeout=0 if self.pending_rows else _POLL_S)
                if self.pending_rows:
                    self._run_batch()
                self._finish_ready()
        finally:
            self.progress.close()
            self._stop_workers()

    # -- workers --

    def _start_worker(self, job: int | None = None) -> None:
        """A fresh decoder process (given `job` at once: the retry of a file whose decoder died)."""
        ours, theirs = self.ctx.Pipe(duplex=True)
        data_ours, data_theirs = socket.socketpair()
        info = self.tagger.info
        p = self.ctx.Process(target=decode.run, daemon=True, name="samplecnn-decoder",
                             args=(theirs, data_theirs, info.sample_rate, info.segment_samples, _CHUNK_SEGMENTS,
                                   self.window, os.getpid(), self.hop_samples))
        with sigint_held():
            p.start()
        theirs.close()  # only the child holds its ends: its death reads as end-of-file here
        data_theirs.close()
        ring = np.empty((self.window, info.segment_samples), np.float32)
        worker = _Worker(p, ours, data_ours, ring)
        self.workers.append(worker)
        if job is not None:
            self._give(worker, job)

    def _assign(self) -> None:
        for w in self.workers:
            if w.job is None and self.queue and w.proc.is_alive():
                self._give(w, self.queue.popleft())

    def _give(self, w: _Worker, job: int) -> None:
        j = self.jobs[job]
        w.job = job
        self.attempts[job] += 1
        self.active[job] = _InFlight(j.path, j.known[2] if j.known else None)
        self._send(w, ("job", job, j.path, self.active[job].known_hash))

    def _send(self, w: _Worker, msg) -> None:
        """A message to a worker; one that died meanwhile is found by _receive (its pipe reads as closed)."""
        if w.alive:
            try:
                w.conn.send(msg)
            except OSError:
                pass

    def _lost(self, w: _Worker) -> None:
        """A decoder died: its file (if it held one) goes back to a fresh process once, then fails."""
        w.alive = False
        self.workers.remove(w)
        w.conn.close()
        w.data.close()
        w.proc.join(timeout=5)
        self.report.decoder_deaths += 1
        job, w.job = w.job, None
        if job is not None:
            self._forget(job)
            if self.attempts[job] > _RETRIES:
                self.active[job] = _InFlight(self.jobs[job].path, None,
                                             error=f"the decoder process died on this file twice "
                                                   f"({_exit_reason(w.proc.exitcode)})")
                job = None
        if job is not None or self.queue:
            self._start_worker(job)

    def _forget(self, job: int) -> None:
        """Drop what a dead decoder sent of an unfinished file: its retry starts from the first segment."""
        kept = collections.deque()
        for entry in self.pending:
            if entry[0] == job:
                self.pending_rows -= len(entry[2])
            else:
                kept.append(entry)
        self.pending = kept
        self.active.pop(job, None)

    def _stop_workers(self) -> None:
        finished = not self.unfinished
        for w in self.workers:
            if finished:
                self._send(w, None)
            else:  # a worker waiting to send sees the pipe close and exits
                w.conn.close()
                w.data.close()
        for w in self.workers:
            w.proc.join(timeout=5 if finished else 2)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=5)
            w.conn.close()
            w.data.close()

    # -- messages --

    def _receive(self, timeout: float) -> None:
        """Read whatever the workers sent (bounded by their credit), and notice dead ones."""
        waitables = {}
        for w in self.workers:
            waitables[w.conn] = w
            waitables[w.proc.sentinel] = w
        ready = multiprocessing.connection.wait(list(waitables), timeout)
        for w in {waitables[r] for r in ready}:
            self._read(w)

    def _read(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, *w.conn.recv())
        except (EOFError, OSError):  # closed, or cut in the middle of a message: the worker is gone
            self._lost(w)
            return
        if not w.proc.is_alive():
            self._lost(w)

    def _handle(self, w: _Worker, kind: str, job: int, payload) -> None:
        st = self.active[job]
        if kind == "segments":
            for view in self._segments(w, payload):
                self.pending.append((job, w, view))
            st.rows_pending += payload
            self.pending_rows += payload
            self.report.peak_segments_in_flight = max(self.report.peak_segments_in_flight, self.pending_rows)
            return
        w.job = None  # the file's last message: the worker is free for the next one
        if kind == "done":
            st.info = payload
        elif kind == "same":
            self._same(job, payload)
        elif kind == "error":
            st.error = payload

    @staticmethod
    def _segments(w: _Worker, n: int) -> list[np.ndarray]:
        """Read the `n` segments announced into the free part of `w`'s ring (one or two views: it wraps around).
        The worker's credit guarantees the space: it never has more than the ring's size unconsumed."""
        size = len(w.ring)
        views = [w.ring[w.tail:min(size, w.tail + n)]]
        if w.tail + n > size:
            views.append(w.ring[:w.tail + n - size])
        for view in views:
            buf, got = memoryview(view).cast("B"), 0
            while got < len(buf):
                k = w.data.recv_into(buf[got:])
                if k == 0:
                    raise EOFError("the decoder died in the middle of its segments")
                got += k
        w.tail = (w.tail + n) % size
        return views

    # -- the model --

    def _run_batch(self) -> None:
        parts, owners, need = [], [], self.batch_size
        while need and self.pending:
            job, w, segments = self.pending[0]
            st = self.active[job]
            if st.error is not None:  # failed after sending segments (e.g. silent): drop them
                self.pending.popleft()
                self._consumed(st, w, len(segments))
                continue
            take = segments[:need]
            if len(take) == len(segments):
                self.pending.popleft()
            else:
                self.pending[0] = (job, w, segments[need:])
            parts.append(take)
            owners.append((job, w, len(take)))
            need -= len(take)
        if not parts:
            return
        out = self.tagger.run_segments(np.concatenate(parts) if len(parts) > 1 else parts[0])
        start = 0
        for job, w, n in owners:
            st = self.active[job]
            st.probs.append(out.probabilities[start:start + n])
            st.embeds.append(out.embeddings[start:start + n])
            self._consumed(st, w, n)
            start += n

    def _consumed(self, st: _InFlight, w: _Worker, n: int) -> None:
        """`n` segments left the pipeline: their decoder may send as many more."""
        st.rows_pending -= n
        self.pending_rows -= n
        self._send(w, ("credit", n))


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
