"""Decode + resample speed (x real time) and streaming memory of samplecnn.audio, against the alternatives.

    .venv/bin/python benchmarks/bench_decode.py                 # generates its test files once in a temp folder
    .venv/bin/python benchmarks/bench_decode.py song.mp3 b.ogg   # or times your own files

Compared, each to 22050 Hz mono float32, one thread:
  samplecnn.audio.decode_mono     PyAV decode, numpy channel average, soxr 'HQ' streaming resampler (what we ship)
  pyav+swr                 PyAV decode + av.AudioResampler (libswresample defaults: downmix and resample in ffmpeg)
  soundfile+soxr           libsndfile decode of the whole file, numpy average, soxr.resample 'HQ'
  pyav decode only         the floor: decoding with no conversion at all
The "12 kHz alias" column is the level a 12 kHz tone at 44.1 kHz keeps after each resampler (it should vanish: it
is above the 11025 Hz Nyquist limit of the output). Then a 60-minute mp3 is streamed through samplecnn.audio.stream
in a child process to show that the peak memory does not grow with the file's length.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplecnn import audio  # noqa: E402

SR = 22050
CACHE = Path(tempfile.gettempdir()) / "samplecnn-bench"


# ----------------------------------------------------------------------------------------------------------------
# test files


def music_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """(2, n) float32: a few drifting tones, a noise 'hi-hat' and a bass line; enough for realistic bit rates."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros((2, t.size), np.float32)
    for ch in range(2):
        for f in (220.0, 330.0, 440.0 + 40 * ch, 587.0):
            x[ch] += 0.08 * np.sin(2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 0.2 * t)).astype(np.float32)
        x[ch] += 0.15 * np.sin(2 * np.pi * 55 * t * (1 + 0.5 * (np.floor(t * 2) % 4 == 0))).astype(np.float32)
        gate = ((t * 8) % 1 < 0.1).astype(np.float32)
        x[ch] += 0.05 * gate * rng.standard_normal(t.size).astype(np.float32)
    return x


def encode(path: Path, x: np.ndarray, sr: int, codec: str, bit_rate: int, options=None, container_options=None):
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(tmp), "w", format=path.suffix[1:], container_options=container_options or {}) as c:
        s = c.add_stream(codec, rate=sr, layout=layout, options=options or {})
        s.bit_rate = bit_rate
        for i in range(0, x.shape[1], 65536):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i : i + 65536]), format="fltp", layout=layout)
            f.sample_rate, f.pts = sr, i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    tmp.rename(path)
    return path


def test_files() -> list[Path]:
    CACHE.mkdir(exist_ok=True)
    files = []
    for name, secs, codec, opts in (
        ("music-240s.mp3", 240, "libmp3lame", {}),
        ("music-240s.ogg", 240, "vorbis", {"strict": "-2"}),
        ("music-30s.mp3", 30, "libmp3lame", {}),
    ):
        path = CACHE / name
        if not path.exists():
            print(f"generating {path} ...", flush=True)
            encode(path, music_like(secs, 44100), 44100, codec, 192_000, opts)
        files.append(path)
    return files


def long_file(minutes: int = 60) -> Path:
    """A long 16 kHz mono 32 kbit/s mp3 (like MagnaTagATune's): one encoded minute, without a Xing header, repeated
    (mp3 frames simply concatenate). 16 kHz makes the stream go through the resampler."""
    path = CACHE / f"long-{minutes}min-16k.mp3"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        one = encode(CACHE / "one-minute.mp3", music_like(60, 16000, seed=1)[:1], 16000, "libmp3lame", 32_000,
                     container_options={"write_xing": "0"})
        data = one.read_bytes()
        with open(path.with_suffix(".part"), "wb") as f:
            for _ in range(minutes):
                f.write(data)
        path.with_suffix(".part").rename(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# the contenders


def ours(path):
    return audio.decode_mono(path)


def pyav_swr(path):
    out = []
    with av.open(str(path)) as c:
        r = av.AudioResampler(format="flt", layout="mono", rate=SR)
        for frame in c.decode(c.streams.audio[0]):
            out.extend(g.to_ndarray()[0] for g in r.resample(frame))
        out.extend(g.to_ndarray()[0] for g in r.resample(None))
    return np.concatenate(out)


def soundfile_soxr(path):
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, SR, quality="HQ")


def decode_only(path):
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.audio[0]):
            n += frame.samples
    return n


METHODS = {
    "samplecnn.audio.decode_mono": ours,
    "pyav+swr (default filter)": pyav_swr,
    "soundfile+soxr HQ": soundfile_soxr,
    "pyav decode only": decode_only,
}


def alias_db(method) -> str:
    """Level of a 12 kHz tone at 44.1 kHz after the method's resampler, in dB relative to its input."""
    if method is decode_only:
        return "-"
    path = CACHE / "alias-12k.wav"
    t = np.arange(2 * 44100) / 44100
    fade = np.minimum(1, np.minimum(t, t[::-1]) / 0.1)
    x = 0.5 * fade * np.sin(2 * np.pi * 12000 * t)
    sf.write(path, np.stack([x, x], 1), 44100, subtype="FLOAT")
    note = ""
    try:
        y = method(path)
    except audio.AudioError:  # load() rejects the result as silent: measure the same resampler on the array
        y, note = audio.to_mono_resampled(np.stack([x, x]), 44100), " (file: 'is silent')"
    y = y[SR // 5 : -SR // 5]
    return f"{20 * np.log10(np.sqrt(np.mean(y**2)) / (0.5 / np.sqrt(2)) + 1e-12):.0f}{note}"


def rtf(method, path, repeats=3) -> tuple[float, float]:
    seconds = audio.duration(path)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        method(path)
        best = min(best, time.perf_counter() - t0)
    return seconds / best, best


# ----------------------------------------------------------------------------------------------------------------
# memory


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not inherit the parent's peak)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def rss_child(path: str) -> None:
    """Run in a fresh process: stream the file without keeping blocks; print the peak RSS after the imports, after the
    first block, halfway and at the end, the audio seconds and the wall time."""
    imported = peak_rss_mb()
    s = audio.stream(path, block_seconds=30.0)
    t0 = time.perf_counter()
    n = next(s).size
    first = peak_rss_mb()
    half = None
    for block in s:
        n += block.size
        if half is None and n >= (s.duration or 0) * SR / 2:
            half = peak_rss_mb()
    wall = time.perf_counter() - t0
    print(f"{imported:.1f} {first:.1f} {half or first:.1f} {peak_rss_mb():.1f} {n / SR:.1f} {wall:.2f}")


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "--rss-child":
        return rss_child(argv[1])
    files = [Path(a) for a in argv] if argv else test_files()
    print(f"python {sys.version.split()[0]}, PyAV {av.__version__}, soxr {soxr.__version__}, "
          f"soundfile {sf.__version__}, numpy {np.__version__}; best of 3, x real time (wall s)")
    header = ["method"] + [p.name for p in files] + ["12 kHz alias dB"]
    rows = []
    for name, method in METHODS.items():
        row = [name]
        for path in files:
            try:
                x, wall = rtf(method, path)
                row.append(f"{x:6.0f}x ({wall:.3f}s)")
            except Exception as e:  # e.g. a format libsndfile lacks
                row.append(f"failed: {type(e).__name__}")
        row.append(alias_db(method))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths]] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))

    long = long_file()
    minutes = audio.duration(long) / 60
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(long)], capture_output=True, text=True,
                         check=True).stdout.split()
    imported, first, half, peak, secs, wall = map(float, out)
    print(f"\nstreaming {long.name} ({minutes:.0f} min, {long.stat().st_size / 1e6:.1f} MB) through stream() in a "
          f"fresh process, 30-s blocks, none kept:\n  peak RSS {imported:.0f} MB after imports "
          f"(PyAV, soxr, NumPy; no torch), "
          f"{first:.0f} MB after the first block, {half:.0f} MB halfway, {peak:.0f} MB at the end "
          f"(+{peak - first:.1f} MB) for {secs / 60:.1f} min decoded at {secs / wall:.0f}x real time;\n"
          f"  load() would hold "
          f"{secs * SR * 4 / 1e6:.0f} MB of samples")

if __name__ == "__main__":
    main(sys.argv[1:])
