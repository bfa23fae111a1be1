"""Which precision a model runs in: the rule for when bf16 may be used without being asked for.

bf16 (weights and activations) is faster than fp32 where the hardware has it natively, but it changes the scores.
"auto" therefore uses it only where it is native AND the checkpoint's metadata records that it was verified on
real music (`samplecnn.verification.verify_bf16` measures that; `record_bf16_verification` stores the result).
This module needs no model and builds no Tagger: the tagger asks it, the verification reports to it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .errors import SampleCNNError

PRECISIONS = ("auto", "fp32", "bf16")
# The bar a bf16 verification must clear for "auto" to use it: song-level scores within this of fp32 and the same
# five top tags on every file checked (a user reads the top tags and their rounded scores; neither may change).
MAX_SCORE_DIFF = 0.01
PROVENANCE_KEY = "bf16_verified"
_RECORDED = ("max_score_diff", "max_segment_diff", "top5_same", "files", "torch", "date")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bf16 runs natively, so that it is faster than fp32: a CUDA GPU with bf16 support, or a CPU with
    avx512_bf16 / AMX (Linux flags; other systems are taken as no: fp32 is never the wrong choice)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def verified_record(provenance: dict) -> dict | None:
    """The checkpoint's bf16 verification if it clears the bar (max diff <= 0.01, top-5 unchanged, >= 1 file)."""
    rec = provenance.get(PROVENANCE_KEY) if isinstance(provenance, dict) else None
    if not isinstance(rec, dict):
        return None
    try:
        ok = (float(rec["max_score_diff"]) <= MAX_SCORE_DIFF and rec["top5_same"] is True and int(rec["files"]) >= 1)
    except (KeyError, TypeError, ValueError):
        return None
    return rec if ok else None


def resolve_precision(requested: str | None, provenance: dict, device: str | torch.device = "cpu") -> str:
    """"fp32" or "bf16" for a requested precision: explicit choices are honoured; "auto" (or None) picks bf16 only
    where it is native on `device` AND the checkpoint records a passing verification on real music."""
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise SampleCNNError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested != "auto":
        return requested
    return "bf16" if fast_bf16(device) and verified_record(provenance) is not None else "fp32"


def compare_scores(reference: np.ndarray, candidate: np.ndarray, k: int = 5) -> tuple[float, bool]:
    """(max |difference| of song-level scores, whether the top-k tags are the same set) for two score vectors."""
    diff = float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))))
    top = lambda s: set(np.argsort(-np.asarray(s), kind="stable")[:k].tolist())  # noqa: E731
    return diff, top(reference) == top(candidate)


def record_bf16_verification(info, result: dict) -> dict:
    """Store a `verify_bf16` result in `info.provenance` (then save the checkpoint); returns what was stored."""
    record = {k: result[k] for k in _RECORDED if k in result}
    info.provenance[PROVENANCE_KEY] = record
    return record
