"""The `samplecnn` command: tag, models, info, init, import-keras.

User mistakes print one line (`samplecnn: error: PATH: reason`) and exit non-zero, never a traceback. A batch goes
on past bad files, lists them at the end and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .errors import SampleCNNError

EXIT_FAILED = 1   # a command failed, or some files of a batch failed
EXIT_USAGE = 2    # argparse's own code for bad options


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SampleCNNError as e:
        print(f"samplecnn: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("samplecnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `samplecnn tag ... | head`
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samplecnn", description="Music auto-tagging from the raw waveform.")
    parser.add_argument("--version", action="version", version=f"samplecnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tag", help="tag songs (files or folders, walked recursively)")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--model", default="default", help="registered model name or checkpoint path (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=5, help="tags to show per song; 0 = all (default: %(default)s)")
    p.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    p.add_argument("--taggram", metavar="OUT", help="write a taggram PNG (a folder of PNGs when tagging several files)")
    p.add_argument("--hop", type=float, metavar="S", help="seconds between segment starts (default: one segment, "
                                                          "no overlap)")
    p.add_argument("--batch-size", type=int, help="segments per forward pass (default: 1 on CPU, 64 on GPU)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--force", action="store_true", help="replace existing taggram files")
    p.set_defaults(run=_cmd_tag)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("info", help="print a checkpoint's metadata")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("init", help="write an untrained checkpoint of an architecture (a training start, a dry run)")
    p.add_argument("arch", help="seed, samplecnn, se or rese2")
    p.add_argument("out")
    p.add_argument("--multi-level", action="store_true", help="multi-level aggregation (se, rese2)")
    p.add_argument("--tags", help="comma-separated tag vocabulary (default: the MTAT top 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial weights")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_cmd_init)

    p = sub.add_parser("import-keras", help="convert the notebook's Keras SampleCNN (.h5 or .keras) to a checkpoint")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--tags", help="comma-separated tag vocabulary (default: the MTAT top 50 for 50 outputs)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_cmd_import_keras)
    return parser


def _cmd_tag(args: argparse.Namespace) -> int:
    from . import audio, inference

    if args.top_k < 0:
        raise SampleCNNError(f"--top-k must be 0 (all) or positive, got {args.top_k}")
    files, failures = audio.find_audio(args.inputs)
    n_inputs = len(files) + len(failures)
    tagger = inference.load(args.model, device=args.device, batch_size=args.batch_size) if files else None
    taggram_dir = None
    if args.taggram and len(files) > 1:
        taggram_dir = Path(args.taggram)
        taggram_dir.mkdir(parents=True, exist_ok=True)

    writer = _Writer(args.format, args.top_k)
    progress = _progress(files)
    for i, path in enumerate(files):
        try:
            result = tagger.tag(path, hop=args.hop)
            if args.taggram:
                from .plot import save_taggram

                out = taggram_dir / f"{i:04d}_{path.stem}.png" if taggram_dir else Path(args.taggram)
                save_taggram(result, out, overwrite=args.force)
        except SampleCNNError as e:
            if e.path is None:  # an option error (e.g. --hop) fails every file alike: stop now
                raise
            failures.append(e)
            continue
        finally:
            progress.update(1)
        progress.clear()
        writer.write(result)
        progress.refresh()
    progress.close()
    writer.close()

    if failures:
        print(f"samplecnn: {len(failures)} of {n_inputs} input(s) failed:", file=sys.stderr)
        for e in failures:
            print(f"  {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


class _Writer:
    """Streams results to stdout in the chosen format as they arrive."""

    def __init__(self, fmt: str, top_k: int):
        self.fmt, self.top_k = fmt, top_k
        self.results = []  # json needs the whole list
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(["path", "rank", "tag", "score", "decision"])

    def write(self, result) -> None:
        if self.fmt == "table":
            print(f"{result.path}  ({result.duration:.1f} s, {len(result.segment_starts)} segment"
                  f"{'s' if len(result.segment_starts) != 1 else ''}{', padded' if result.padded else ''})")
            decided = set(result.decisions)
            for tag, score in result.top(self.top_k):
                print(f"  {score:6.3f}  {'*' if tag in decided else ' '} {tag}")
            print(f"  decisions: {', '.join(result.decisions) or '(none)'}")
        elif self.fmt == "jsonl":
            print(json.dumps(result.to_dict()))
        elif self.fmt == "json":
            self.results.append(result.to_dict())
        else:
            decided = set(result.decisions)
            for rank, (tag, score) in enumerate(result.top(self.top_k), 1):
                self.csv.writerow([result.path, rank, tag, f"{score:.4f}", int(tag in decided)])
        sys.stdout.flush()

    def close(self) -> None:
        if self.fmt == "json":
            print(json.dumps(self.results, indent=1))


def _progress(files: list):
    from tqdm import tqdm

    return tqdm(total=len(files), unit="file", disable=len(files) <= 3, file=sys.stderr, dynamic_ncols=True)


def _cmd_models(args: argparse.Namespace) -> int:
    from . import pretrained

    installed = pretrained.available()
    if not installed:
        print("No models are installed yet: the trained default model is not bundled in this version.\n"
              "Use `samplecnn tag --model PATH` with a checkpoint (`samplecnn init` writes an untrained one).")
    for name, desc in installed.items():
        print(f"{name:12s} {desc}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoint, models

    info = checkpoint.read_info(args.checkpoint)
    if args.json:
        print(json.dumps(info.to_json(), indent=1))
        return 0
    model, _ = checkpoint.load(args.checkpoint)
    trainable, running = models.count_parameters(model)
    config = ", ".join(f"{k}={v}" for k, v in info.config.items())
    print(f"checkpoint   {args.checkpoint}")
    print(f"architecture {info.arch} ({config})")
    print(f"parameters   {trainable:,} trainable + {running:,} BatchNorm statistics")
    print(f"audio        {info.sample_rate} Hz, segments of {info.segment_samples} samples "
          f"({info.segment_samples / info.sample_rate:.3f} s)")
    print(f"tags ({len(info.tags)})    {', '.join(info.tags)}")
    thr = info.thresholds
    print(f"thresholds   min {min(thr):.3f}, median {sorted(thr)[len(thr) // 2]:.3f}, max {max(thr):.3f}")
    for key, value in info.provenance.items():
        print(f"{key:12s} {value}")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint, models
    from .tags import MTAT_TOP50

    tags = _tag_list(args.tags) or list(MTAT_TOP50)
    if args.arch not in models.ARCHITECTURES:
        raise SampleCNNError(f"unknown architecture {args.arch!r}; choose from {', '.join(models.ARCHITECTURES)}")
    overrides = {"multi_level": True} if args.multi_level else {}
    try:
        config = models.config_for(args.arch, n_tags=len(tags), **overrides)
    except ValueError as e:
        raise SampleCNNError(str(e)) from None
    torch.manual_seed(args.seed)
    model = models.SampleCNN(**config)
    info = checkpoint.ModelInfo(arch=args.arch, config=config, tags=tags, thresholds=[0.5] * len(tags),
                                provenance={"source": "untrained (samplecnn init)", "seed": args.seed})
    checkpoint.save(args.out, model, info, overwrite=args.force)
    print(f"wrote untrained {args.arch} checkpoint to {args.out} ({len(tags)} tags); its tags are meaningless")
    return 0


def _cmd_import_keras(args: argparse.Namespace) -> int:
    from .keras_import import convert

    info = convert(args.model, args.out, tags=_tag_list(args.tags), overwrite=args.force)
    print(f"wrote {info.arch} checkpoint with {len(info.tags)} tags to {args.out}")
    return 0


def _tag_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if not tags or len(set(tags)) != len(tags):
        raise SampleCNNError("--tags must be a comma-separated list of distinct, non-empty tags")
    return tags


def _version() -> str:
    from . import __version__
    return __version__


if __name__ == "__main__":
    sys.exit(main())
