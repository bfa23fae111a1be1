"""Read rate of the training cache (random 59049-sample crops, as training takes them) against the model's speed.

    .venv/bin/python benchmarks/bench_cache.py              # builds a ~300 MB cache once in a temp folder
    .venv/bin/python benchmarks/bench_cache.py --mb 600 --seconds 5
    .venv/bin/python benchmarks/bench_cache.py --cache DIR  # or reads an existing cache (e.g. MTAT's)

Measured, one process, one thread:
  crop           cache.clip_float(i, start, 59049): one pread of int16 -> float32 copy, page cache warm
  batch of 16    16 crops + their label rows -> torch tensors (what one training step consumes)
  cold crop      the same after asking the kernel to drop the file from the page cache (posix_fadvise
                 DONTNEED), i.e. crops that go to the disk: what a first epoch over a cache larger than RAM sees
The data path must feed the model at least 10x faster than it trains (bench_train.py measures that rate), so
that data never starves the model. Building the cache also reports the prepare rate (22050 Hz mono
WAV input: no resampling, so this is the cache writer's overhead, not mp3 decoding; see bench_decode.py for that).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplecnn import data  # noqa: E402
from samplecnn.models import SAMPLE_RATE, SEGMENT_SAMPLES  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "samplecnn-bench-cache"
MODEL_SEGMENTS_PER_S = {"fp32": 6.0, "bf16": 12.0}  # training, 3^9 model, 2 threads (shared README section 5)
CLIP_SECONDS = 29.1  # an MTAT clip


def make_cache(mb: float, workers: int) -> Path:
    """A folder cache of ~mb MB from synthetic 29.1-s clips (noise + tones, different per clip)."""
    n = max(1, round(mb * 1e6 / (CLIP_SECONDS * SAMPLE_RATE * 2)))
    audio_dir, out = WORK / f"wav{n}", WORK / f"cache{n}"
    if (out / "meta.json").exists():
        return out
    audio_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    with open(audio_dir / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [f"tag{k}" for k in range(50)])
        for i in range(n):
            name = f"clip{i:04d}.wav"
            if not (audio_dir / name).exists():
                x = 0.3 * np.sin(2 * np.pi * (100 + 10 * i) * t) + 0.05 * rng.standard_normal(len(t))
                sf.write(audio_dir / name, x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            w.writerow([name] + list(rng.integers(0, 2, 50)))
    start = time.perf_counter()
    cache = data.prepare_folder(audio_dir, audio_dir / "labels.csv", out, workers=workers, progress=False)
    took = time.perf_counter() - start
    secs = cache.meta["audio_seconds"]
    print(f"prepare: {n} clips, {secs / 3600:.2f} h in {took:.1f} s with {workers} workers = "
          f"{n / took:.0f} clips/s, {secs / took:.0f}x real time (WAV in, no resampling)")
    return out


def crops_per_second(cache: data.Cache, seconds: float, batch: int = 1, cold: bool = False) -> float:
    """Random full-length crops (or batches of them, as torch tensors) per second."""
    import torch

    rng = np.random.default_rng(1)
    usable = np.flatnonzero(cache.lengths >= SEGMENT_SAMPLES)
    fd = os.open(cache.path / "audio.i16", os.O_RDONLY) if cold else None
    done, start, evicting = 0, time.perf_counter(), 0.0
    while time.perf_counter() - start - evicting < seconds:
        if cold:  # not timed; works only on pages no process has mapped (hence no memmap in this benchmark)
            t = time.perf_counter()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            evicting += time.perf_counter() - t
        idx = rng.choice(usable, batch)
        crops = [cache.clip_float(int(i), int(rng.integers(0, cache.lengths[i] - SEGMENT_SAMPLES + 1)),
                                  SEGMENT_SAMPLES) for i in idx]
        if batch > 1:
            x = torch.from_numpy(np.stack(crops)).unsqueeze(1)
            y = torch.from_numpy(cache.labels[idx])
            assert x.shape == (batch, 1, SEGMENT_SAMPLES) and y.shape[0] == batch
        done += batch
    if fd is not None:
        os.close(fd)
    return done / (time.perf_counter() - start - evicting)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", help="an existing cache to read (default: build a synthetic one)")
    ap.add_argument("--mb", type=float, default=300, help="size of the synthetic cache (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="prepare workers (default: %(default)s)")
    args = ap.parse_args()

    path = Path(args.cache) if args.cache else make_cache(args.mb, args.workers)
    cache = data.Cache(path)
    size = (path / "audio.i16").stat().st_size
    print(f"cache: {path} ({len(cache)} clips, {size / 1e6:.0f} MB of int16)")
    with open(path / "audio.i16", "rb") as f:  # warm the page cache, as any epoch after the first finds it
        while f.read(1 << 24):
            pass
    rows = [("crop", crops_per_second(cache, args.seconds)),
            ("batch of 16", crops_per_second(cache, args.seconds, batch=16)),
            ("cold crop (disk)", crops_per_second(cache, args.seconds, cold=True))]
    mb_per_crop = SEGMENT_SAMPLES * 2 / 1e6
    print(f"\n{'path':18s} {'crops/s':>10s} {'MB/s':>8s} " +
          " ".join(f"{'x model ' + k:>14s}" for k in MODEL_SEGMENTS_PER_S))
    for name, rate in rows:
        ratios = " ".join(f"{rate / v:14,.0f}" for v in MODEL_SEGMENTS_PER_S.values())
        print(f"{name:18s} {rate:10,.0f} {rate * mb_per_crop:8,.0f} {ratios}")
    worst = min(r for _, r in rows) / max(MODEL_SEGMENTS_PER_S.values())
    print(f"\nslowest data path is {worst:,.0f}x the fastest training rate ({'OK' if worst >= 10 else 'TOO SLOW'}: "
          f"needs >= 10x)")


if __name__ == "__main__":
    main()
