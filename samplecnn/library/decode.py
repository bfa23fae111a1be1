"""Decoder worker processes: hash a file, decode it, cut it into segments, and send the segments to the model.

Why this shape:
- Each worker has its own pipe to the parent (no queue shared between workers). A worker killed in the middle of a
  message corrupts only its own pipe, which the parent then reads as closed: the run loses that worker's file (and
  retries it), never the whole pipeline. A shared queue would leave its lock held, or half a message in the pipe
  that every other worker writes to, and the parent would wait on it for good.
- Two channels per worker: small messages (pickled, on a multiprocessing Connection) say what comes, and the
  segments themselves follow as raw float32 bytes on a socket, which the parent reads straight into a buffer it
  allocated once. Receiving megabytes of pickles instead made the parent allocate and free buffers of ever
  different sizes between forward passes, and its heap grew with the track's length though little was in use.
- The parent gives each worker one job at a time, so it always knows which file a dead worker held.
- Flow control counts segments, not messages: a worker starts with `window` segments of credit, spends one per
  segment it sends, and gets it back when the model has used that segment. Whatever the track's length, at most
  `window` of its segments are ever decoded and not yet through the model.

Parent -> worker: ("job", index, path, known_hash), ("credit", n), or None (stop).
Worker -> parent: ("segments", index, n) per chunk, its n x segment_samples float32 samples right after on the data
socket; then ("done", index, info), ("same", index, stat) or ("error", index, reason).

A worker whose parent disappears (the index was killed, even with SIGKILL) sees its pipe close, or notices within a
second that its parent changed, and exits.
"""

from __future__ import annotations

import os

from ..segments import SampleCounter
from ..workers import quiet_worker

_POLL_S = 1.0


class ParentGone(Exception):
    """The parent closed the pipe or died: nobody will read what this worker makes."""


class Channel:
    """One worker's end of its pipe, with the segment credit that bounds what it may send ahead of the model."""

    def __init__(self, conn, data, window: int, parent_pid: int):
        self.conn, self.data, self.credit, self.parent_pid = conn, data, window, parent_pid

    def next_job(self):
        """The next (index, path, known_hash), or None when told to stop; credit returned meanwhile is kept."""
        while True:
            msg = self._recv()
            if msg is None:
                return None
            if msg[0] == "job":
                return msg[1:]
            self.credit += msg[1]

    def send_segments(self, index: int, segments) -> None:
        """Send one chunk once the model has room for it (waits for credit)."""
        while self.credit < len(segments):
            msg = self._recv()
            if msg is None or msg[0] != "credit":  # stopped in the middle of a file
                raise ParentGone
            self.credit += msg[1]
        self.send(("segments", index, len(segments)))
        try:
            self.data.sendall(memoryview(segments).cast("B"))
        except OSError:
            raise ParentGone from None
        self.credit -= len(segments)

    def send(self, msg) -> None:
        try:
            self.conn.send(msg)
        except OSError:  # BrokenPipeError, ConnectionResetError: the parent's end is closed
            raise ParentGone from None

    def _recv(self):
        while not self.conn.poll(_POLL_S):
            if os.getppid() != self.parent_pid:
                raise ParentGone
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise ParentGone from None


def run(conn, data, sample_rate: int, segment_samples: int, chunk: int, window: int, parent_pid: int,
        hop_samples: int | None = None) -> None:
    """The worker's main loop (the target of a spawned process); segments start every `hop_samples` (default: one
    segment, no overlap)."""
    # One thread each (the model in the parent gets the cores; decoders overlap with it, not with each other), and
    # Ctrl-C is the parent's to handle.
    quiet_worker()
    channel = Channel(conn, data, window, parent_pid)
    try:
        while (job := channel.next_job()) is not None:
            index, path, known_hash = job
            for kind, payload in messages(path, known_hash, sample_rate, segment_samples, min(chunk, window),
                                          hop_samples):
                if kind == "segments":
                    channel.send_segments(index, payload)
                else:
                    channel.send((kind, index, payload))
    except ParentGone:
        pass
    finally:
        conn.close()
        data.close()


def ray_task(path: str, known_hash: str | None, sample_rate: int, segment_samples: int, chunk: int,
             hop_samples: int | None = None):
    """The decode task of `index --ray` (cluster.py runs it as a Ray streaming generator): `messages`, each chunk of
    segments as an object of its own after a small ("segments", n) header. Here, not in cluster.py, so that a decode
    worker imports no torch."""
    for kind, payload in messages(path, known_hash, sample_rate, segment_samples, chunk, hop_samples):
        if kind == "segments":
            yield "segments", len(payload)
            yield payload
        else:
            yield kind, payload


def messages(path: str, known_hash: str | None, sample_rate: int, segment_samples: int, chunk: int,
             hop_samples: int | None = None):
    """What decoding one file says, in order: ("segments", array of at most `chunk` segments, one starting every
    `hop_samples`: default one segment, no overlap) while it decodes, then exactly one of ("done", info), ("same",
    stat: the bytes are the known ones) or ("error", reason). The one way a file is hashed, decoded and cut, whichever
    engine runs it: these processes, or Ray's tasks (cluster.py). Segments may come before an error found at the end
    (a silent file): the receiver drops them."""
    from ..errors import AudioError
    from . import sources

    try:
        with sources.fetched(path) as (local, stat):
            if stat["hash"] == known_hash:
                yield "same", stat
                return
            decoded = SampleCounter()
            for segments in _segments(local, sample_rate, segment_samples, hop_samples or segment_samples, chunk,
                                      decoded):
                yield "segments", segments
        yield "done", {**stat, "samples": decoded.n}
    except AudioError as e:
        yield "error", e.reason
    except OSError as e:
        yield "error", f"cannot be read ({e.strerror or e})"
    except Exception as e:  # a decoder bug must cost one file, not the run
        yield "error", f"unexpected error ({type(e).__name__}: {e})"


def _segments(path: str, sample_rate: int, segment_samples: int, hop_samples: int, chunk: int,
              decoded: SampleCounter):
    """Arrays of at most `chunk` segments, cut as Tagger.tag cuts them; `decoded` (a SampleCounter) counts the
    samples."""
    from .. import audio
    from ..segments import segment_batches

    with audio.stream(path, sr=sample_rate) as blocks:
        yield from segment_batches(decoded.count(blocks), segment_samples, hop_samples, chunk)
