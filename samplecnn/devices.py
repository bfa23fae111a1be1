"""The torch device a command runs on, and the process set-up that running a model on it wants.

- Which device: the local GPU when there is one, else the CPU; a bad --device is one line. One place for this
  choice so that `tag`, `index`, `serve`, `evaluate` and `train` agree, and so that a user's `--device cuda` on a
  machine without a GPU gets a sentence instead of torch's traceback.
- Malloc tuning for CPU inference: glibc returns every freed activation buffer over its mmap threshold to the OS,
  so each forward pass page-faults tens of MB of fresh memory back in, thousands of faults per segment.
  `tune_malloc` keeps freed memory in the heap, which is worth more on a CPU than any other change to the fast path
  (README, Benchmarks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch

from .errors import SampleCNNError


def torch_device(device: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """`device` checked against this machine, or the default: `cuda:<local_rank>` if a GPU is visible, else cpu."""
    if device is None or device == "":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SampleCNNError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SampleCNNError(f"device {str(device)!r}: no CUDA GPU is available here (torch {torch.__version__})")
        if dev.index is not None and dev.index >= count:
            raise SampleCNNError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                 f"cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SampleCNNError(f"device {str(device)!r}: Apple's MPS is not available here")
    return dev


# ----------------------------------------------------------------------------------------------------------------
# memory allocation

_MALLOC_KEEP_BYTES = 256 << 20  # allocations below this come from the heap; up to this much freed memory is kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


@functools.lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Make glibc keep freed activation buffers for reuse instead of unmapping them (then faulting them back in on
    the next segment): raises the mmap and trim thresholds. Process-wide, done once; True if applied. Off with
    SAMPLECNN_NO_MALLOC_TUNING=1, and a no-op outside Linux/glibc. Costs no memory beyond the largest working set
    already reached (the heap keeps it rather than handing it back)."""
    if not sys.platform.startswith("linux") or os.environ.get("SAMPLECNN_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MALLOC_KEEP_BYTES) and mallopt(_M_TRIM_THRESHOLD, _MALLOC_KEEP_BYTES))
