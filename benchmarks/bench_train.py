"""Training throughput (segments/s) on this machine: the student's step per layout and precision, the teacher, and
the whole distillation step (augmented views + online teacher + student), side by side in one run.

    .venv/bin/python benchmarks/bench_train.py [--data CACHE] [--seconds 15] [--widths 1,0.5]

Rows:
- student step: forward + backward + AdamW with BCE on random segments (speed does not depend on the data), per
  layout (conv1d, planar = height-1 Conv2d in channels-last memory), precision and batch size;
- teacher: MTT_musicnn + MTT_vgg labelling 47,680-sample 16-kHz windows (samplecnn.teachers.ensemble);
- distillation step: what `samplecnn train --teacher both --recipe cosine --amp bf16` runs per step, views from
  CACHE (a prepared cache; skipped without --data); where CACHE has teacher labels (`samplecnn teach`), also the
  step of `--teacher labels` (plain views labelled ahead: the data and the student's step, no teacher).

Run it alone: two heavy jobs on two cores spoil every timing. The CPU's model and flags are printed first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samplecnn import devices, models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tag import cpu_description  # noqa: E402

SEG = models.SEGMENT_SAMPLES


def timed(step, batch: int, seconds: float) -> float:
    step()
    step()  # warm-up: oneDNN picks and caches its kernels
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - start)


def student_step(width: float, planar: bool, amp: bool, batch: int):
    torch.manual_seed(0)
    model = models.build("samplecnn", width=width).train()
    model.planar = planar
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 1, SEG), torch.rand(batch, 50)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def teacher_step(batch: int):
    from samplecnn.teachers.ensemble import TeacherEnsemble

    teacher = TeacherEnsemble(("MTT_musicnn", "MTT_vgg"), list(range(50)))
    # real-music-like input matters: the teachers' speed depends on the values (sparsity after ReLU)
    t = np.arange(47680) / 16000
    rng = np.random.default_rng(0)
    windows = torch.from_numpy(np.stack([
        (0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) * (1 + np.sin(2 * np.pi * 2 * t))
         + 0.05 * rng.standard_normal(len(t))).astype(np.float32) for _ in range(batch)]))
    return lambda: teacher.probabilities(windows)


def distill_step(data: str, width: float, batch: int, amp: str = "bf16", teacher: str = "both"):
    from samplecnn.train import Run, TrainConfig

    run = Run(TrainConfig(data=data, out=tempfile.mkdtemp(prefix="bench-train-"), recipe="cosine", teacher=teacher,
                          amp=amp, width=width, batch_size=batch, layout="planar"))
    counter = iter(range(10**9))
    return lambda: run.step(*run.batch(next(counter), 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a prepared cache for the distillation-step rows")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--widths", default="1,0.5")
    args = parser.parse_args()
    widths = [float(w) for w in args.widths.split(",")]
    devices.tune_malloc()  # as `samplecnn train` does on a CPU
    print(f"{cpu_description()}\ntorch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| what | width | layout | precision | batch | segments/s |")
    print("|---|---|---|---|---|---|")
    rows = [("student step", 1.0, "conv1d", "fp32", 16), ("student step", 1.0, "conv1d", "bf16", 16),
            ("student step", 1.0, "planar", "fp32", 16), ("student step", 1.0, "planar", "bf16", 16),
            ("student step", 1.0, "planar", "bf16", 8), ("student step", 1.0, "planar", "bf16", 32)]
    rows += [("student step", w, layout, precision, 16) for w in widths if w != 1.0
             for layout, precision in (("conv1d", "fp32"), ("planar", "fp32"), ("planar", "bf16"))]
    for what, width, layout, precision, batch in rows:
        rate = timed(student_step(width, layout == "planar", precision == "bf16", batch), batch, args.seconds)
        print(f"| {what} | {width:g} | {layout} | {precision} | {batch} | {rate:.1f} |", flush=True)
    rate = timed(teacher_step(16), 16, args.seconds)
    print(f"| teacher (musicnn fp32 + vgg bf16) | - | - | mixed | 16 | {rate:.1f} |", flush=True)
    if args.data:
        for width in widths:
            for amp in ("none", "bf16"):
                rate = timed(distill_step(args.data, width, 16, amp), 16, args.seconds)
                precision = "bf16" if amp == "bf16" else "fp32"
                print(f"| distillation step (views + teacher + student) | {width:g} | planar | {precision} | 16 | "
                      f"{rate:.1f} |", flush=True)
        from samplecnn.data import Cache

        if Cache(args.data).has_segment_labels:
            for width in widths:
                rate = timed(distill_step(args.data, width, 16, "bf16", teacher="labels"), 16, args.seconds)
                print(f"| distillation step, views labelled ahead (`--teacher labels`) | {width:g} | planar | bf16 | "
                      f"16 | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
