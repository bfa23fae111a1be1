"""How fast `samplecnn similar` and `samplecnn search` are on a large library.

    .venv/bin/python benchmarks/bench_similar.py [--tracks 100000] [--dim 512] [--repeats 5]

Builds a throw-away library of random embeddings and scores (the speed does not depend on their values) through
the real store, then times each step of a query as the command runs it: loading the embedding (or score) matrix
from SQLite, the cosine ranking (a normalised matrix-vector product plus top-k), and the whole query.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from samplecnn.library import search, store
from samplecnn.tags import MTAT_TOP50


def build(db: Path, n: int, dim: int) -> store.Model:
    rng = np.random.default_rng(0)
    model = store.Model("bench-0000000000000000", "bench", "bench", list(MTAT_TOP50), [0.5] * 50, dim, 22050, 59049)
    with store.Library(db, create=True) as lib:
        lib.add_model(model)
        chunk = 10_000
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            emb = np.maximum(rng.standard_normal((k, dim), dtype=np.float32), 0)  # ReLU features, like the model's
            scores = rng.random((k, 50), dtype=np.float32)
            lib.put_tracks(store.Track(f"/music/{start + i:07d}.mp3", model.model_id, 5_000_000, 0, "0" * 32, 240.0,
                                       89, False, scores[i], [], emb[i]) for i in range(k))
    return model


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "library.sqlite"
        start = time.perf_counter()
        model = build(db, args.tracks, args.dim)
        print(f"built a {args.tracks:,}-track library ({db.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        with store.Library(db, readonly=True) as lib:
            load_s, (paths, matrix) = timed(lambda: lib.matrix(model.model_id, "embedding"), args.repeats)
            query = matrix[12345 % len(matrix)].copy()
            rank_s, _ = timed(lambda: search._top(search.cosine(matrix, query), 20), args.repeats)
            exclude = paths[12345 % len(paths)]
            total_s, hits = timed(lambda: search.similar(lib, model, query, limit=20, exclude=exclude), args.repeats)
            search_s, _ = timed(lambda: search.search(lib, model, ["piano", "no vocals"], ["vocal"], limit=20),
                                args.repeats)
        print(f"similar, {args.tracks:,} x {args.dim} float32 embeddings (median of {args.repeats}):")
        print(f"  load the matrix from SQLite  {load_s * 1e3:8.1f} ms")
        print(f"  cosine ranking + top 20      {rank_s * 1e3:8.1f} ms")
        print(f"  whole query                  {total_s * 1e3:8.1f} ms")
        print(f"search --tag piano --tag 'no vocals' --not vocal: {search_s * 1e3:.1f} ms")
        assert hits and hits[0].path != paths[12345 % len(paths)]


if __name__ == "__main__":
    main()
