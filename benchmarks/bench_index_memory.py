"""Memory of a long `samplecnn index` run: is it flat over 1,000 files?

    .venv/bin/python benchmarks/bench_index_memory.py [--files 1000] [--seconds 4] [--model NAME_OR_CKPT]

Generates N short mp3s once (44.1 kHz stereo, music-like, each with its own noise; kept in the temp folder for later
runs), runs the real command `python -m samplecnn index DIR --db ...` on them, and samples every 0.2 s the resident
memory (VmRSS) of the indexing process and of the whole process tree (with its decoder workers). Prints the memory
after 10 % to 100 % of the run and the peak; "flat" means the tree's memory at 90 % is within 5 % (+ 20 MB) of
that at 25 %. Run it alone on this 2-core machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tag import make_song  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/*/stat (Linux)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def make_library(folder: Path, files: int, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = folder / f"{i // 100:02d}" / f"track{i:04d}.mp3"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".part.mp3")
            make_song(tmp, seconds, bit_rate=128_000, seed=i)
            tmp.replace(path)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each file")
    p.add_argument("--model", default="default")
    args = p.parse_args()
    library = make_library(Path(tempfile.gettempdir()) / f"samplecnn-bench-index-{args.files}x{args.seconds:g}",
                           args.files, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "library.sqlite"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "index", str(library), "--db", str(db),
                                 "--model", args.model], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        samples = []  # (seconds, main MB, tree MB)
        while proc.poll() is None:
            samples.append((time.perf_counter() - started, rss_mb(proc.pid),
                            sum(rss_mb(pid) for pid in tree(proc.pid))))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        out, err = proc.communicate()
    samples = [s for s in samples if s[1] > 0]  # the process gone between a poll and its sample
    if proc.returncode != 0 or not samples:
        sys.exit(f"index failed ({proc.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
    print(out.strip().splitlines()[-1])
    audio_s = args.files * args.seconds
    print(f"{args.files} files x {args.seconds:g} s in {wall:.1f} s: {args.files / wall:.1f} files/s, "
          f"{audio_s / wall:.0f}x real time (start-up included)")

    def at(fraction: float) -> tuple[float, float]:
        _, main_mb, tree_mb = min(samples, key=lambda s: abs(s[0] - fraction * samples[-1][0]))
        return main_mb, tree_mb

    print("\n| point of the run | indexing process RSS | with decoder workers |\n|---|---:|---:|")
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        main_mb, tree_mb = at(fraction)
        print(f"| {fraction:.0%} | {main_mb:.0f} MB | {tree_mb:.0f} MB |")
    print(f"| peak | {max(s[1] for s in samples):.0f} MB | {max(s[2] for s in samples):.0f} MB |")
    first, last = at(0.25)[1], at(0.9)[1]  # at 100 % the workers may have exited
    flat = last <= first * 1.05 + 20
    print(f"\n90 % vs 25 % of the run, with workers: {last - first:+.0f} MB ({'flat' if flat else 'GROWING'})")


if __name__ == "__main__":
    main()
