"""Files per second of `samplecnn tag DIR` against `samplecnn index DIR` on the same folder of short mp3s.

    .venv/bin/python benchmarks/bench_tag_folder.py [--files 200] [--seconds 10]   # run it ALONE

Both commands run as a user runs them (a fresh process each, start-up and model load included) with the default
model and options: `tag` sends several files through the index's pipeline (decoder processes beside the model, one
model load), so the two should be close; `index` also hashes each file and writes a database row. Each is run
twice, the better time kept.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_tag import cpu_description, make_song  # noqa: E402


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each generated mp3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        folder = Path(tmp_name) / "songs"
        folder.mkdir()
        for i in range(args.files):
            make_song(folder / f"{i:03d}.mp3", args.seconds, seed=i)
        cli = [sys.executable, "-m", "samplecnn"]
        tag = min(timed([*cli, "tag", str(folder), "--format", "jsonl"]) for _ in range(2))
        index = []
        for i in range(2):
            index.append(timed([*cli, "index", str(folder), "--db", str(Path(tmp_name) / f"lib{i}.sqlite")]))
        index = min(index)
    audio = args.files * args.seconds
    print(f"CPU: {cpu_description()}; {os.cpu_count()} CPUs; {args.files} mp3s of {args.seconds:.0f} s")
    print(f"samplecnn tag DIR:   {args.files / tag:6.1f} files/s ({audio / tag:5.0f}x real time, {tag:.1f} s)")
    print(f"samplecnn index DIR: {args.files / index:6.1f} files/s ({audio / index:5.0f}x real time, {index:.1f} s)")


if __name__ == "__main__":
    main()
