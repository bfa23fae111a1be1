"""The check on real music that "auto" precision requires before it uses bf16 or int8 (the rule: `precision`).

It tags the same songs with an fp32 Tagger and one per candidate precision, applies the rule song by song and
times each, so it sits above `samplecnn.inference`; nothing below imports it. The songs are excerpts (by default
30 s from the middle of each file) so that a check of 60+ songs takes minutes, not an hour.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from . import audio, int8, precision
from .errors import SampleCNNError
from .inference import Tagger

EXCERPT_SECONDS = 30.0


def excerpt(path: str | os.PathLike, seconds: float | None = EXCERPT_SECONDS, sr: int = audio.SAMPLE_RATE
            ) -> np.ndarray:
    """`seconds` of a file's audio from its middle (mono, at `sr`), or all of it when shorter or `seconds` is None."""
    if seconds is None:
        return audio.decode_mono(path, sr=sr)
    blocks = list(audio.stream(path, sr=sr, block_seconds=seconds))
    return blocks[(len(blocks) - 1) // 2]


def read_songs(files: Iterable[str | os.PathLike], seconds: float | None = EXCERPT_SECONDS
               ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, str]]]:
    """([(file name, excerpt)], [(path, why it was skipped)]): a bad file is reported, not fatal."""
    songs, failures = [], []
    for f in files:
        try:
            songs.append((Path(f).name, excerpt(f, seconds)))
        except SampleCNNError as e:
            failures.append((os.fspath(f), e.reason))
    return songs, failures


def _timed_scores(tagger: Tagger, songs: list[tuple[str, np.ndarray]]) -> tuple[list[np.ndarray], float]:
    """Song-level scores of every song, and model segments per second over all of them (after a warm-up)."""
    tagger.tag(songs[0][1], sr=tagger.sample_rate)
    start, scores, segments = time.perf_counter(), [], 0
    for _, signal in songs:
        result = tagger.tag(signal, sr=tagger.sample_rate)
        scores.append(result.scores)
        segments += len(result.taggram)
    return scores, segments / (time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else precision.cpu_model()


def check_precision(model: nn.Module, info, songs: list[tuple[str, np.ndarray]], candidates: Iterable[str],
                    device: str | None = None, int8_model: str | os.PathLike | None = None) -> dict[str, dict]:
    """{precision: record} for each candidate ("bf16", "int8") against fp32 on `songs` [(name, signal at the
    model's rate)]: the rule's numbers (precision.compare per song, summed), the songs that break it, and both
    speeds. `precision.record_check` stores a record; `precision.record_passes` judges one."""
    if not songs:
        raise SampleCNNError("the precision check needs at least one song of real music")
    ref = Tagger(model, info, device=device, precision="fp32")
    thresholds = np.asarray(info.thresholds, np.float32)
    ref_scores, ref_speed = _timed_scores(ref, songs)
    records = {}
    for name in candidates:
        fast = Tagger(model, info, device=device, precision=name, int8_model=int8_model)
        scores, speed = _timed_scores(fast, songs)
        per_song = [precision.compare(a, b, thresholds) for a, b in zip(ref_scores, scores)]
        worst = max(range(len(songs)), key=lambda i: per_song[i].score_diff)
        record = {
            "rule": dict(precision.RULE), "files": len(songs),
            "seconds": round(sum(len(s) for _, s in songs) / info.sample_rate, 1),
            "max_score_diff": round(max(c.score_diff for c in per_song), 6),
            "top5_changes": sum(c.top_changes for c in per_song),
            "top5_violations": sum(c.top_violations for c in per_song),
            "decision_changes": sum(c.decision_changes for c in per_song),
            "decision_violations": sum(c.decision_violations for c in per_song),
            "worst_file": songs[worst][0],
            "failing_files": [songs[i][0] for i, c in enumerate(per_song) if not c.passes][:10],
            "segments_per_s": {"fp32": round(ref_speed, 1), name: round(speed, 1)},
            "batch_size": {"fp32": ref.batch_size, name: fast.batch_size},
            "device": device_name(ref.device), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        }
        if name == "int8":
            record.update(engine=int8.ENGINE, onnxruntime=int8.version(), int8_file=int8.file_digest(int8_model))
        else:
            record["engine"] = f"torch {'planar (Conv2d, channels-last)' if fast.model.planar else 'Conv1d'} bf16"
        records[name] = record
    return records
