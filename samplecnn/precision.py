"""Which precision a model runs in: the rule for when a faster one (bf16, int8) may be used without being asked for.

A lower precision changes the scores. "auto" therefore uses one only where the checkpoint's metadata holds a
passing check of it on real music made on the same *kind* of device (`device_kind`: the CPU's ISA class, or the
GPU's name; the kernels, and so the rounding, differ between them), and where that check measured it faster than
fp32. The rule (`compare`), per song, against fp32:
- every song-level score within SCORE_TOLERANCE;
- the top 5 may change only by swapping tags whose fp32 scores differ by less than TIE_MARGIN (near ties: which
  of two equal-looking tags is listed first is not a change a user can act on);
- a decision (score >= the tag's threshold) may change only where the fp32 score is within THRESHOLD_MARGIN of it;
and a check covers at least MIN_FILES songs. `samplecnn.verification` runs the check; `record_check` stores it.
This module needs no model and builds no Tagger: the tagger asks it, the verification reports to it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import numpy as np
import torch

from .errors import SampleCNNError

PRECISIONS = ("auto", "fp32", "bf16", "int8")
FAST = ("bf16", "int8")  # what "auto" may choose instead of fp32
SCORE_TOLERANCE = TIE_MARGIN = THRESHOLD_MARGIN = 0.01
TOP_K = 5
MIN_FILES = 60
# The rule's numbers, stored with every check: a record made under other numbers is not a pass under these.
RULE = {"score_tolerance": SCORE_TOLERANCE, "top_k": TOP_K, "tie_margin": TIE_MARGIN,
        "threshold_margin": THRESHOLD_MARGIN, "min_files": MIN_FILES}
CHECKS_KEY = "precision_checks"  # provenance[CHECKS_KEY][device kind][precision] = record
LEGACY_KEY = "bf16_verified"     # the earlier, device-blind bf16 record: shown, never used


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


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux), for records and benchmarks; "unknown" elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_isa() -> str:
    """The CPU's class for low-precision kernels, best first: amx (bf16 and int8 tiles), avx512_bf16,
    avx512_vnni (int8 dot products), avx2, or other."""
    flags = _cpu_flags()
    for isa, needs in (("amx", {"amx_bf16", "amx_int8"}), ("avx512_bf16", {"avx512_bf16"}),
                       ("avx512_vnni", {"avx512_vnni"}), ("avx2", {"avx2"})):
        if needs <= flags:
            return isa
    return "other"


def device_kind(device: str | torch.device = "cpu") -> str:
    """The kind of device a check holds for: "cpu-<ISA class>" or "gpu-<name>" (e.g. gpu-nvidia-h200)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "unavailable"
        return "gpu-" + "-".join(name.lower().split())
    if device.type == "cpu":
        return f"cpu-{cpu_isa()}"
    return device.type


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bf16 runs natively: a CUDA GPU with bf16 support, or a CPU with avx512_bf16 / AMX (Linux flags;
    other systems are taken as no: fp32 is never the wrong choice)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def int8_available(device: str | torch.device = "cpu") -> bool:
    """int8 runs on the CPU in ONNX Runtime (the optional extra `onnx`)."""
    return torch.device(device).type == "cpu" and importlib.util.find_spec("onnxruntime") is not None


# ----------------------------------------------------------------------------------------------------------------
# the rule


@dataclasses.dataclass
class Comparison:
    """What a candidate precision changed in one song's scores, against fp32, under the rule."""

    score_diff: float          # largest |difference| of a song-level score
    top_changes: int           # pairs of tags (one in either top 5) whose order changed
    top_violations: int        # ... of which the fp32 scores were not a near tie
    decision_changes: int      # tags whose decision changed
    decision_violations: int   # ... where the fp32 score was not near the threshold

    @property
    def passes(self) -> bool:
        return self.score_diff <= SCORE_TOLERANCE and not self.top_violations and not self.decision_violations


def compare(reference: np.ndarray, candidate: np.ndarray, thresholds: np.ndarray) -> Comparison:
    """The rule applied to one song: fp32 song-level scores `reference` against `candidate`'s.

    A change in the top 5 is a pair of tags, at least one in the top 5 of either, whose order differs; it is
    allowed only when their fp32 scores differ by less than TIE_MARGIN."""
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    thr = np.asarray(thresholds, np.float64)
    if ref.shape != cand.shape or ref.shape != thr.shape or ref.ndim != 1:
        raise ValueError(f"compare wants three equal 1-D score vectors, got {ref.shape}, {cand.shape}, {thr.shape}")
    top = set(np.argsort(-ref, kind="stable")[:TOP_K].tolist()) | set(np.argsort(-cand, kind="stable")[:TOP_K].tolist())
    pairs = set()
    for a in top:
        flipped = np.sign(ref[a] - ref) != np.sign(cand[a] - cand)
        pairs.update((min(a, b), max(a, b)) for b in np.flatnonzero(flipped).tolist())
    top_violations = sum(abs(ref[a] - ref[b]) >= TIE_MARGIN for a, b in pairs)
    changed = (ref >= thr) != (cand >= thr)
    return Comparison(score_diff=float(np.max(np.abs(ref - cand))) if ref.size else 0.0,
                      top_changes=len(pairs), top_violations=int(top_violations),
                      decision_changes=int(changed.sum()),
                      decision_violations=int(np.sum(changed & (np.abs(ref - thr) >= THRESHOLD_MARGIN))))


def record_passes(record) -> bool:
    """True if a stored check passes under today's rule: made under the same numbers, on enough songs, with no
    violation (the numbers are re-read, not the stored verdict)."""
    if not isinstance(record, dict) or record.get("rule") != RULE:
        return False
    try:
        return (int(record["files"]) >= MIN_FILES and float(record["max_score_diff"]) <= SCORE_TOLERANCE
                and int(record["top5_violations"]) == 0 and int(record["decision_violations"]) == 0)
    except (KeyError, TypeError, ValueError):
        return False


def checks(provenance: dict) -> dict:
    """{device kind: {precision: record}} of a checkpoint (empty when it has none)."""
    found = provenance.get(CHECKS_KEY) if isinstance(provenance, dict) else None
    return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def passing_record(provenance: dict, precision: str, device: str | torch.device = "cpu") -> dict | None:
    """The checkpoint's check of `precision` on this kind of device, if it passes; records made on other kinds of
    device are not looked at."""
    record = checks(provenance).get(device_kind(device), {}).get(precision)
    return record if record_passes(record) else None


def _speedup(record: dict, precision: str) -> float:
    """How much faster than fp32 the check measured `precision` (0 when it did not say)."""
    speed = record.get("segments_per_s")
    try:
        return float(speed[precision]) / float(speed["fp32"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def native(precision: str, device: str | torch.device = "cpu") -> bool:
    """Whether `precision` can run fast on `device` at all (what "auto" asks before it looks at the records)."""
    if precision == "bf16":
        return fast_bf16(device)
    if precision == "int8":
        return int8_available(device)
    return precision == "fp32"


def resolve_precision(requested: str | None, provenance: dict, device: str | torch.device = "cpu") -> str:
    """"fp32", "bf16" or "int8" for a requested precision: explicit choices are honoured; "auto" (or None) picks,
    of the precisions native on `device` whose check on this kind of device passes, the one the check measured
    fastest, if it beat fp32; else fp32."""
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise SampleCNNError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested == "int8" and torch.device(device).type != "cpu":
        raise SampleCNNError("--precision int8 runs on the CPU (ONNX Runtime): add --device cpu")
    if requested != "auto":
        return requested
    best, best_speedup = "fp32", 1.0
    for precision in FAST:
        record = passing_record(provenance, precision, device) if native(precision, device) else None
        if record is not None and _speedup(record, precision) > best_speedup:
            best, best_speedup = precision, _speedup(record, precision)
    return best


def record_check(info, kind: str, precision: str, record: dict) -> dict:
    """Store a check (`verification.check_precision`'s record) in `info.provenance` under its device kind and
    precision (then save the checkpoint); the device-blind record of earlier versions is dropped."""
    stored = checks(info.provenance)
    stored.setdefault(kind, {})[precision] = record
    info.provenance[CHECKS_KEY] = stored
    info.provenance.pop(LEGACY_KEY, None)
    return record


def describe(provenance: dict, device: str | torch.device = "cpu") -> list[str]:
    """One line per stored check (for `samplecnn info`), the ones that count on `device` marked."""
    here = device_kind(device)
    lines = []
    for kind, by_precision in sorted(checks(provenance).items()):
        for precision, r in sorted(by_precision.items()):
            if not isinstance(r, dict):
                continue
            verdict = "passes" if record_passes(r) else "fails"
            speed = _speedup(r, precision)
            lines.append(
                f"{kind} {precision}: {verdict} on {r.get('files')} songs: max score diff {r.get('max_score_diff')}, "
                f"top-5 changes {r.get('top5_changes')} ({r.get('top5_violations')} beyond a near tie), "
                f"decisions changed {r.get('decision_changes')} ({r.get('decision_violations')} away from the "
                f"threshold); {speed:.2f}x fp32 ({r.get('engine')}, {r.get('device')}, {r.get('date')})"
                + ("  <- this machine" if kind == here else ""))
    return lines
