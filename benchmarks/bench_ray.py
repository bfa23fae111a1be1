"""`samplecnn index` on this machine against `samplecnn index --ray`, and Ray Core (what --ray runs) against Ray Data.

    .venv/bin/python benchmarks/bench_ray.py [--files 16] [--seconds 60] [--tiny 30] [--model NAME_OR_CKPT]

Generates N mp3s (44.1 kHz stereo, music-like; kept in the temp folder for later runs) and times the real command
`python -m samplecnn index DIR --db ...` on them, all at equal cores (the machine's): plain; then with --ray joining
local Ray clusters on 127.0.0.1 (ray.cluster_utils, as the tests): one node with every CPU (the default, one model
actor of one thread per core; and one actor whose threads take every core), and one node per CPU (chunks cross
nodes through the object managers); then a bare `--ray` (a Ray of its own: its start-up). The same files also go
through a Ray Data pipeline doing the same work (paths -> flat_map decoding with the index's decoder -> map_batches on
an actor pool running the index's model actor -> the driver gathers each song), run as a command of its own so that
it pays the same start-up.

During each Ray run the object store's bytes in use are polled every 0.1 s (the raylets' memory info, the figure
`ray memory --stats-only` prints) and the peak printed. Each is also run on the first half of the files: the time
the second half adds is the rate with every start-up cost taken out. Per-file cost: (time for N tiny files - time
for 1) / (N - 1) with files of 3 s (one segment each), plain and --ray; the time for 1 is the fixed start-up. Every
result is checked against the plain library (largest score and embedding difference). Needs the bench-ray extra
(pandas for Ray Data, grpcio for the raylets' stats); without pandas the Ray Data row is left out. Ends with the
cluster size for 1 million 4-minute tracks in 24 hours that these figures give. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
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
from bench_tag import cpu_description  # noqa: E402

from samplecnn.library import store  # noqa: E402
from samplecnn.library.cluster import LOOPBACK_ENV  # noqa: E402

os.environ.update(LOOPBACK_ENV)  # before Ray is imported: the clusters, and the commands joining them, on 127.0.0.1

TRACKS, TRACK_S, DAY_S = 1_000_000, 240.0, 86_400.0
QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ})
    return time.perf_counter() - t


def index(folder: Path, db: Path, model: str, *extra: str) -> float:
    db.unlink(missing_ok=True)
    return run([sys.executable, "-m", "samplecnn", "index", str(folder), "--db", str(db), "--model", model, *extra])


def songs_of_library(db: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with store.Library(db) as lib:
        return {t.path: (t.scores, t.embedding) for t in lib.tracks(lib.model().model_id)}


def largest_difference(want: dict, got: dict) -> float:
    assert want.keys() == got.keys(), "the two runs hold different tracks"
    return max(max(np.abs(want[p][0] - got[p][0]).max(), np.abs(want[p][1] - got[p][1]).max()) for p in want)


# -- Ray Data: the same work as `index --ray`, run by `bench_ray.py --ray-data ...` as a command of its own --

def ray_data_index(address: str, folder: Path, model: str, actors: int, out: Path) -> None:
    """Decode every mp3 of `folder` and score it with Ray Data; each song's scores and embedding saved to `out`."""
    import ray

    from samplecnn import inference, pretrained
    from samplecnn.library import cluster, decode
    from samplecnn.library import index as local_index

    ray.init(address=address, **QUIET)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    tagger = inference.load(model)  # the driver's, as the index's: song_result turns segments into a song
    rate, seg = tagger.sample_rate, tagger.info.segment_samples
    source = pretrained.checkpoint_path(model)
    cpus = int(ray.cluster_resources()["CPU"])

    def segments(row: dict):
        i = 0
        for kind, payload in decode.messages(row["path"], None, rate, seg, local_index._CHUNK_SEGMENTS):
            if kind == "segments":
                for x in payload:
                    yield {"path": row["path"], "i": i, "x": x}
                    i += 1
            elif kind == "error":
                raise RuntimeError(f"{row['path']}: {payload}")

    class Scorer:
        def __init__(self, checkpoint: bytes):
            self.model = cluster.ModelActor(checkpoint, source.suffix, "cpu", None, max(1, cpus // actors))

        def __call__(self, batch: dict) -> dict:
            probs, embeds = self.model.score(batch["x"])
            return {"path": batch["path"], "i": batch["i"], "probs": probs, "embeds": embeds}

    paths = sorted(str(p) for p in folder.rglob("*.mp3"))
    ds = (ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
          .flat_map(segments, num_cpus=1, compute=ray.data.TaskPoolStrategy(size=max(1, cpus - 1)))  # --ray's
          .map_batches(Scorer, fn_constructor_args=(source.read_bytes(),), batch_size=local_index._CHUNK_SEGMENTS,
                       batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=0))
    parts: dict[str, list] = {}
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        for path, i, p, e in zip(b["path"], b["i"], b["probs"], b["embeds"]):
            parts.setdefault(str(path), []).append((int(i), p, e))
    scores, embeds = [], []
    for path in paths:
        rows = sorted(parts[path], key=lambda r: r[0])
        song = tagger.song_result(np.stack([r[1] for r in rows]), len(rows) * seg, path=path,
                                  embeddings=np.stack([r[2] for r in rows]))
        scores.append(song.scores)
        embeds.append(song.embedding)
    np.savez(out, paths=np.array(paths), scores=np.stack(scores), embeds=np.stack(embeds))
    ray.shutdown()


def songs_of_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(path) as z:
        return {str(p): (s, e) for p, s, e in zip(z["paths"], z["scores"], z["embeds"])}


# -- the clusters --

class StorePeak:
    """The most object-store bytes in use over the cluster, polled from its raylets while a run goes on."""

    def __init__(self, address: str):
        from ray._private.internal_api import get_state_from_address

        self.state = get_state_from_address(address)
        self.peak, self.polls, self.error = 0, 0, None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        while not self.stop.is_set():
            try:
                used = get_memory_info_reply(self.state, timeout_seconds=5).store_stats.object_store_bytes_used
                self.peak = max(self.peak, used)
                self.polls += 1
            except Exception as e:  # a raylet busy: the next poll sees it
                self.error = e
            self.stop.wait(0.1)

    def __enter__(self) -> StorePeak:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def shown(self) -> str:
        if not self.polls:
            return f"not read ({self.error})"
        return f"{self.peak / 2**20:.0f} MB"


def local_cluster(cpus_per_node: list[int], object_store_mb: int):
    from ray.cluster_utils import Cluster

    node = {"object_store_memory": object_store_mb * 2**20, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": cpus_per_node[0], "include_dashboard": False})
    for cpus in cpus_per_node[1:]:
        c.add_node(**node, num_cpus=cpus)
    c.wait_for_nodes()
    time.sleep(5)  # the workers the raylets start at once have started: none of that start-up in the first run
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tiny", type=int, default=30, help="files of 3 s for the per-file cost")
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each on the music: the fastest is shown (the "
                    "least disturbed by anything else on the machine)")
    ap.add_argument("--object-store-mb", type=int, default=500, help="per node")
    ap.add_argument("--profile", type=Path, help="also write cProfile files of the driver of one --ray run of the "
                    "tiny files and of the music (untimed) here")
    ap.add_argument("--ray-data", nargs=4, metavar=("ADDRESS", "FOLDER", "ACTORS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ray_data:
        address, folder, actors, out = args.ray_data
        ray_data_index(address, Path(folder), args.model, int(actors), Path(out))
        return

    import ray

    cache = Path(tempfile.gettempdir()) / "samplecnn-bench-ray"
    music = make_library(cache / f"music-{args.files}x{args.seconds:g}", args.files, args.seconds)
    half = make_library(cache / f"music-{args.files // 2}x{args.seconds:g}", args.files // 2, args.seconds)
    tiny = make_library(cache / f"tiny-{args.tiny}", args.tiny, 3.0)
    one = make_library(cache / "tiny-1", 1, 3.0)
    work = Path(tempfile.mkdtemp(prefix="samplecnn-bench-ray-"))
    audio_s = args.files * args.seconds
    cpus = len(os.sched_getaffinity(0))
    try:
        import pandas  # noqa: F401  (Ray Data's own dependency)
        ray_data = True
    except ImportError:
        ray_data = False
    print(f"{args.files} files x {args.seconds:g} s ({audio_s / 60:.0f} min of audio), model {args.model}, "
          f"Ray {ray.__version__}; the fastest of {args.repeat} runs each")
    print(f"CPU: {cpu_description()}, {cpus} cores")

    def both(measure) -> tuple[float, float]:
        """The fastest of `repeat` runs on all the music and on its first half, alternated (all of it last: the
        result checked is the last run's)."""
        times = [(measure(half), measure(music)) for _ in range(args.repeat)]
        return min(t for _, t in times), min(t for t, _ in times)

    def fastest(folder: Path, *extra: str) -> float:
        return min(index(folder, work / "tiny.sqlite", args.model, *extra) for _ in range(args.repeat))

    rows = []  # (name, seconds for all, seconds for the half, object-store peak, max difference)
    plain_db = work / "plain.sqlite"
    t_plain = both(lambda folder: index(folder, plain_db, args.model))
    plain = songs_of_library(plain_db)
    rows.append(("plain `index`", *t_plain, "-", 0.0))
    tiny_times = {"plain": fastest(tiny), "plain-1": fastest(one)}

    # None: --ray's default, one actor of one thread per core; 1: one actor whose threads take every core
    layouts = [([cpus], f"1 node x {cpus} CPUs", (None, 1)), ([1] * cpus, f"{cpus} nodes x 1 CPU", (None,))]
    for nodes, layout, actor_counts in layouts:
        c = local_cluster(nodes, args.object_store_mb)
        try:
            for actors in actor_counts:
                db = work / "ray.sqlite"
                extra = ("--actors", str(actors)) if actors else ()
                with StorePeak(c.address) as peak:
                    t = both(lambda folder: index(folder, db, args.model, "--ray", c.address, *extra))  # noqa: B023
                shown = (f"1 actor of {cpus} threads" if actors else f"{cpus} actors of 1 thread (default)")
                rows.append((f"`--ray`, {layout}, {shown}", *t, peak.shown(),
                             largest_difference(plain, songs_of_library(db))))
            if len(nodes) == 1:
                tiny_times["ray"] = fastest(tiny, "--ray", c.address)
                tiny_times["ray-1"] = fastest(one, "--ray", c.address)
                if args.profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    for name, folder in (("tiny", tiny), ("music", music)):
                        (work / "profiled.sqlite").unlink(missing_ok=True)
                        run([sys.executable, "-m", "cProfile", "-o", str(args.profile / f"driver-{name}.prof"), "-m",
                             "samplecnn", "index", str(folder), "--db", str(work / "profiled.sqlite"), "--model",
                             args.model, "--ray", c.address])
                if ray_data:
                    out = work / "ray-data.npz"
                    with StorePeak(c.address) as peak:
                        t = both(lambda folder: run([sys.executable, __file__, "--model", args.model, "--ray-data",
                                                     c.address, str(folder), str(cpus), str(out)]))  # noqa: B023
                    rows.append((f"Ray Data, {layout}, {cpus} actors of 1 thread", *t, peak.shown(),
                                 largest_difference(plain, songs_of_npz(out))))
        finally:
            c.shutdown()

    db = work / "ray-local.sqlite"
    t = min(index(music, db, args.model, "--ray") for _ in range(args.repeat))
    rows.append(("`--ray` alone (starts its own Ray: start-up included)", t, None, "-",
                 largest_difference(plain, songs_of_library(db))))

    more_s = audio_s - (args.files // 2) * args.seconds  # the audio of the second half
    plain_more = t_plain[0] - t_plain[1]
    print(f"\n| run | seconds | x real time | vs plain | second half ({args.files - args.files // 2} files, start-up "
          f"excluded): x real time, vs plain | object-store peak | max diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t, t_half, peak, diff in rows:
        more = "-" if t_half is None else (f"{more_s / (t - t_half):.0f}x, "
                                           f"{100 * ((t - t_half) / plain_more - 1):+.0f} %")
        print(f"| {name} | {t:.1f} | {audio_s / t:.0f}x | {100 * (t / t_plain[0] - 1):+.0f} % | {more} | {peak} | "
              f"{diff:.1e} |")
    n = args.tiny - 1
    plain_file = (tiny_times["plain"] - tiny_times["plain-1"]) / n
    ray_file = (tiny_times["ray"] - tiny_times["ray-1"]) / n
    print(f"\nper file ({args.tiny} files of 3 s against 1): plain {1000 * plain_file:.0f} ms, --ray "
          f"{1000 * ray_file:.0f} ms (Ray's scheduling: {1000 * (ray_file - plain_file):+.0f} ms a file); fixed "
          f"start-up (1 file): plain {tiny_times['plain-1']:.1f} s, --ray joining a running cluster "
          f"{tiny_times['ray-1']:.1f} s")

    # the estimate: 1 million 4-minute tracks in 24 h, at the default's rate on the second half (per-file costs of
    # these shorter files included)
    need = TRACKS * TRACK_S / DAY_S  # x real time
    t, t_half = next((t, t_half) for name, t, t_half, _, _ in rows if name.startswith("`--ray`, 1 node"))
    per_core = more_s / (t - t_half) / cpus
    print(f"\n1 million 4-minute tracks in 24 h: {need:,.0f}x real time. CPUs, at --ray's {per_core:.0f}x per core "
          f"here (second half): {need / per_core:.0f} such cores, {TRACKS * TRACK_S / per_core / 3600:,.0f} "
          f"core-hours; the driver commits {TRACKS / DAY_S:.1f} tracks/s (it did {1 / ray_file:.0f} files/s here, "
          f"the whole pipeline on {cpus} cores).")

if __name__ == "__main__":
    main()
