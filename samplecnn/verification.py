"""The bf16 check on real music that "auto" precision requires (the rule itself: `samplecnn.precision`).

It tags the same files with two Taggers, fp32 and bf16, so it sits above `samplecnn.inference`; nothing below
imports it.
"""

from __future__ import annotations

import datetime
import os
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .inference import Tagger
from .precision import compare_scores


def verify_bf16(model: nn.Module, info, files: Iterable[str | os.PathLike], device: str | None = None) -> dict:
    """Tag `files` (real music) in fp32 and bf16 and measure what bf16 changes; the result is what
    `precision.record_bf16_verification` stores and what "auto" requires. Keys: max_score_diff (song level, over
    all files and tags), max_segment_diff, top5_same (all files), files, per_file [(path, diff, top5_same)], torch,
    date."""
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
