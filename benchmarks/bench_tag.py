"""Inference speed of the SampleCNN family beside this machine's matmul peak, and whole-song `tag` speed.

    .venv/bin/python benchmarks/bench_tag.py [--threads N] [--seconds 240] [--archs samplecnn,seed]

Prints: the fp32 matmul peak (4096^3), model segments/s per batch size in eager fp32 with the achieved GFLOP/s as a
fraction of that peak, and the real-time factor of tagging a 4-minute mp3 end to end (decode + resample + segment
+ model + aggregate). Weights are untrained (speed does not depend on them). Run it alone: two heavy jobs on two
cores make every timing meaningless.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import samplecnn
from samplecnn import audio, models
from samplecnn.cli import main as cli_main

SEG = models.SEGMENT_SAMPLES


def matmul_peak_gflops(n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def segment_gflop(arch: str) -> float:
    """Multiply-adds x 2 of one segment's forward pass, counted from the conv/linear layer shapes."""
    model = models.build(arch).eval()
    flops = 0

    def hook(module, inputs, output):
        nonlocal flops
        if isinstance(module, torch.nn.Conv1d):
            flops += 2 * output.numel() * module.in_channels * module.kernel_size[0] // module.groups
        elif isinstance(module, torch.nn.Linear):
            flops += 2 * module.in_features * module.out_features * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 1, SEG))
    for h in handles:
        h.remove()
    return flops / 1e9


def model_throughput(arch: str, batch: int, seconds: float = 6.0) -> float:
    model = models.build(arch).eval()
    x = torch.randn(batch, 1, SEG)
    with torch.inference_mode():
        model(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - start)


def make_song(path: Path, seconds: float) -> Path:
    """A 4-minute 44.1 kHz stereo mp3 of something music-like (chords, drums, noise), encoded with PyAV."""
    import av

    sr = 44100
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=sr, layout="stereo")
        stream.bit_rate = 192_000
        for i in range(int(seconds)):
            t = (np.arange(sr) + i * sr) / sr
            chord = sum(0.1 * np.sin(2 * np.pi * f * (1 + (i // 4) % 3 * 0.12) * t) for f in (220, 277, 330))
            drums = np.exp(-30 * (t % 0.5)) * rng.standard_normal(sr) * 0.3
            x = np.stack([chord + drums, chord - drums]).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the test song")
    parser.add_argument("--archs", default="samplecnn,seed")
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak = matmul_peak_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads; fp32 matmul peak (4096^3): {peak:.0f} GFLOP/s\n")
    print(f"{'model (eager fp32)':22s} {'batch':>5s} {'segments/s':>10s} {'x real time':>11s} {'GFLOP/s':>8s} "
          f"{'of peak':>7s}")
    for arch in args.archs.split(","):
        gflop = segment_gflop(arch)
        for batch in map(int, args.batches.split(",")):
            rate = model_throughput(arch, batch)
            print(f"{arch + f' ({gflop:.2f} GFLOP)':22s} {batch:5d} {rate:10.1f} {rate * SEG / models.SAMPLE_RATE:11.0f}"
                  f" {rate * gflop:8.0f} {rate * gflop / peak:7.0%}")

    with tempfile.TemporaryDirectory() as tmp:
        song = make_song(Path(tmp) / "song.mp3", args.seconds)
        ckpt = Path(tmp) / "model.safetensors"
        cli_main(["init", "samplecnn", str(ckpt)])
        decode = _timed(lambda: audio.load(song))
        tagger = samplecnn.load(ckpt)
        tagger.tag(song)  # warm-up
        tag_s = min(_timed(lambda: tagger.tag(song)) for _ in range(2))
        print(f"\nwhole song, {args.seconds:.0f}-s 44.1 kHz stereo mp3:")
        print(f"  decode + resample to 22050 Hz mono: {args.seconds / decode:6.0f}x real time")
        print(f"  tagger.tag (decode + model, batch {tagger.batch_size}): {args.seconds / tag_s:6.0f}x real time "
              f"({tag_s:.2f} s)")


if __name__ == "__main__":
    main()
