"""The fast inference path, in one place: BatchNorm folded into the convolutions, optionally bf16, and the rule for
when bf16 may be used without being asked for.

Why:
- Folding an eval-mode BatchNorm into the conv/linear before it is exact algebra (float64 arithmetic, one rounding to
  float32), removes a full pass over every activation, and is what makes bf16 usable at all: bf16 on the unfolded
  model loses too much precision in the first layer.
- bf16 (weights and activations) is faster than fp32 on CPUs with avx512_bf16, but it changes the scores. It
  is therefore used by "auto" only for a checkpoint whose metadata records that it was verified on real music
  (`verify_bf16` measures it; the training/export code stores the result with `record_bf16_verification`).
- glibc returns every freed activation buffer over its mmap threshold to the OS, so each forward pass page-faults
  tens of MB of fresh memory back in, thousands of faults per segment: `tune_malloc` keeps freed memory in the heap,
  which is worth more on a CPU than any other change here (README, Benchmarks).
- The prepared model keeps the SampleCNN API (`forward`, `embed`, `classifier`, `embed_dim`), takes float32 input
  and returns float32: the tagger and the library indexer use it unchanged.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import datetime
import functools
import os
import sys
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .errors import SampleCNNError

PRECISIONS = ("auto", "fp32", "bf16")
# The bar a bf16 verification must clear for "auto" to use it: song-level scores within this of fp32 and the same
# five top tags on every file checked (a user reads the top tags and their rounded scores; neither may change).
MAX_SCORE_DIFF = 0.01
PROVENANCE_KEY = "bf16_verified"


# ----------------------------------------------------------------------------------------------------------------
# BatchNorm folding


def _fold_into(layer: nn.Module, bn: nn.BatchNorm1d) -> None:
    """Rewrite `layer` (Conv1d or Linear, output channels first) so that layer(x) == bn(old_layer(x)) in eval mode."""
    w = layer.weight.detach().double()
    b = (layer.bias.detach().double() if layer.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device))
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(bn.running_var.double())
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(bn.running_var.double())
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = beta - bn.running_mean.double() * scale
    dtype = layer.weight.dtype
    layer.weight = nn.Parameter((w * scale.view(-1, *([1] * (w.dim() - 1)))).to(dtype), requires_grad=False)
    layer.bias = nn.Parameter((b * scale + shift).to(dtype), requires_grad=False)


def _fold_module(module: nn.Module) -> None:
    """Fold every BatchNorm1d that directly follows a Conv1d/Linear: consecutive entries of a Sequential, and the
    named pairs of the SampleCNN blocks (conv/bn, conv1/bn1, conv2/bn2)."""
    if isinstance(module, nn.Sequential):
        items = list(module)
        for i in range(1, len(items)):
            if isinstance(items[i], nn.BatchNorm1d) and isinstance(items[i - 1], (nn.Conv1d, nn.Linear)):
                _fold_into(items[i - 1], items[i])
                module[i] = nn.Identity()
    for layer_name, bn_name in (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2")):
        layer, bn = getattr(module, layer_name, None), getattr(module, bn_name, None)
        if isinstance(bn, nn.BatchNorm1d) and isinstance(layer, (nn.Conv1d, nn.Linear)):
            _fold_into(layer, bn)
            setattr(module, bn_name, nn.Identity())
    for child in module.children():
        _fold_module(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm folded into the layer before it (the original is untouched).

    Raises ValueError if a BatchNorm is left that does not follow a conv/linear: folding it would be wrong, and
    leaving it would silently make bf16 inaccurate."""
    folded = copy.deepcopy(model).eval()
    _fold_module(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm layer(s) {', '.join(left)}: not directly after a conv/linear")
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


# ----------------------------------------------------------------------------------------------------------------
# bf16


class _Cast(nn.Module):
    """Casts floating tensors to `dtype` (the entry and exit of the bf16 region)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def extra_repr(self) -> str:
        return str(self.dtype)


def to_bf16(folded: nn.Module) -> nn.Module:
    """A copy of a *folded* SampleCNN whose stem and blocks run in bf16; the head and classifier stay fp32 (a tiny
    share of the work, and it keeps the embeddings and logits in float32 for every consumer)."""
    if not all(hasattr(folded, a) for a in ("stem", "blocks", "head", "classifier")):
        raise ValueError("to_bf16 expects a SampleCNN (stem, blocks, head, classifier)")
    model = copy.deepcopy(folded)
    model.stem = nn.Sequential(_Cast(torch.bfloat16), *model.stem).to(torch.bfloat16)
    model.blocks = model.blocks.to(torch.bfloat16)
    model.head = nn.Sequential(_Cast(torch.float32), *model.head)
    return model


def prepare(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """The model to run for a resolved precision ("fp32" or "bf16"): always BatchNorm-folded (exact in fp32)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' here, not {precision!r}")
    folded = fold_batchnorm(model)
    return to_bf16(folded) if precision == "bf16" else folded


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


# ----------------------------------------------------------------------------------------------------------------
# when bf16 is allowed


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


def verify_bf16(model: nn.Module, info, files: Iterable[str | os.PathLike], device: str | None = None) -> dict:
    """Tag `files` (real music) in fp32 and bf16 and measure what bf16 changes; the result is what
    `record_bf16_verification` stores and what "auto" requires. Keys: max_score_diff (song level, over all files
    and tags), max_segment_diff, top5_same (all files), files, per_file [(path, diff, top5_same)], torch, date."""
    from .inference import Tagger  # here, not at import: inference imports this module

    files = [os.fspath(f) for f in files]
    if not files:
        raise ValueError("verify_bf16 needs at least one audio file")
    ref = Tagger(model, info, device=device, precision="fp32")
    fast = Tagger(model, info, device=device, precision="bf16")
    per_file, max_diff, max_seg, all_same = [], 0.0, 0.0, True
    for path in files:
        a, b = ref.tag(path), fast.tag(path)
        diff, same = compare_scores(a.scores, b.scores)
        max_seg = max(max_seg, float(np.max(np.abs(a.taggram - b.taggram))))
        max_diff, all_same = max(max_diff, diff), all_same and same
        per_file.append((path, round(diff, 6), same))
    return {"max_score_diff": round(max_diff, 6), "max_segment_diff": round(max_seg, 6), "top5_same": all_same,
            "files": len(files), "per_file": per_file, "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


def record_bf16_verification(info, result: dict) -> dict:
    """Store a `verify_bf16` result in `info.provenance` (then save the checkpoint); returns what was stored."""
    record = {k: result[k] for k in ("max_score_diff", "max_segment_diff", "top5_same", "files", "torch", "date")
              if k in result}
    info.provenance[PROVENANCE_KEY] = record
    return record
