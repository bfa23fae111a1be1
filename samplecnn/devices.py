"""The torch device a command runs on: the local GPU when there is one, else the CPU; a bad --device is one line.

One place for this choice so that `tag`, `index`, `serve`, `evaluate` and `train` agree, and so that a user's
`--device cuda` on a machine without a GPU gets a sentence instead of torch's traceback.
"""

from __future__ import annotations

import torch

from .errors import SampleCNNError


def resolve(device: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
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
