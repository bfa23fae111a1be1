"""Training throughput (segments/s) of the SampleCNN family on this machine, fp32 and bf16 autocast.

    .venv/bin/python benchmarks/bench_train.py [--archs samplecnn] [--batches 16,23] [--seconds 20]

Forward + backward + SGD-Nesterov step with BCE, exactly what `samplecnn train` does per step, on random
segments (speed does not depend on the data). Compare with benchmarks/bench_cache.py: the data path must be at least
10x faster than this so it never starves the model. Run it alone: two heavy jobs on two cores spoil every timing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from samplecnn import models

SEG = models.SEGMENT_SAMPLES


def throughput(arch: str, batch: int, amp: str, seconds: float) -> float:
    torch.manual_seed(0)
    model = models.build(arch).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = torch.randn(batch, 1, SEG), (torch.rand(batch, 50) < 0.1).float()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="samplecnn")
    parser.add_argument("--batches", default="16,23")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | batch | fp32 segments/s | bf16 segments/s | bf16 / fp32 |")
    print("|---|---|---|---|---|")
    for arch in args.archs.split(","):
        for batch in map(int, args.batches.split(",")):
            fp32 = throughput(arch, batch, "none", args.seconds)
            bf16 = throughput(arch, batch, "bf16", args.seconds)
            print(f"| {arch} | {batch} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")


if __name__ == "__main__":
    main()
