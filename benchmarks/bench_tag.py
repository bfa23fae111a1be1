"""Whole-song tagging speed per inference path, beside musicnn, the matmul peak, decode speed, memory and start-up.

    .venv/bin/python benchmarks/bench_tag.py            # ~5 min; run it ALONE (see below)

Prints one table per run (plain, then markdown for the README) for the same files: a generated 4-minute 44.1 kHz
stereo mp3 plus the three reference excerpts in ../shared/musicnn-reference (real music) when present. Each path
runs in a fresh process (malloc state and thread pools are process-wide); the rows add one change at a time:
"before" (the old code: BatchNorm unfolded, batch 1, glibc's default malloc), folded BatchNorm, malloc tuning
(fp32), batch 4, decoding ahead in a thread, bf16 in the Conv1d layout, bf16 planar (height-1 Conv2d, channels-last)
at batch 1 and 8, int8 (ONNX Runtime, the checkpoint's calibrated int8 model), ONNX Runtime fp32, "auto" (what
`samplecnn tag` runs: the precision the checkpoint's check on this kind of CPU allows) and musicnn. Columns:
- x real time of `tagger.tag(path)` per path, decode + resample + segment + model + aggregate included (best of 2-3
  after a warm-up); the ratio to musicnn (our PyTorch port of MTT_musicnn, in the same run; the original TensorFlow
  package is slower than the port: README, Benchmarks);
- model-only segments/s at the path's batch size, achieved GFLOP/s and its fraction of the measured peak of the
  same precision (the best of a 4096^3 matmul, a 512-channel k=3 Conv1d and the same as a planar Conv2d);
- accuracy against the fp32 eager reference: the largest song-level score difference and whether the precision
  rule (samplecnn.precision.compare: scores within 0.01, top-5 changes only between near ties, decisions only near
  the threshold) holds on every file. The model is the bundled trained default one when installed, else untrained
  weights (then these numbers only show numerical drift on random weights, not accuracy);
Then decode speed, peak RSS of tagging a generated 2-hour low-bitrate mp3 (in a subprocess, VmHWM), and the
start-up time of `samplecnn tag` on a short file against `python -c "import torch"`.

Two heavy jobs on two cores make every timing meaningless (PyTorch's spinning threads slow 10-20x): the load average
is printed before and after; do not trust a run that started above ~0.6.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samplecnn import audio, checkpoint, devices, int8, models, precision  # noqa: E402
from samplecnn.inference import Tagger  # noqa: E402
from samplecnn.segments import segment_batches  # noqa: E402

SEG = models.SEGMENT_SAMPLES
SR = models.SAMPLE_RATE
REFERENCE = ROOT.parent / "shared" / "musicnn-reference"
LONG_MP3 = Path(tempfile.gettempdir()) / "samplecnn_bench_2h.mp3"


# ----------------------------------------------------------------------------------------------------------------
# inputs


def make_song(path: Path, seconds: float, bit_rate: int = 192_000, seed: int = 0) -> Path:
    """A 44.1 kHz stereo mp3 of something music-like (chords, drums, noise), encoded with PyAV."""
    import av

    sr = 44100
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=sr, layout="stereo")
        stream.bit_rate = bit_rate
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


def long_mp3() -> Path:
    """The 2-hour 64 kbit/s mp3, generated once into the temp folder (about 1.5 min) and kept for later runs."""
    if not LONG_MP3.is_file():
        tmp = LONG_MP3.with_suffix(".part.mp3")
        make_song(tmp, 7200, bit_rate=64_000)
        tmp.replace(LONG_MP3)
    return LONG_MP3


def _bundled_default() -> Path | None:
    """The trained default model, if this install has one (speed does not depend on it; accuracy does)."""
    from samplecnn import pretrained
    from samplecnn.errors import SampleCNNError

    try:
        return pretrained.checkpoint_path("default")
    except SampleCNNError:  # not installed in this checkout
        return None


def write_untrained(path: Path) -> Path:
    """The default-size 3^9 SampleCNN with random weights and non-trivial BatchNorm statistics (as trained ones)."""
    from samplecnn.tags import MTAT_TOP50

    torch.manual_seed(0)
    config = models.config_for("samplecnn")
    model = models.SampleCNN(**config)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    info = checkpoint.ModelInfo(arch="samplecnn", config=config, tags=list(MTAT_TOP50), thresholds=[0.5] * 50,
                                provenance={"source": "untrained (benchmark)"})
    checkpoint.save(path, model, info, overwrite=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# measuring


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_average() -> float:
    return os.getloadavg()[0]


def matmul_peak_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / min(_timed(lambda: a @ b) for _ in range(repeats)) / 1e9


def throughput(fn, x: np.ndarray, seconds: float) -> float:
    """Calls of fn(x) per second, after one warm-up call."""
    fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return n / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------------
# the paths


# name -> (precision, BatchNorm folded, malloc tuning, batch size, prefetch blocks, engine); None = the default.
# Engine "conv1d": torch with bf16 kept in the Conv1d layout (the Tagger runs bf16 planar on a CPU).
PATHS = {
    "fp32 eager (before)": ("fp32", False, False, 1, 0, "torch"),
    "fp32 folded BN": ("fp32", True, False, 1, 0, "torch"),
    "fp32 folded + malloc": ("fp32", True, True, None, None, "torch"),
    "  same, batch 4": ("fp32", True, True, 4, None, "torch"),
    "  same + prefetch": ("fp32", True, True, None, 2, "torch"),
    "bf16 Conv1d, batch 8": ("bf16", True, True, 8, None, "conv1d"),
    "bf16 planar, batch 1": ("bf16", True, True, 1, None, "torch"),
    "bf16 planar, batch 8": ("bf16", True, True, None, None, "torch"),
    "int8 (ONNX Runtime), batch 8": ("int8", True, True, None, None, "torch"),
    "ONNX Runtime fp32": ("fp32", True, True, None, None, "model.onnx"),
    "auto (samplecnn tag)": ("auto", True, True, None, None, "torch"),
    "musicnn (PyTorch port)": (None, None, True, None, 0, "musicnn"),
}


def make_tagger(name: str, ckpt: Path, tmp: Path):
    """The tagger of one path, in this (fresh) process. "before" is the code as it was: BatchNorm unfolded, batch 1,
    decoding in line with the model, glibc's default malloc behaviour."""
    precision, folded, malloc, batch, ahead, engine = PATHS[name]
    if malloc:
        devices.tune_malloc()
    if engine == "musicnn":
        from samplecnn.teachers.musicnn import load_teacher

        return load_teacher("MTT_musicnn")
    model, info = checkpoint.read(ckpt)
    tagger = Tagger(model, info, precision=precision, batch_size=batch, prefetch_blocks=ahead,
                    int8_model=int8.int8_path(ckpt))
    if engine.endswith(".onnx"):  # the exported fp32 graph, run by the Tagger's ONNX Runtime path (int8.Int8Model)
        tagger.int8 = int8.Int8Model(tmp / engine, torch.get_num_threads())
    if engine == "conv1d":
        tagger.model.planar = False
    if not folded:
        tagger.model = model.eval()
    return tagger


def measure_path(name: str, ckpt: Path, tmp: Path, files: list[Path], model_seconds: float) -> dict:
    """Whole-song speed (x real time) and song scores per file, and model-only segments/s, for one path."""
    tagger = make_tagger(name, ckpt, tmp)
    out = {"speed": {}, "scores": {}, "seconds": {}, "rate": None, "precision": getattr(tagger, "precision", None)}
    for f in files:
        result = tagger.tag(f)  # warm-up (and the scores and the duration)
        best = min(_timed(lambda f=f: tagger.tag(f)) for _ in range(2 if result.duration > 60 else 3))
        out["speed"][str(f)] = result.duration / best
        out["seconds"][str(f)] = result.duration
        out["scores"][str(f)] = result.scores.tolist()
    if not name.startswith("musicnn"):
        x = audio.decode_mono(files[-1])[:SEG]
        out["rate"] = model_only(name, tagger, x, model_seconds)
    return out


def run_path(name: str, ckpt: Path, tmp: Path, files: list[Path], model_seconds: float) -> dict:
    """measure_path in a fresh process: malloc state and thread pools are process-wide, so paths must not share."""
    import json

    env = dict(os.environ)
    if not PATHS[name][2]:  # the Tagger would tune malloc itself
        env["SAMPLECNN_NO_MALLOC_TUNING"] = "1"
    cmd = [sys.executable, __file__, "--child", name, "--child-dir", str(tmp), "--model-seconds", str(model_seconds),
           "--threads", str(torch.get_num_threads()), *map(str, files)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _segments(x: np.ndarray) -> list[np.ndarray]:
    return [x[i * SEG:(i + 1) * SEG] for i in range(len(x) // SEG)]


def reference_wavs() -> list[Path]:
    return sorted(REFERENCE.glob("*.wav")) if REFERENCE.is_dir() else []


def model_only(name: str, tagger: Tagger, x: np.ndarray, seconds: float) -> float:
    """Segments/s of the path's model alone, at the path's batch size."""
    batch = np.repeat(x[None, None, :], tagger.batch_size, axis=0)
    if tagger.int8 is not None:
        return tagger.batch_size * throughput(tagger.int8, batch[:, 0, :], seconds)
    with torch.inference_mode():
        return tagger.batch_size * throughput(tagger.model, torch.from_numpy(batch), seconds)


# ----------------------------------------------------------------------------------------------------------------
# memory and start-up (subprocesses)


def peak_rss(ckpt: Path, song: Path) -> dict:
    """Tag `song` in a fresh process; VmHWM before tagging (after loading) and after, and the time it took."""
    code = ("import sys, time, torch; sys.path.insert(0, sys.argv[3]); import samplecnn\n"
            "def hwm():\n"
            "    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024\n"
            "t = samplecnn.load(sys.argv[1]); before = hwm(); s = time.perf_counter()\n"
            "r = t.tag(sys.argv[2]); e = time.perf_counter() - s\n"
            "print(before, hwm(), e, r.duration)")
    out = subprocess.run([sys.executable, "-c", code, str(ckpt), str(song), str(ROOT)], check=True,
                         capture_output=True, text=True).stdout.split()
    before, after, elapsed, duration = map(float, out)
    return {"loaded_mb": before, "peak_mb": after, "x_real_time": duration / elapsed, "hours": duration / 3600}


def startup(ckpt: Path, short: Path, runs: int) -> tuple[float, float]:
    """Median wall time of `python -c "import torch"` and of `samplecnn tag SHORT`, interleaved."""
    cli = [sys.executable, "-m", "samplecnn", "tag", str(short), "--model", str(ckpt)]
    torch_only = [sys.executable, "-c", "import torch"]
    a, b = [], []
    for _ in range(runs):
        a.append(_timed(lambda: subprocess.run(torch_only, check=True, capture_output=True)))
        b.append(_timed(lambda: subprocess.run(cli, check=True, capture_output=True, cwd=ROOT)))
    return statistics.median(a), statistics.median(b)


# ----------------------------------------------------------------------------------------------------------------
# the run


def conv_peak_gflops(dtype: torch.dtype, channels: int = 512, length: int = 8192, repeats: int = 5,
                     planar: bool = False) -> float:
    """A large k=3 Conv1d (oneDNN, the kernels SampleCNN runs on): on AMD CPUs torch's fp32 matmul goes through a
    BLAS that does not use AVX-512, so the matmul alone understates what the convolutions can reach. `planar`: the
    same as a height-1 Conv2d in channels-last memory, the layout that reaches oneDNN's AMX kernels."""
    x = torch.randn(1, channels, length, dtype=dtype)
    w = torch.randn(channels, channels, 3, dtype=dtype)
    if planar:
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        w = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        conv = lambda: torch.conv2d(x, w, padding=(0, 1))  # noqa: E731
    else:
        conv = lambda: torch.conv1d(x, w, padding=1)  # noqa: E731
    with torch.inference_mode():
        conv()
        best = min(_timed(conv) for _ in range(repeats))
    return 2 * channels * channels * 3 * length / best / 1e9


def int8_peak_gops(n: int = 2048, repeats: int = 3) -> float | None:
    """An int8 x int8 -> int32 matmul (torch._int_mm), where this torch has one on the CPU; else None."""
    try:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        torch._int_mm(a, b)
    except (RuntimeError, AttributeError, NotImplementedError):
        return None
    return 2 * n**3 / min(_timed(lambda: torch._int_mm(a, b)) for _ in range(repeats)) / 1e9


def cpu_description() -> str:
    """The CPU model, its low-precision ISA class and the flags that decide the kernels."""
    flags = sorted(f for f in precision._cpu_flags() if f.startswith(("amx", "avx512_bf16", "avx512_vnni",
                                                                    "avx512f", "avx2", "avx_vnni")))
    return f"{precision.cpu_model()} ({precision.device_kind('cpu')}; flags: {' '.join(flags) or 'none found'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the generated song")
    parser.add_argument("--model-seconds", type=float, default=4.0, help="time per model-only measurement")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX Runtime paths")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip ONNX Runtime int8")
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip the 2-hour memory test")
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--bf16-anyway", action="store_true", help="time bf16 even without native bf16")
    parser.add_argument("--child", help=argparse.SUPPRESS)       # internal: measure one path in this process
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        import json

        tmp = Path(args.child_dir)
        result = measure_path(args.child, tmp / "model.safetensors", tmp, [Path(f) for f in args.files],
                              args.model_seconds)
        print(json.dumps(result))
        return
    load_start = load_average()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        song = make_song(tmp / "song.mp3", args.seconds)
        files = [song, *reference_wavs()]
        trained = _bundled_default()
        ckpt = tmp / "model.safetensors"
        if trained:
            shutil.copyfile(trained, ckpt)
        else:
            write_untrained(ckpt)
        names = [n for n in PATHS if "bf16" not in n and "int8" not in n and not n.startswith("ONNX")]
        if precision.fast_bf16("cpu") or args.bf16_anyway:
            names[-2:-2] = [n for n in PATHS if "bf16" in n]
        if args.onnx:
            try:
                from samplecnn.onnx_export import export

                export(ckpt, tmp / "model.onnx")
                names.insert(-2, "ONNX Runtime fp32")
                if args.int8:
                    shipped = int8.int8_path(trained) if trained else None
                    if shipped is not None and shipped.is_file():  # the int8 model the checkpoint's check made
                        shutil.copyfile(shipped, int8.int8_path(ckpt))
                    else:  # none: calibrated on the reference excerpts
                        calib = [s for f in reference_wavs() for s in _segments(audio.decode_mono(f))]
                        calib += _segments(audio.decode_mono(ROOT / "examples" / "loop_amen_full.flac"))
                        int8.quantize(ckpt, calib, int8.int8_path(ckpt))
                    names.insert(-3, "int8 (ONNX Runtime), batch 8")
            except ImportError as e:
                print(f"(ONNX Runtime paths skipped: {e}; pip install 'samplecnn[onnx]')")
        results = {name: run_path(name, ckpt, tmp, files, args.model_seconds) for name in names}
        speed = {n: {f: r["speed"][str(f)] for f in files} for n, r in results.items()}
        scores = {n: {f: np.array(r["scores"][str(f)]) for f in files} for n, r in results.items()}
        rates = {n: r["rate"] for n, r in results.items() if r["rate"]}
        seconds = {f: results[names[0]]["seconds"][str(f)] for f in files}  # decoded once per path already

        devices.tune_malloc()  # for the peaks: no page faults in the large outputs
        auto_precision = results["auto (samplecnn tag)"]["precision"]
        auto_record = precision.passing_record(checkpoint.read_info(ckpt).provenance, auto_precision)
        thresholds = np.asarray(checkpoint.read_info(ckpt).thresholds)
        gflop = models.segment_gflop(checkpoint.read(ckpt)[0].eval())
        mm32, mm16 = matmul_peak_gflops(torch.float32), matmul_peak_gflops(torch.bfloat16)
        cv32, cv16 = conv_peak_gflops(torch.float32), conv_peak_gflops(torch.bfloat16)
        pl32, pl16 = conv_peak_gflops(torch.float32, planar=True), conv_peak_gflops(torch.bfloat16, planar=True)
        peak32, peak16, peak8 = max(mm32, cv32, pl32), max(mm16, cv16, pl16), int8_peak_gops()
        decode = min(_timed(lambda: audio.decode_mono(song)) for _ in range(3))
        decoded = audio.decode_mono(song)
        blocks = [decoded[i:i + 30 * SR] for i in range(0, len(decoded), 30 * SR)]
        segmenting = min(_timed(lambda: sum(1 for _ in segment_batches(blocks, SEG, SEG, 1))) for _ in range(3))
        load_mid = load_average()

        rss = None
        if args.rss:
            rss_short = peak_rss(ckpt, song)
            rss = peak_rss(ckpt, long_mp3())
        short = tmp / "short.mp3"
        make_song(short, 10)
        t_torch, t_cli = startup(ckpt, short, args.startup_runs)
    load_end = load_average()

    # -- report --
    ref_name = "fp32 eager (before)"
    total = sum(seconds.values())
    overall = {n: total / sum(seconds[f] / speed[n][f] for f in files) for n in speed}
    mus = overall["musicnn (PyTorch port)"]
    header = ["path", *(f"{f.stem} x" for f in files), "all x", "/ musicnn", "model seg/s", "GFLOP/s",
              "of peak", "max score diff", "rule holds"]
    rows = []
    for name in speed:
        is_musicnn = name.startswith("musicnn")
        rate = rates.get(name)
        ran = results[name]["precision"]
        peak = {"bf16": peak16, "int8": peak8}.get(ran, peak32)
        checks = [precision.compare(scores[ref_name][f], scores[name][f], thresholds) for f in files]
        rows.append([
            name + (f" = {ran}" if name.startswith("auto") else ""), *(f"{speed[name][f]:.0f}" for f in files),
            f"{overall[name]:.0f}", f"{overall[name] / mus:.2f}",
            f"{rate:.1f}" if rate else "-", f"{rate * gflop:.0f}" if rate else "-",
            f"{rate * gflop / peak:.0%}" if rate and peak else "-",
            "-" if is_musicnn else f"{max(c.score_diff for c in checks):.4f}",
            "-" if is_musicnn else ("yes" if all(c.passes for c in checks) else "NO"),
        ])
    env = (f"CPU: {cpu_description()}; "
           f"torch {torch.__version__}, {args.threads} threads, native bf16: {precision.fast_bf16('cpu')}; "
           f"load average {load_start:.2f} at start, {load_mid:.2f} before the subprocesses, {load_end:.2f} at end "
           f"(this run's own 2 threads count)")
    notes = [
        f"files: {', '.join(f'{f.name} ({seconds[f]:.0f} s)' for f in files)}; x = x real time of tagger.tag(path), "
        "decode included; each path in a fresh process; model seg/s: the model alone at the path's batch size",
        f"model: default-size 3^9 SampleCNN, {gflop:.2f} GFLOP per segment, " + (
            f"the bundled trained default model; auto resolves to {auto_precision} on this {precision.device_kind()}"
            + (f" (its check here: {auto_record['files']} songs, max score diff {auto_record['max_score_diff']}, "
               f"{auto_record['top5_changes']} top-5 changes, all near ties)" if auto_record else
               " (no passing check of a faster precision on this kind of CPU)")
            if trained else "UNTRAINED weights (score differences are numerical drift on random weights, not "
            "accuracy)"),
        f"peak GFLOP/s (best of a 4096^3 matmul, a 512-channel k=3 Conv1d and the same as a planar Conv2d): fp32 "
        f"{peak32:.0f} (matmul {mm32:.0f}, conv {cv32:.0f}, planar {pl32:.0f}), bf16 {peak16:.0f} (matmul "
        f"{mm16:.0f}, conv {cv16:.0f}, planar {pl16:.0f}), int8 "
        + (f"{peak8:.0f} GOP/s (2048^3 torch._int_mm)" if peak8 else "not measured (no CPU torch._int_mm)"),
        f"decode + resample to 22050 Hz mono ({song.name}): {args.seconds / decode:.0f}x real time; cutting the "
        f"decoded blocks into segments (segment_batches, batch 1): {args.seconds / segmenting:.0f}x",
        "malloc: glibc mmap/trim thresholds raised (devices.tune_malloc), so activations are reused instead of "
        "page-faulted in anew every segment; musicnn gets it too",
        "musicnn: our PyTorch port of MTT_musicnn in this run, with the same malloc tuning (the original "
        "TensorFlow package is slower than the port)",
    ]
    if rss:
        notes.append(f"peak RSS tagging {rss['hours']:.1f} h of 64 kbit/s mp3 (default tagger): "
                     f"{rss['peak_mb']:.0f} MB "
                     f"({rss['loaded_mb']:.0f} MB after loading; a {args.seconds / 60:.0f}-min song peaks at "
                     f"{rss_short['peak_mb']:.0f} MB); {rss['x_real_time']:.0f}x real time")
    notes.append(f"start-up: `samplecnn tag` on a 10-s mp3 {t_cli:.2f} s vs `python -c \"import torch\"` "
                 f"{t_torch:.2f} s: {t_cli / t_torch:.2f}x (median of {args.startup_runs})")

    print(env + "\n")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    for n in notes:
        print("- " + n)
    print("\nmarkdown:\n")
    print(f"_{env}_\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for n in notes:
        print("- " + n)


if __name__ == "__main__":
    main()
