"""Worker processes, one way: how many CPUs there are, which start method, and a pool of jobs in a window.

Used by `prepare` (data/build.py: decoding clips), `teach` (teach.py: the teacher on each clip) and `index`
(library/index.py: its decoder processes, which have a pipe each instead of a pool; see library/decode.py).

The start method, one rule (`context`):
- fork where the workers run no torch and all start before this process runs threads of its own: no re-import
  per worker, no second copy of torch in memory. Forking a parent that has merely *imported* or used torch is no
  hazard when the child never touches torch (PyTorch's own DataLoader forks the same way);
- spawn otherwise: workers that run torch (its thread pools do not survive a fork of a parent that used them), and
  workers started while this process runs other threads (the model's, a progress bar's), which a fork would copy
  in the middle of whatever lock they held. A spawned worker imports what it needs afresh, so the code it runs
  must not import the caller's `__main__` work unguarded.

This module imports no torch: decoder processes import it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from .errors import SampleCNNError

__all__ = ["usable_cpus", "context", "sigint_held", "quiet_worker", "Pool"]


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the system has one (a container, taskset or a batch
    scheduler may allow fewer than the machine has), else os.cpu_count(); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def context(runs_torch: bool, started_late: bool = False) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for workers (module docstring: the start method rule). `started_late`: some
    workers are started while this process runs threads (e.g. a replacement for a worker that died)."""
    if not runs_torch and not started_late and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def sigint_held():
    """Hold Ctrl-C back while worker processes start: interrupted half-way, a starting worker would die with a
    traceback. The signal is delivered right after, at a safe point. (No-op where pthread_sigmask is missing.)"""
    mask = getattr(signal, "pthread_sigmask", None)
    held = mask(signal.SIG_BLOCK, {signal.SIGINT}) if mask else None
    try:
        yield
    finally:
        if mask:
            mask(signal.SIG_SETMASK, held)


def quiet_worker() -> None:
    """What every worker process does first: Ctrl-C reaches the whole process group, and it is the parent's to
    handle (it stops the workers, with no traceback from each); one thread each, as the workers are the
    parallelism (and the parent's model gets the cores)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class Pool:
    """fn(job) for every job, with at most workers * ahead jobs in flight; iterate for the results (in job order
    with `ordered`, else as they complete). A context manager: leaving it cancels what has not started.

    workers=1 runs the jobs in this process, with no pool: through `local()` if given (a factory, called once, for
    a function that sets itself up), else through fn. `initializer(*initargs)` runs first in each worker (after
    `quiet_worker`); `runs_torch` picks the start method (`context`). The processes start here, in __init__ (with
    Ctrl-C held back), so a fork happens before the caller starts threads. A worker that dies (out of memory, a
    crash in a decoder) breaks the pool: iterating raises SampleCNNError(`broken`)."""

    def __init__(self, fn: Callable, jobs: Iterable, workers: int, *, ahead: int, runs_torch: bool,
                 broken: str, ordered: bool = True, initializer: Callable | None = None, initargs: tuple = (),
                 local: Callable[[], Callable] | None = None):
        self.fn, self.local, self.ordered, self.broken = fn, local, ordered, broken
        self.remaining = iter(jobs)
        self.pool: ProcessPoolExecutor | None = None
        self.first: list[Future] = []
        if workers == 1:
            return
        first = list(itertools.islice(self.remaining, workers * ahead))
        if not first:
            return
        with sigint_held():  # the processes start with the first submits
            self.pool = ProcessPoolExecutor(workers, mp_context=context(runs_torch), initializer=_start_worker,
                                            initargs=(initializer, initargs))
            self.first = [self.pool.submit(fn, job) for job in first]

    def __iter__(self) -> Iterator:
        if self.pool is None:
            yield from map(self.local() if self.local else self.fn, self.remaining)
            return
        try:
            if self.ordered:
                window = collections.deque(self.first)
                while window:
                    result = window.popleft().result()
                    window.extend(self._submit(1))
                    yield result
            else:
                running = set(self.first)
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        running.update(self._submit(1))
                        yield future.result()
        except BrokenProcessPool:
            raise SampleCNNError(self.broken) from None

    def _submit(self, n: int) -> list[Future]:
        return [self.pool.submit(self.fn, job) for job in itertools.islice(self.remaining, n)]

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    quiet_worker()
    if initializer is not None:
        initializer(*initargs)
