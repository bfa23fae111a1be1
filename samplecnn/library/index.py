"""`samplecnn index`: tag whole folders into a library database, resumably.

The pipeline: decoder worker processes (decode.py) hash, decode and segment files in parallel and stream segments
through a bounded queue; this process gathers segments of any files into model batches as they come (the model
never waits for one file to be decoded whole), and commits each finished track in its own transaction.

What a rerun does with each file found, compared with the row of the same path and model:
- same size and mtime: skipped without reading it;
- different size or mtime, same bytes (copied back, touched): only the stat is updated;
- different bytes, or not indexed yet, or failed before: (re-)tagged;
- indexed before but gone from disk: reported as missing, deleted from the library with `prune=True`.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import queue
import sys
from typing import Iterable

import numpy as np
import torch

from .. import audio, inference, pretrained
from ..errors import SampleCNNError
from . import decode, hashing, store

_POLL_S = 1.0
_CHUNK_SEGMENTS = 16  # segments per message from a decoder: ~3.8 MB, a few dozen ms of model time


def default_workers(device_type: str = "cpu") -> int:
    """Decoders to run beside the model, one core left to it. On a CPU at most 4: the model (~190x real time on 2
    cores) is the bottleneck and more decoders only take its cores. With a GPU the model runs ~20,000x real time and
    each decoder ~600-1,300x, so decoding is the bottleneck: up to 16 (any accelerator) (an H200 machine, 112 tracks: 4 workers 12.9 s,
    12 workers 10.5 s including start-up; README, Benchmarks)."""
    cap = 4 if device_type == "cpu" else 16
    return max(1, min(cap, (os.cpu_count() or 2) - 1))


@dataclasses.dataclass
class Report:
    """What one index run did."""

    model_id: str = ""
    found: int = 0
    new: int = 0
    retagged: int = 0
    unchanged: int = 0
    touched: int = 0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    pruned: int = 0
    interrupted: bool = False

    @property
    def indexed(self) -> int:
        return self.new + self.retagged


def load_model(name_or_path: str, device: str | None = None, batch_size: int | None = None):
    """(Tagger, store.Model) for a registered name or checkpoint path; the id hashes the checkpoint file."""
    tagger = inference.load(name_or_path, device=device, batch_size=batch_size)
    source = pretrained.resolve(name_or_path)
    info = tagger.info
    record = store.Model(model_id=hashing.model_id(source, tagger.name), name=tagger.name or source.stem,
                         source=os.path.abspath(source) if os.path.exists(name_or_path) else str(name_or_path),
                         tags=list(info.tags), thresholds=[float(t) for t in info.thresholds],
                         embed_dim=int(tagger.model.embed_dim), sample_rate=info.sample_rate,
                         segment_samples=info.segment_samples)
    return tagger, record


def index(inputs: Iterable[str | os.PathLike], db_path: str | os.PathLike, model: str = "default",
          workers: int | None = None, batch_size: int | None = None, device: str | None = None,
          taggrams: bool = False, prune: bool = False, progress: bool = True) -> Report:
    """Index every audio file under `inputs` into the library at `db_path` (created if needed)."""
    inputs = [os.fspath(p) for p in inputs]
    if workers is not None and workers < 1:
        raise SampleCNNError(f"--workers must be at least 1, got {workers}")
    files, input_errors = audio.find_audio(inputs)
    tagger, record = load_model(model, device=device, batch_size=batch_size)
    workers = default_workers(tagger.device.type) if workers is None else workers
    report = Report(model_id=record.model_id, found=len(files))
    report.failures.extend((e.path, e.reason) for e in input_errors)

    with store.Library(db_path, create=True) as lib:
        lib.add_model(record)
        known = lib.states(record.model_id)
        jobs: list[tuple[str, str | None]] = []
        present = set()
        for f in files:
            path = os.path.abspath(f)
            present.add(path)
            try:
                st = os.stat(path)
            except OSError as e:
                report.failures.append((path, f"cannot be read ({e.strerror})"))
                continue
            old = known.get(path)
            if old is not None and old[:2] == (st.st_size, st.st_mtime_ns):
                report.unchanged += 1
            else:
                jobs.append((path, old[2] if old else None))

        roots = [os.path.abspath(p) for p in inputs]
        report.missing = [p for p in lib.paths_under(roots, record.model_id)
                          if p not in present and not os.path.exists(p)]
        if prune and report.missing:
            report.pruned = lib.prune(report.missing, record.model_id)

        if jobs:
            pipeline = _Pipeline(tagger, lib, record, jobs, workers, taggrams, progress, report)
            try:
                pipeline.run()
            except KeyboardInterrupt:
                report.interrupted = True
    return report


@dataclasses.dataclass
class _InFlight:
    path: str
    known_hash: str | None
    probs: list = dataclasses.field(default_factory=list)
    embeds: list = dataclasses.field(default_factory=list)
    rows_pending: int = 0
    info: dict | None = None
    error: str | None = None


class _Pipeline:
    """Decoder processes -> bounded queue -> batches of segments across files -> the model -> one commit per track."""

    def __init__(self, tagger: inference.Tagger, lib: store.Library, record: store.Model,
                 jobs: list[tuple[str, str | None]], n_workers: int, taggrams: bool, progress: bool, report: Report):
        self.tagger, self.lib, self.record, self.jobs = tagger, lib, record, jobs
        self.n_workers = min(n_workers, len(jobs))
        self.taggrams, self.report = taggrams, report
        self.batch_size = tagger.batch_size
        self.max_rows = max(2 * self.batch_size, 2 * _CHUNK_SEGMENTS)
        self.active: dict[int, _InFlight] = {}
        self.unfinished = set(range(len(jobs)))
        self.pending: collections.deque = collections.deque()  # (job, segments array) waiting for the model
        self.pending_rows = 0
        self.worker_job: dict[int, int] = {}
        self.thresholds = np.asarray(record.thresholds, dtype=np.float32)
        self.show_progress = progress

    def run(self) -> None:
        from tqdm import tqdm

        ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
        self.ctx = ctx
        self.tasks = ctx.Queue()
        self.results = ctx.Queue(maxsize=2 * self.n_workers + 2)
        for i, (path, known_hash) in enumerate(self.jobs):
            self.tasks.put((i, path, known_hash))
        self.procs = []
        self.progress = tqdm(total=len(self.jobs), unit="file", file=sys.stderr, dynamic_ncols=True,
                             disable=not self.show_progress, smoothing=0.05)
        try:
            for _ in range(self.n_workers):
                self._start_worker()
            while self.unfinished:
                self._receive(block=self.pending_rows == 0)
                if self.pending_rows:
                    self._run_batch()
                self._finish_ready()
        finally:
            self.progress.close()
            self._stop_workers()

    # -- workers --

    def _start_worker(self) -> None:
        self.tasks.put(None)  # its stop sign, queued behind every job
        p = self.ctx.Process(target=decode.run, daemon=True, name="samplecnn-decoder",
                             args=(self.tasks, self.results, self.record.sample_rate,
                                   self.record.segment_samples, _CHUNK_SEGMENTS, os.getpid()))
        p.start()
        self.procs.append(p)

    def _check_workers(self) -> None:
        """Called when nothing arrived for a while: a crashed decoder costs its file, and is replaced."""
        for p in list(self.procs):
            if p.is_alive() or p.exitcode == 0:
                continue
            self.procs.remove(p)
            job = self.worker_job.pop(p.pid, None)
            if job is not None and job in self.active and self.active[job].info is None:
                self.active[job].error = f"the decoder crashed on this file (exit code {p.exitcode})"
            self._start_worker()
        if not any(p.is_alive() for p in self.procs) and self.pending_rows == 0:
            for job in sorted(self.unfinished - set(self.active)):  # lost with a worker before it said "start"
                self.active[job] = _InFlight(*self.jobs[job], error="not processed (its decoder process died)")

    def _stop_workers(self) -> None:
        finished = not self.unfinished
        if not finished:
            self.tasks.cancel_join_thread()  # undelivered jobs: don't block the exit on them
        for p in self.procs:
            p.join(timeout=5 if finished else 0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self.results.cancel_join_thread()

    # -- messages --

    def _receive(self, block: bool) -> None:
        try:
            msg = self.results.get(timeout=_POLL_S) if block else self.results.get_nowait()
        except queue.Empty:
            if block:
                self._check_workers()
            return
        self._handle(*msg)
        while self.pending_rows < self.max_rows:
            try:
                msg = self.results.get_nowait()
            except queue.Empty:
                return
            self._handle(*msg)

    def _handle(self, kind: str, job: int, payload) -> None:
        if kind == "start":
            self.worker_job[payload] = job
            self.active[job] = _InFlight(*self.jobs[job])
            return
        st = self.active[job]
        if kind == "segments":
            self.pending.append((job, payload))
            st.rows_pending += len(payload)
            self.pending_rows += len(payload)
        elif kind == "done":
            st.info = payload
        elif kind == "same":
            self.lib.touch_track(st.path, self.record.model_id, payload["size"], payload["mtime_ns"],
                                 payload["hash"])
            self.report.touched += 1
            self._finished(job)
        elif kind == "error":
            st.error = payload

    # -- the model --

    @torch.inference_mode()
    def _run_batch(self) -> None:
        parts, owners, need = [], [], self.batch_size
        while need and self.pending:
            job, segments = self.pending[0]
            st = self.active[job]
            if st.error is not None:  # failed after sending segments (e.g. silent): drop them
                self.pending.popleft()
                self._consumed(st, len(segments))
                continue
            take = segments[:need]
            if len(take) == len(segments):
                self.pending.popleft()
            else:
                self.pending[0] = (job, segments[need:])
            parts.append(take)
            owners.append((job, len(take)))
            need -= len(take)
        if not parts:
            return
        model = self.tagger.model
        x = torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0]).to(self.tagger.device)
        embeddings = model.embed(x.unsqueeze(1))
        probs = torch.sigmoid(model.classifier(embeddings)).float().cpu().numpy()
        embeddings = embeddings.float().cpu().numpy()
        start = 0
        for job, n in owners:
            st = self.active[job]
            st.probs.append(probs[start:start + n])
            st.embeds.append(embeddings[start:start + n])
            self._consumed(st, n)
            start += n

    def _consumed(self, st: _InFlight, n: int) -> None:
        st.rows_pending -= n
        self.pending_rows -= n

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
        probs = np.concatenate(st.probs)
        scores = probs.mean(axis=0)
        order = np.argsort(-scores, kind="stable")
        tags = self.record.tags
        samples = st.info["samples"]
        self.lib.put_track(store.Track(
            path=st.path, model_id=self.record.model_id, size=st.info["size"], mtime_ns=st.info["mtime_ns"],
            hash=st.info["hash"], duration=samples / self.record.sample_rate, segments=len(probs),
            padded=samples < self.record.segment_samples, scores=scores,
            decisions=[tags[i] for i in order if scores[i] >= self.thresholds[i]],
            embedding=np.concatenate(st.embeds).mean(axis=0), taggram=probs if self.taggrams else None))
        if st.known_hash is None:
            self.report.new += 1
        else:
            self.report.retagged += 1

    def _fail(self, st: _InFlight) -> None:
        info = st.info or {}
        if not info:
            try:
                s = os.stat(st.path)
                info = {"size": s.st_size, "mtime_ns": s.st_mtime_ns}
            except OSError:
                pass
        self.lib.put_failure(st.path, self.record.model_id, info.get("size"), info.get("mtime_ns"), st.error)
        self.report.failures.append((st.path, st.error))

    def _finished(self, job: int) -> None:
        self.active.pop(job, None)
        self.unfinished.discard(job)
        self.progress.update(1)
