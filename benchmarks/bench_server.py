"""Load test of `samplecnn serve` on loopback: N requests from C concurrent clients.

    .venv/bin/python benchmarks/bench_server.py [--requests 200] [--clients 8] [--seconds 10] [--model CKPT]

Starts the real command (`python -m samplecnn serve --port 0`, bound to 127.0.0.1) with an untrained checkpoint
unless --model is given, uploads the same mp3 (44.1 kHz stereo, --seconds long) to POST /v1/tag from C threads,
each with its own keep-alive connection, and prints throughput, p50/p95/max latency, the error count, and the
server's resident memory sampled every 0.2 s (after warm-up, at the half-way mark and at the end: flat means the
second half did not grow). Every request goes to 127.0.0.1; the loop is bounded by --requests and --deadline.
Exits 1 on any error. Run it alone: other CPU-heavy jobs make the numbers meaningless.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index_memory import rss_mb  # noqa: E402
from bench_tag import make_song  # noqa: E402


class MemorySampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic(), rss_mb(self.pid)))


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", "--model", model, "--port", "0"],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            return proc, match.group(1)
    raise SystemExit(f"the server did not start (exit code {proc.wait()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the uploaded song")
    parser.add_argument("--model", help="checkpoint (default: an untrained samplecnn written to a temp folder)")
    parser.add_argument("--deadline", type=float, default=900.0, help="stop sending after this many seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "model.safetensors")
            subprocess.run([sys.executable, "-m", "samplecnn", "init", "samplecnn", model], check=True,
                           stdout=subprocess.DEVNULL, cwd=ROOT)
        song = make_song(Path(tmp) / "song.mp3", args.seconds).read_bytes()
        proc, url = start_server(model)
        try:
            return run_load(proc, url, song, args)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def run_load(proc, url: str, song: bytes, args) -> int:
    def post(client: httpx.Client) -> httpx.Response:
        return client.post("/v1/tag", files={"file": ("song.mp3", song, "audio/mpeg")}, params={"taggram": "false"})

    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(3):  # warm-up: first-call allocations are not a leak
            post(client).raise_for_status()
    sampler = MemorySampler(proc.pid)
    sampler.start()
    time.sleep(0.5)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_request = iter(range(args.requests))
    deadline = time.monotonic() + args.deadline

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while time.monotonic() < deadline:
                with lock:
                    if next(next_request, None) is None:
                        return
                start = time.perf_counter()
                try:
                    r = post(client)
                    ok = r.status_code == 200
                    problem = None if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                elapsed = time.perf_counter() - start
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    start = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    time.sleep(0.5)
    sampler.stop.set()
    sampler.join()

    done = len(latencies)
    mem = [m for _, m in sampler.samples]
    half = [m for t, m in sampler.samples if t <= start + wall / 2]
    q = np.percentile(latencies, [50, 95]) if latencies else [float("nan")] * 2
    print(f"{done + len(errors)} requests of a {args.seconds:g}-s mp3 from {args.clients} clients in {wall:.1f} s "
          f"on loopback")
    print(f"  throughput   {done / wall:6.2f} requests/s ({done * args.seconds / wall:.0f} s of audio per second)")
    print(f"  latency      p50 {q[0]:.3f} s, p95 {q[1]:.3f} s, max {max(latencies, default=float('nan')):.3f} s, "
          f"mean {statistics.fmean(latencies) if latencies else float('nan'):.3f} s")
    print(f"  errors       {len(errors)}")
    for e in errors[:5]:
        print(f"    {e}")
    if mem:
        print(f"  server RSS   {mem[0]:.0f} MB after warm-up, {half[-1] if half else mem[0]:.0f} MB half-way, "
              f"{mem[-1]:.0f} MB at the end, {max(mem):.0f} MB peak")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
