"""Run an iterator (an audio stream) in a background thread, a bounded number of items ahead of its consumer.

Why: decoding + resampling the next blocks while the model works on the current ones hides the decode time. PyAV,
soxr and torch release the GIL for their heavy work, so a thread is enough, and the bounded queue keeps memory flat
(a few blocks, whatever the file's length). The library indexer can wrap its own streams the same way.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.1


class Prefetch(Iterator[T]):
    """Iterate `source` in a daemon thread, at most `depth` items ahead. Exceptions raised by the source reach the
    consumer at the same point of the sequence. `close()` (also on `with` exit, or when the consumer stops early)
    stops the thread and closes the source in that thread, which owns it."""

    def __init__(self, source: Iterable[T], depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # the thread gets no reference to self, so an abandoned Prefetch is collected and its __del__ stops it
        self._thread = threading.Thread(target=_produce, args=(source, self._queue, self._stop),
                                        name="samplecnn-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> "Prefetch[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item, error = self._queue.get()
        if item is _DONE:
            self._finished = True
            self._thread.join()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes the item it is computing, then closes the source)."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterable, q: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in source:
            if not _put(q, stop, (item, None)):
                return
        _put(q, stop, (_DONE, None))
    except BaseException as e:  # handed to the consumer, raised there
        _put(q, stop, (_DONE, e))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def prefetch(source: Iterable[T], depth: int = 2) -> Prefetch[T]:
    """`source` computed in a background thread, up to `depth` items ahead (see Prefetch)."""
    return Prefetch(source, depth)
