"""`samplecnn index` on this machine against `samplecnn index --ray`: throughput, object-store peak, per-file cost.

    .venv/bin/python benchmarks/bench_ray.py [--files 32] [--seconds 60] [--tiny 60] [--model NAME_OR_CKPT]

Generates N mp3s (44.1 kHz stereo, music-like; kept in the temp folder for later runs) and times the real command
`python -m samplecnn index DIR --db ...` on them: plain, then with --ray on a Ray head this script starts on
127.0.0.1 with as many CPUs as the machine has (`ray start`, stopped at the end), with 1 and 2 model actors, and
once with a bare `--ray` (which starts and stops a Ray of its own: its start-up cost). During each Ray run it polls
the object store's bytes in use every 0.2 s and prints the peak. The per-file cost comes from many tiny files (one
segment each): (time for N - time for 1) / (N - 1), plain and Ray. Every Ray library is checked against the plain
one (largest score and embedding difference). Run it alone on this 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_index_memory import make_library  # noqa: E402

from samplecnn.library import store  # noqa: E402
from samplecnn.library.cluster import LOOPBACK_ENV  # noqa: E402


def index(folder: Path, db: Path, model: str, *extra: str) -> float:
    db.unlink(missing_ok=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "samplecnn", "index", str(folder), "--db", str(db), "--model", model,
                    *extra], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, **LOOPBACK_ENV})
    return time.perf_counter() - t


def largest_difference(a: Path, b: Path) -> float:
    with store.Library(a) as la, store.Library(b) as lb:
        m = la.model().model_id
        ta = {t.path: t for t in la.tracks(m)}
        tb = {t.path: t for t in lb.tracks(m)}
        assert ta.keys() == tb.keys(), "the two libraries hold different tracks"
        return max(max(np.abs(ta[p].scores - tb[p].scores).max(), np.abs(ta[p].embedding - tb[p].embedding).max())
                   for p in ta)


class StorePeak:
    """The most object-store bytes in use, polled from the cluster's raylets while a run goes on."""

    def __init__(self, address: str):
        from ray._private.internal_api import get_state_from_address

        self.state = get_state_from_address(address)
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        while not self.stop.is_set():
            try:
                used = get_memory_info_reply(self.state, timeout_seconds=5).store_stats.object_store_bytes_used
                self.peak = max(self.peak, used)
            except Exception:  # a raylet busy or restarting: the next poll sees it
                pass
            self.stop.wait(0.2)

    def __enter__(self) -> "StorePeak":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tiny", type=int, default=60, help="files of 3 s for the per-file cost")
    ap.add_argument("--model", default="default")
    ap.add_argument("--object-store-mb", type=int, default=500)
    args = ap.parse_args()

    cache = Path(tempfile.gettempdir()) / "samplecnn-bench-ray"
    music = make_library(cache / f"music-{args.files}x{args.seconds:g}", args.files, args.seconds)
    tiny = make_library(cache / f"tiny-{args.tiny}", args.tiny, 3.0)
    one = make_library(cache / "tiny-1", 1, 3.0)
    work = Path(tempfile.mkdtemp(prefix="samplecnn-bench-ray-"))
    audio_s = args.files * args.seconds
    cpus = len(os.sched_getaffinity(0))
    print(f"{args.files} files x {args.seconds:g} s ({audio_s / 60:.0f} min of audio), {cpus} CPUs, model "
          f"{args.model}")

    rows = []
    plain_db = work / "plain.sqlite"
    t_plain = index(music, plain_db, args.model)
    rows.append(("plain index", t_plain, None, 0.0))

    port = free_port()
    address = f"127.0.0.1:{port}"
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    os.environ.update(LOOPBACK_ENV)  # the head, this process and the commands on 127.0.0.1 only
    # a head on loopback for this machine alone: no token (`ray start` would make one that the commands lack)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                    f"--object-store-memory={args.object_store_mb * 2**20}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        import ray as ray_api

        ray_api.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="error")
        for actors in (1, 2):
            db = work / f"ray{actors}.sqlite"
            with StorePeak(address) as peak:
                t = index(music, db, args.model, "--ray", address, "--actors", str(actors))
            rows.append((f"--ray, joined, {actors} actor(s)", t, peak.peak, largest_difference(plain_db, db)))
        tiny_times = {}
        for name, folder in (("plain", tiny), ("plain-1", one)):
            tiny_times[name] = index(folder, work / "tiny.sqlite", args.model)
        for name, folder in (("ray", tiny), ("ray-1", one)):
            tiny_times[name] = index(folder, work / "tiny.sqlite", args.model, "--ray", address, "--actors", "1")
        ray_api.shutdown()
    finally:
        subprocess.run([ray, "stop"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    db = work / "ray-local.sqlite"
    t = index(music, db, args.model, "--ray")
    rows.append(("--ray, a Ray started by the command (start-up included)", t, None, largest_difference(plain_db, db)))

    print("\n| run | seconds | x real time | vs plain | object-store peak | max difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, peak, diff in rows:
        shown = "-" if peak is None else f"{peak / 2**20:.0f} MB"
        print(f"| {name} | {t:.1f} | {audio_s / t:.0f}x | {100 * (t / t_plain - 1):+.0f} % | {shown} | {diff:.1e} |")
    n = args.tiny - 1
    plain_file = (tiny_times["plain"] - tiny_times["plain-1"]) / n
    ray_file = (tiny_times["ray"] - tiny_times["ray-1"]) / n
    print(f"\nper file ({args.tiny} files of 3 s against 1): plain {1000 * plain_file:.0f} ms, --ray "
          f"{1000 * ray_file:.0f} ms: Ray's scheduling costs {1000 * (ray_file - plain_file):.0f} ms a file; "
          f"fixed start-up with a running cluster: plain {tiny_times['plain-1']:.1f} s, --ray "
          f"{tiny_times['ray-1']:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
