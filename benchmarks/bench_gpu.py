"""GPU throughput of the bundled default model: inference and training, fp32 / TF32 / bf16, and bf16's accuracy.

    python benchmarks/bench_gpu.py [AUDIO ...]      # needs a CUDA GPU; ~3 min on an H100/H200

Prints, for the default SampleCNN (3^9, 50 tags):
- model-only inference segments/s per precision and batch size (CUDA events, after warm-up), the x-real-time they
  mean (one segment = 59049 samples = 2.68 s) and the achieved TFLOP/s (3.46 GFLOP per segment);
- the same with torch.compile for the best precision, when it compiles;
- training steps: segments/s for one SGD step (forward, BCE, backward, Nesterov update) per precision and batch;
- on the AUDIO files (real music): whole-song `Tagger.tag` x real time, decode included (decoding runs on the CPU and
  usually bounds it), and bf16's largest song-level score difference and top-5 agreement against fp32 on the GPU.
Never part of the tests: CI has no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samplecnn import audio, checkpoint, folding, models, pretrained, verification  # noqa: E402
from samplecnn.inference import Tagger  # noqa: E402

SEG_SECONDS = models.SEGMENT_SAMPLES / models.SAMPLE_RATE


def cuda_time(fn, warmup: int = 3, repeats: int = 10) -> float:
    """Seconds per call of fn() on the GPU (CUDA events around `repeats` calls after `warmup`)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeats


def inference_rows(model, gflop: float, batches: list[int]) -> list[dict]:
    rows = []
    for name in ("fp32", "tf32", "bf16"):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        net = folding.inference_copy(model, "bf16" if name == "bf16" else "fp32").cuda().eval()
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        for b in batches:
            x = torch.randn(b, 1, models.SEGMENT_SAMPLES, device="cuda", dtype=dtype)
            with torch.inference_mode():
                t = cuda_time(lambda net=net, x=x: net(x))
            rows.append({"path": name, "batch": b, "seg_s": b / t, "x_rt": b / t * SEG_SECONDS,
                         "tflops": gflop * b / t / 1e3})
        net = None
        torch.cuda.empty_cache()
    torch.backends.cudnn.allow_tf32 = True
    return rows


def compiled_rows(model, gflop: float, batch: int) -> list[dict]:
    net = folding.inference_copy(model, "bf16").cuda().eval()
    x = torch.randn(batch, 1, models.SEGMENT_SAMPLES, device="cuda", dtype=torch.bfloat16)
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(net)
        with torch.inference_mode():
            compiled(x)
        compile_s = time.perf_counter() - t0
        with torch.inference_mode():
            t = cuda_time(lambda: compiled(x))
    except Exception as e:  # report, don't fail the benchmark: compile support varies by install
        print(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return []
    return [{"path": f"bf16 compiled ({compile_s:.0f} s to compile)", "batch": batch, "seg_s": batch / t,
             "x_rt": batch / t * SEG_SECONDS, "tflops": gflop * batch / t / 1e3}]


def training_rows(n_tags: int, gflop: float, batches: list[int]) -> list[dict]:
    rows = []
    for amp in ("fp32", "tf32", "bf16"):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = amp != "fp32"
        net = models.build("samplecnn", n_tags=n_tags).cuda().train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        for b in batches:
            x = torch.randn(b, 1, models.SEGMENT_SAMPLES, device="cuda")
            y = (torch.rand(b, n_tags, device="cuda") > 0.9).float()

            def step(net=net, x=x, y=y, opt=opt, amp=amp):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp == "bf16"):
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t = cuda_time(step, warmup=3, repeats=8)
            # one training step ~ 3x the forward FLOPs (forward, input gradients, weight gradients)
            rows.append({"path": f"train {amp}", "batch": b, "seg_s": b / t, "x_rt": b / t * SEG_SECONDS,
                         "tflops": 3 * gflop * b / t / 1e3})
        net = opt = None
        torch.cuda.empty_cache()
    torch.backends.cudnn.allow_tf32 = True
    return rows


def song_rows(model, info, files: list[str]) -> dict:
    out = {}
    t0 = time.perf_counter()
    decoded = sum(len(audio.decode_mono(f)) for f in files) / models.SAMPLE_RATE
    out["decode_x_rt"] = decoded / (time.perf_counter() - t0)
    for precision in ("fp32", "bf16"):
        tagger = Tagger(model, info, device="cuda", precision=precision)  # Tagger folds a copy: `model` stays
        tagger.tag(files[0])  # warm-up: cuDNN picks its algorithms
        t0 = time.perf_counter()
        for f in files:
            tagger.tag(f)
        out[f"tag_{precision}_x_rt"] = decoded / (time.perf_counter() - t0)
    songs, _ = verification.read_songs(files, seconds=None)
    check = verification.check_precision(model, info, songs, ["bf16"], device="cuda")["bf16"]
    out.update({"audio_seconds": round(decoded, 1), "bf16_max_score_diff": check["max_score_diff"],
                "bf16_top5_violations": check["top5_violations"],
                "bf16_decision_violations": check["decision_violations"], "files": check["files"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", nargs="*", help="real music files for the whole-song and bf16-accuracy rows")
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--train-batches", default="23,64,256")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--songs-only", action="store_true", help="only the whole-song and bf16-accuracy rows")
    p.add_argument("--json", metavar="OUT", help="also write every number here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA GPU here (this benchmark is for a lent GPU machine; CPU: bench_tag.py)")
    torch.backends.cudnn.benchmark = True
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    model, info = checkpoint.read(pretrained.checkpoint_path("default"))
    model.eval()
    gflop = models.segment_gflop(model)
    print(f"default model: {gflop:.2f} GFLOP per {SEG_SECONDS:.2f} s segment")
    print("\n| path | batch | segments/s | x real time | TFLOP/s |\n|---|---:|---:|---:|---:|")
    rows = []

    def emit(new: list[dict]) -> None:  # row by row, so that a run cut short still reports what it measured
        for r in new:
            print(f"| {r['path']} | {r['batch']} | {r['seg_s']:,.0f} | {r['x_rt']:,.0f}x | {r['tflops']:.1f} |")
        rows.extend(new)

    if args.songs_only:
        args.batches = args.train_batches = ""
        args.no_compile = True
    emit(inference_rows(model, gflop, [int(b) for b in args.batches.split(",") if b]))
    torch.backends.cudnn.benchmark = False  # as `samplecnn tag` runs: autotuning each file's tail batch costs more
    songs = song_rows(model, info, args.audio) if args.audio else {}
    torch.backends.cudnn.benchmark = True
    if songs:
        print("whole songs:", json.dumps(songs))
    emit(training_rows(len(info.tags), gflop, [int(b) for b in args.train_batches.split(",") if b]))
    if not args.no_compile:
        best = max((r for r in rows if r["path"] == "bf16"), key=lambda r: r["seg_s"])
        emit(compiled_rows(model, gflop, best["batch"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": props.name, "torch": torch.__version__, "rows": rows,
                                               "songs": songs}, indent=1))


if __name__ == "__main__":
    main()
