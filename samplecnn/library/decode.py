"""Decoder worker processes: hash a file, decode it, cut it into segments, and send the segments to the model.

Each worker takes (job, path, known_hash) from a task queue and answers on a bounded result queue with
("start", job, pid), then ("segments", job, array) per chunk, then ("done", job, info) / ("same", job, info) /
("error", job, reason). The bounded queue is the back-pressure: decoders run ahead of the model by a few chunks,
never by a whole library, and a two-hour file streams through in constant memory.

A worker whose parent disappears (the index was killed, even with SIGKILL) notices within a second and exits.
"""

from __future__ import annotations

import os
import queue
import signal

_POLL_S = 1.0


def run(tasks, results, sample_rate: int, segment_samples: int, chunk: int, parent_pid: int) -> None:
    """The worker's main loop (the target of a spawned process)."""
    # One thread each: the model in the parent process gets the cores; decoders overlap with it, not with each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers, with no traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..errors import AudioError
    from .hashing import file_hash

    def put(item) -> None:
        while True:
            try:
                results.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                _exit_if_orphaned(parent_pid, results)

    while True:
        try:
            job = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            _exit_if_orphaned(parent_pid, results)
            continue
        if job is None:
            return
        index, path, known_hash = job
        put(("start", index, os.getpid()))
        try:
            digest, size, mtime_ns = file_hash(path)
            stat = {"hash": digest, "size": size, "mtime_ns": mtime_ns}
            if digest == known_hash:
                put(("same", index, stat))
                continue
            decoded = [0]
            for segments in _segments(path, sample_rate, segment_samples, chunk, decoded):
                put(("segments", index, segments))
            put(("done", index, {**stat, "samples": decoded[0]}))
        except AudioError as e:
            put(("error", index, e.reason))
        except OSError as e:
            put(("error", index, f"cannot be read ({e.strerror or e})"))
        except Exception as e:  # a decoder bug must cost one file, not the run
            put(("error", index, f"unexpected error ({type(e).__name__}: {e})"))


def _segments(path: str, sample_rate: int, segment_samples: int, chunk: int, decoded: list):
    """Arrays of at most `chunk` segments, cut as Tagger.tag cuts them; decoded[0] counts the samples."""
    from .. import audio
    from ..segments import segment_batches

    def counted(blocks):
        for block in blocks:
            decoded[0] += len(block)
            yield block

    with audio.stream(path, sr=sample_rate) as blocks:
        yield from segment_batches(counted(blocks), segment_samples, segment_samples, chunk)


def _exit_if_orphaned(parent_pid: int, results) -> None:
    if os.getppid() != parent_pid:
        results.cancel_join_thread()  # nobody will read what is still buffered: don't wait for it
        os._exit(0)
