"""The `samplecnn` command: each subcommand is an `*_arguments(p)` function (its options) beside its `_cmd_*`
handler, registered in `_parser`; the library's commands live in samplecnn/library/cli.py. Handlers import what they
need lazily, so that `samplecnn --help` starts fast.

Shared options, the failure report and the exit-status rule are in samplecnn.commandline: user mistakes print one
line (`samplecnn: error: PATH: reason`) and exit 1, never a traceback; a batch command goes on past bad inputs,
lists them at the end and exits 1 if any failed; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from . import commandline as cl
from .commandline import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .errors import SampleCNNError


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
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `samplecnn tag ... | head`
        return EXIT_OK


def _commands() -> dict:
    """name -> (help, add_arguments, handler), in the order `samplecnn --help` lists them."""
    from .library.cli import COMMANDS as LIBRARY

    return {
        "tag": ("tag songs (files or folders, walked recursively)", _tag_arguments, _cmd_tag),
        "learn": ("learn your own tags from example files into a tag pack (seconds; `tag --tags PACK` uses it)",
                  _learn_arguments, _cmd_learn),
        "models": ("list the registered models", _no_arguments, _cmd_models),
        "info": ("print a checkpoint's metadata", _info_arguments, _cmd_info),
        "check-precision": ("check bf16/int8 against fp32 on real music and record the outcome for this kind of "
                            "device (what --precision auto follows)", _check_precision_arguments,
                            _cmd_check_precision),
        "init": ("write an untrained checkpoint of an architecture (a training start, a dry run)",
                 _init_arguments, _cmd_init),
        "import-keras": ("convert the notebook's Keras SampleCNN (.h5 or .keras) to a checkpoint",
                         _import_keras_arguments, _cmd_import_keras),
        "train": ("train a model on a prepared dataset (torchrun for several GPUs/processes)",
                  _train_arguments, _cmd_train),
        "evaluate": ("song-level ROC-AUC / PR-AUC of a checkpoint on a dataset split",
                     _evaluate_arguments, _cmd_evaluate),
        "prepare": ("decode a dataset once into a training cache (resumable: rerun to go on)",
                    _prepare_arguments, _cmd_prepare),
        **LIBRARY,
        "serve": ("run the HTTP tagging service and its web page (loopback only by default)",
                  _serve_arguments, _cmd_serve),
        "export-onnx": ("export a checkpoint to ONNX (BatchNorm folded, dynamic batch, tags in the metadata); "
                        "needs the `onnx` extra", _export_onnx_arguments, _cmd_export_onnx),
        "corpus": ("build a corpus of redistributable training music (resumable: rerun to go on)",
                   _corpus_arguments, None),
        "teach": ("label a prepared cache's segments with the musicnn teacher (resumable: rerun to go on)",
                  _teach_arguments, _cmd_teach),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samplecnn", description="Music auto-tagging from the raw waveform.")
    parser.add_argument("--version", action="version", version=f"samplecnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in _commands().items():
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        if run is not None:  # commands with sub-subcommands (prepare mtat|folder, corpus debian) set their own
            p.set_defaults(run=run)
    return parser


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


def _train_arguments(p: argparse.ArgumentParser) -> None:
    """`train`'s options (its handler, _cmd_train, is further down, after import-keras)."""
    p.add_argument("--data", required=True, metavar="CACHE", help="a dataset made by `samplecnn prepare`")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="checkpoints, metrics.jsonl, curves.png, model")
    p.add_argument("--arch", default="samplecnn", help="seed, samplecnn, se or rese2 (default: %(default)s)")
    p.add_argument("--multi-level", action="store_true", help="multi-level aggregation (se, rese2)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default: 1, the papers')")
    p.add_argument("--recipe", choices=("paper", "adam", "cosine"), default="paper",
                   help="paper: Lee et al. 2017 SGD + early-stopping stages; adam: Won et al. 2020; cosine: AdamW, "
                        "warm-up, cosine decay over the planned epochs, weight averaging (default: paper)")
    p.add_argument("--epochs", type=int, help="cap on epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="per process (default: 23 paper, 16 adam)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default="auto",
                   help="mixed precision; auto: bf16 (fp16 if unsupported) on a GPU, none (fp32) on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    p.add_argument("--epoch-repeats", type=int, default=1, metavar="K",
                   help="visit every training clip K times per epoch, each with its own crop (long tracks)")
    p.add_argument("--valid-segments", type=int, metavar="N",
                   help="validate on at most N segments per clip during training (faster; the export uses all)")
    p.add_argument("--valid-data", metavar="CACHE", help="validate on this cache's valid split (default: --data's)")
    p.add_argument("--teacher", choices=("none", "musicnn", "vgg", "both", "labels"), default="none",
                   help="label augmented views with this musicnn teacher inside each step (consistent teaching); "
                        "labels: plain views labelled ahead by `samplecnn teach` (the student's cost alone); "
                        "none: learn the cache's labels (default: %(default)s)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="with --teacher: plain crops instead of augmented views (speed, mixing, filters, gain)")
    p.add_argument("--voices", metavar="CACHE",
                   help="with --teacher: mix voices from this cache (prepared from `samplecnn corpus voices`) over "
                        "30%% of the views, 6 dB below to 12 dB above the music")
    p.add_argument("--extra-data", metavar="CACHE", action="append", default=[],
                   help="with --teacher labels: also crops from this taught cache's train split (e.g. solo renders), "
                        "in --extra-share of each batch's rows; repeat for several caches")
    p.add_argument("--extra-share", type=float, action="append", default=[], metavar="P",
                   help="share of the rows from each --extra-data, in the same order (default: 0.25 for one)")
    p.add_argument("--loss", choices=("bce", "logit-mse"), default="bce",
                   help="bce on the targets' probabilities, or MSE between logits (default: %(default)s)")
    p.add_argument("--epoch-steps", type=int, default=1000, metavar="N",
                   help="with --teacher: steps per epoch, i.e. between validations (default: %(default)s)")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="validate and export a moving average of the weights (default: 0.999 for cosine, else off)")
    p.add_argument("--init", metavar="CKPT|NAME",
                   help="start from this checkpoint's weights (or a registered model, e.g. default), fresh optimizer")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="the first stage's learning rate, the later stages scaled alike (default: the recipe's; "
                        "e.g. 0.002 to fine-tune from --init)")
    p.add_argument("--dropout", type=float, metavar="P",
                   help="dropout before the head while training (default: the architecture's, 0.5 for samplecnn); "
                        "a distilled student fits its teacher's soft labels and may want less")
    p.add_argument("--freeze", type=int, default=0, metavar="N",
                   help="with --init: keep the first N of the ten convolution blocks (the stem, then the nine "
                        "sample-level blocks) as loaded, BatchNorm statistics included (default: 0)")
    p.add_argument("--augment-crops", action="store_true",
                   help="without --teacher: augment each label crop (speed, filter, gain), e.g. for fine-tuning "
                        "on a small collection")
    p.add_argument("--layout", choices=("auto", "conv1d", "planar"), default="auto",
                   help="planar: height-1 Conv2d in channels-last memory (oneDNN's fast bf16/AMX kernels); "
                        "auto: planar for bf16 on a CPU (default)")
    p.add_argument("--stop-after-steps", type=int, metavar="N", help="stop cleanly after N steps (resume later)")
    p.add_argument("--budget-minutes", type=float, metavar="M",
                   help="end training (validate the epoch so far, export) after M minutes of step compute over "
                        "all resumes; pauses and validation do not count (equal-compute comparisons)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--export-best", action="store_true",
                   help="only write RUN_DIR/model.safetensors from the best weights so far (calibrated thresholds), "
                        "e.g. while the run goes on; the other options must be the run's")
    p.add_argument("--device", help="torch device (default: the local GPU if any, else cpu)")


def _teach_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="CACHE", help="a cache made by `samplecnn prepare` (its tags: MTAT tags)")
    p.add_argument("--teacher", choices=("musicnn", "vgg", "both"), default="both",
                   help="MTT_musicnn, MTT_vgg or the mean of both (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="teacher processes, one torch thread each; 1 = in this process (default: %(default)s)")
    p.add_argument("--labels-per-segment", type=int, choices=(1, 3, 9), default=1, metavar="N",
                   help="label a segment-long window every 1/N segment: 1 = the non-overlapping segments; 3 or 9 "
                        "give `train --teacher labels` more distinct views, N times the labelling (default: 1)")
    p.add_argument("--audio", metavar="DIR", help="folder the cache's paths are relative to (default: the one "
                                                 "prepare recorded)")
    cl.add_force(p, "the cache's teacher labels (or, with --make-table, OUT_CSV)")
    p.add_argument("--make-table", nargs="+", metavar="MANIFEST... OUT_CSV",
                   help="instead: write a label table for `prepare folder` from one or more corpus manifests (path, "
                        "split and the 50 MTAT tags as zero columns); paths are made relative to the first "
                        "manifest's folder, the --audio folder for `prepare folder`")


def _cmd_teach(args: argparse.Namespace) -> int:
    from . import teach

    if (args.data is None) == (args.make_table is None):
        raise SampleCNNError("give either --data CACHE or --make-table MANIFEST... OUT_CSV")
    if args.make_table:
        if len(args.make_table) < 2:
            raise SampleCNNError("--make-table needs at least one MANIFEST and the OUT_CSV to write")
        *manifests, table = args.make_table
        n = teach.make_table(manifests, table, force=args.force)
        print(f"wrote {table}: {n} rows (path, split, 50 MTAT tags at 0.0; paths relative to "
              f"{Path(manifests[0]).parent})")
        return EXIT_OK
    done = teach.teach(args.data, teacher=args.teacher, workers=args.workers, force=args.force,
                       audio_root=args.audio, labels_per_segment=args.labels_per_segment)
    meta = done.cache.teacher_meta
    minutes, seconds = divmod(done.seconds, 60)
    print(f"wrote {Path(args.data) / 'teacher'}: {meta['segments']:,} segments of {meta['clips']:,} clips "
          f"({' + '.join(meta['teachers'])}; {done.computed:,} clips labelled in {int(minutes)} min {seconds:.0f} s); "
          f"labels.npy = clip means (original kept in labels_original.npy)")
    stats = teach.tag_statistics(done.rows, done.cache.tags)
    print("highest mean teacher scores: " + ", ".join(f"{s['tag']} {s['mean']:.3f}" for s in stats[:10]))
    return cl.report_failures(done.failures, meta["clips"],
                              "unreadable: no segment labels, their original clip labels are kept")


def _export_onnx_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="registered model name or checkpoint path")
    p.add_argument("out", metavar="OUT.onnx")
    cl.add_force(p)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    import importlib.util

    from . import pretrained

    if importlib.util.find_spec("onnx") is None:
        raise SampleCNNError("export-onnx needs the onnx package: pip install 'samplecnn[onnx]'")
    from .onnx_export import export

    out = export(pretrained.checkpoint_path(args.checkpoint), args.out, overwrite=args.force)
    print(f"wrote {out} (input 'audio' (batch, 1, samples); outputs 'probabilities', 'embedding')")
    return EXIT_OK


def _corpus_arguments(p: argparse.ArgumentParser) -> None:
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="SOURCE")
    q = corpora.add_parser("debian", help="game soundtracks from 15 Debian packages (apt-get download + dpkg-deb -x, "
                                          "no root); see docs/corpus.md")
    _package_corpus_arguments(q, min_seconds=30.0, what="music")
    q = corpora.add_parser("voices", help="human speech and choir clips from 13 Debian packages, 22050 Hz FLAC, for "
                                          "mixing over music; see docs/corpus.md")
    _package_corpus_arguments(q, min_seconds=0.5, what="clips")
    q = corpora.add_parser("midi", help="render music21's corpus and planetblupi-music-midi with FluidSynth "
                                        "(training soundfonts only), or the instrument evaluation set; see "
                                        "docs/corpus.md")
    q.add_argument("--out", required=True, metavar="DIR", help="corpus folder: audio/, manifest.csv, excluded.csv "
                                                              "(or, with --eval-instruments, audio/ and labels.csv)")
    q.add_argument("--hours", type=float, default=10.0, help="hours of audio to render (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="fixes every draw: order, instruments, drums (default: 0)")
    q.add_argument("--terms", choices=("free", "noncommercial", "all"), default="free",
                   help="music21 works allowed: free = a free licence or no terms stated (default); noncommercial "
                        "adds the Essen folk songs; all adds the works whose rights are reserved (Palestrina...)")
    q.add_argument("--sources", default="planetblupi,music21", metavar="A,B",
                   help="what to render (default: %(default)s)")
    q.add_argument("--max-seconds", type=float, default=180.0,
                   help="cap on each render's length (default: %(default)s)")
    q.add_argument("--min-seconds", type=float, default=10.0,
                   help="leave out renders shorter than this (default: %(default)s)")
    q.add_argument("--debs", metavar="DIR", help="take planetblupi-music-midi's .deb from DIR instead of downloading")
    q.add_argument("--redo", action="store_true", help="render again what an earlier run already rendered")
    q.add_argument("--force", dest="redo", action="store_true", help=argparse.SUPPRESS)  # as in corpus debian
    q.add_argument("--solo", action="store_true",
                   help="every render is one part alone: the drum kit (35 %%) or one instrument; give it its own --out")
    q.add_argument("--eval-instruments", action="store_true",
                   help="instead: the instrument evaluation set through csound-soundfont (never for training)")
    q.add_argument("--clips", type=int, default=9, help="with --eval-instruments: clips per instrument "
                                                       "(default: %(default)s, 17 instruments)")
    q.set_defaults(run=_cmd_corpus_midi)


def _package_corpus_arguments(q: argparse.ArgumentParser, min_seconds: float, what: str) -> None:
    """The options of the corpora built from Debian packages (debian, voices)."""
    q.add_argument("--out", required=True, metavar="DIR", help="corpus folder: audio/, manifest.csv, excluded.csv")
    q.add_argument("--debs", metavar="DIR", help="use the .deb files in DIR instead of downloading")
    q.add_argument("--packages", metavar="A,B,...", help="a subset of the recipe's packages (default: all of them)")
    q.add_argument("--min-seconds", type=float, default=min_seconds,
                   help=f"leave out {what} shorter than this (default: %(default)s)")
    # not --force (which overwrites outputs): an extracted package is reused, never refused, unless redone
    q.add_argument("--redo", action="store_true", help="redo packages that an earlier run already extracted")
    q.add_argument("--force", dest="redo", action="store_true", help=argparse.SUPPRESS)  # its old name
    q.set_defaults(run=_cmd_corpus)


def _cmd_corpus(args: argparse.Namespace) -> int:
    import time

    if args.corpus == "voices":
        from .corpus.voices import build
    else:
        from .corpus import build

    start = time.monotonic()
    packages = [n.strip() for n in args.packages.split(",") if n.strip()] if args.packages else None
    summary = build(args.out, packages=packages, debs=args.debs, min_seconds=args.min_seconds, force=args.redo,
                    progress=sys.stderr.isatty())
    print()
    for line in (summary.lines() if args.corpus == "voices" else summary.lines(args.min_seconds)):
        print(line)
    minutes, seconds = divmod(time.monotonic() - start, 60)
    reused = f"; {len(summary.skipped)} package(s) reused from an earlier run" if summary.skipped else ""
    print(f"wrote {Path(args.out) / 'manifest.csv'} in {int(minutes)} min {seconds:.0f} s{reused}")
    return EXIT_OK


def _cmd_corpus_midi(args: argparse.Namespace) -> int:
    import importlib.util
    import time

    missing = [m for m in ("music21", "pretty_midi", "fluidsynth", "soundfile") if importlib.util.find_spec(m) is None]
    if missing:
        raise SampleCNNError(f"corpus midi needs {', '.join(missing)}: pip install 'samplecnn[corpus]'")
    if args.eval_instruments:
        from .corpus.eval_instruments import build_eval

        build_eval(args.out, clips_per_instrument=args.clips, seed=args.seed, force=args.redo,
                   progress=sys.stderr.isatty())
        return EXIT_OK
    from .corpus.midi import build

    start = time.monotonic()
    sources = [n.strip() for n in args.sources.split(",") if n.strip()]
    summary = build(args.out, hours=args.hours, seed=args.seed, terms=args.terms, sources=sources,
                    max_seconds=args.max_seconds, min_seconds=args.min_seconds, debs=args.debs, force=args.redo,
                    progress=sys.stderr.isatty(), solo=args.solo)
    print()
    for line in summary.lines():
        print(line)
    minutes, seconds = divmod(time.monotonic() - start, 60)
    print(f"wrote {Path(args.out) / 'manifest.csv'} in {int(minutes)} min {seconds:.0f} s")
    if summary.failures:
        print(f"samplecnn: {len(summary.failures)} source(s) could not be rendered:", file=sys.stderr)
        for what, reason in summary.failures:
            print(f"  {what}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

def _tag_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    cl.add_model(p)
    p.add_argument("--top-k", type=int, default=5, help="tags to show per song; 0 = all (default: %(default)s)")
    p.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    p.add_argument("--taggram", metavar="OUT", help="write a taggram PNG (a folder of PNGs when tagging several files)")
    p.add_argument("--hop", type=float, metavar="S", help="seconds between segment starts (default: one segment, "
                                                          "no overlap)")
    cl.add_batch_size(p)
    cl.add_device(p)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                   help="auto: bf16 or int8 only where the checkpoint records that it passed the check on real "
                        "music on this kind of device (`samplecnn info` lists them) and ran faster, else fp32; "
                        "int8 needs the `onnx` extra (default: %(default)s)")
    p.add_argument("--tags", nargs="+", action="extend", default=[], metavar="PACK",
                   help="also score your own tags from these tag packs (`samplecnn learn`); put the files first")
    cl.add_force(p, "taggram files")


def _cmd_tag(args: argparse.Namespace) -> int:
    from . import audio, inference

    if args.top_k < 0:
        raise SampleCNNError(f"--top-k must be 0 (all) or positive, got {args.top_k}")
    tag_packs = _read_packs(args.tags, args.model, "--tags takes tag packs: put the audio files before --tags")
    files, failures = audio.find_audio(args.inputs)
    n_inputs = len(files) + len(failures)
    tagger = inference.load(args.model, device=args.device, batch_size=args.batch_size,
                            precision=args.precision) if files else None
    if tagger is not None and tag_packs:
        from .packs import check_tag_names

        check_tag_names(tagger.tags, tag_packs)
    taggram_dir = None
    if args.taggram and len(files) > 1:
        taggram_dir = Path(args.taggram)
        taggram_dir.mkdir(parents=True, exist_ok=True)

    writer = _Writer(args.format, args.top_k, tag_packs)
    failed = [(e.path, e.reason) for e in failures]
    if len(files) > 1:
        _tag_many(tagger, files, args, tag_packs, taggram_dir, writer, failed)
    elif files:
        path = files[0]
        try:
            result = tagger.tag(path, hop=args.hop)
            _write_result(tagger, result, 0, args, tag_packs, None, writer)
        except SampleCNNError as e:
            if e.path is None:  # an option error (e.g. --hop)
                raise
            failed.append((e.path, e.reason))
    writer.close()
    return cl.report_failures(failed, n_inputs)


def _write_result(tagger, result, index: int, args, tag_packs, taggram_dir, writer) -> None:
    """One song's output: its tag packs' scores, its taggram PNG, then its line(s) in the output. The packs score
    the song embedding at the default hop (the segments their training embeddings were made of): the result's own,
    or with --hop a second pass over the file."""
    embedding = result.embedding if args.hop is None else None
    if tag_packs and embedding is None:
        embedding = tagger.embed(result.path)
    own = [(p, p.scores(embedding)) for p in tag_packs]
    if args.taggram:
        from .plot import save_taggram

        out = taggram_dir / f"{index:04d}_{Path(result.path).stem}.png" if taggram_dir else Path(args.taggram)
        save_taggram(result, out, overwrite=args.force)
    writer.write(result, own)


def _tag_many(tagger, files: list[Path], args, tag_packs, taggram_dir, writer, failed: list) -> None:
    """Several files through the index's pipeline: decoder processes beside the model, one model load, segments of
    any files in each batch. Results arrive as files finish and are written in the order given."""
    from .library.index import tag_files

    order = {os.fspath(p): i for i, p in enumerate(files)}
    ready: dict[int, tuple] = {}
    written = 0

    def flush() -> None:
        nonlocal written
        while written in ready:
            path, result = ready.pop(written)
            if result is not None:
                try:
                    _write_result(tagger, result, written, args, tag_packs, taggram_dir, writer)
                except SampleCNNError as e:
                    failed.append((e.path or path, e.reason))
            written += 1

    def on_result(path: str, result, _embedding) -> None:  # the result carries its song embedding
        ready[order[path]] = (path, result)
        flush()

    def on_failure(path: str, reason: str) -> None:
        failed.append((path, reason))
        ready[order[path]] = (path, None)
        flush()

    tag_files(tagger, files, on_result, on_failure, hop=args.hop, progress=sys.stderr.isatty())


class _Writer:
    """Streams results to stdout in the chosen format as they arrive; the tag packs' tags beside the model's."""

    def __init__(self, fmt: str, top_k: int, tag_packs: list | None = None):
        self.fmt, self.top_k = fmt, top_k
        self.packs = tag_packs or []
        self.results = []  # json needs the whole list
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(["path", "rank", "tag", "score", "decision"] + (["source"] if self.packs else []))

    def write(self, result, own: list | None = None) -> None:
        """`own`: (pack, scores) per tag pack, each scores row over the pack's tags."""
        import numpy as np

        own = own or []
        if self.fmt == "table":
            print(f"{result.path}  ({result.duration:.1f} s, {len(result.segment_starts)} segment"
                  f"{'s' if len(result.segment_starts) != 1 else ''}{', padded' if result.padded else ''})")
            decided = set(result.decisions)
            for tag, score in result.top(self.top_k):
                print(f"  {score:6.3f}  {'*' if tag in decided else ' '} {tag}")
            print(f"  decisions: {', '.join(result.decisions) or '(none)'}")
            for pack, scores in own:
                mine = pack.decided(scores)
                print(f"  own tags ({pack.name}):")
                for j in np.argsort(-scores, kind="stable"):
                    print(f"  {scores[j]:6.3f}  {'*' if pack.tags[j] in mine else ' '} {pack.tags[j]}")
                print(f"  own decisions ({pack.name}): {', '.join(mine) or '(none)'}")
        elif self.fmt in ("json", "jsonl"):
            doc = result.to_dict()
            if self.packs:
                from .packs import own_json

                doc.update(own_json(own))
            if self.fmt == "jsonl":
                print(json.dumps(doc))
            else:
                self.results.append(doc)
        else:
            decided = set(result.decisions)
            extra = [result.model] if self.packs else []
            for rank, (tag, score) in enumerate(result.top(self.top_k), 1):
                self.csv.writerow([result.path, rank, tag, f"{score:.4f}", int(tag in decided)] + extra)
            for pack, scores in own:
                mine = set(pack.decided(scores))
                for rank, j in enumerate(np.argsort(-scores, kind="stable"), 1):
                    self.csv.writerow([result.path, rank, pack.tags[j], f"{scores[j]:.4f}",
                                       int(pack.tags[j] in mine), pack.path])
        sys.stdout.flush()

    def close(self) -> None:
        if self.fmt == "json":
            print(json.dumps(self.results, indent=1))


def _read_packs(paths: list[str], model: str, hint: str = "") -> list:
    """The tag packs of `--tags`, each checked against `model` before any audio is decoded."""
    if not paths:
        return []
    from .packs import model_id_of, read_packs

    return read_packs(paths, model_id_of(model), hint)


def _learn_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tag", nargs="*", metavar="TAG",
                   help="the tag to learn from --positive; with --table: only these of its tags (default: all)")
    p.add_argument("--positive", nargs="+", action="extend", default=[], metavar="FILE_OR_DIR",
                   help="example files (or folders of them) that have TAG")
    p.add_argument("--negative", nargs="+", action="extend", default=[], metavar="FILE_OR_DIR",
                   help="examples that have none of the tags (default: the other tags' positives; with --db and "
                        "no other negatives, random library tracks not listed as positive)")
    p.add_argument("--table", metavar="CSV", help="path,tag rows, for several tags at once (paths relative to the "
                                                  "table; a folder stands for its audio files)")
    p.add_argument("--out", required=True, metavar="PACK", help="the tag pack to write (JSON)")
    cl.add_model(p, also=" whose song embeddings to learn on")
    p.add_argument("--db", metavar="LIBRARY.sqlite",
                   help="reuse the embeddings of files indexed there (same model, unchanged files)")
    p.add_argument("--library-negatives", type=int, metavar="N",
                   help=f"random library tracks drawn as negatives (default: max({20}, 2 x the positives))")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the draw (default: %(default)s)")
    cl.add_batch_size(p)
    cl.add_device(p)
    cl.add_force(p, "PACK")


def _cmd_learn(args: argparse.Namespace) -> int:
    from . import learn

    if args.table:
        if args.positive:
            raise SampleCNNError("give either TAG --positive FILES or --table CSV, not both")
        by_tag, only = learn.select_tags(learn.read_table(args.table), args.tag, args.table)
    else:
        if len(args.tag) != 1 or not args.positive:
            raise SampleCNNError("give one TAG and its --positive FILE_OR_DIR... (or --table CSV of path,tag rows)")
        by_tag, only = {args.tag[0]: args.positive}, None
    if args.library_negatives is not None and (args.library_negatives < 2 or not args.db):
        raise SampleCNNError("--library-negatives needs --db and at least 2")
    report = learn.learn(by_tag, args.negative, args.out, model=args.model, db=args.db,
                         library_negatives=args.library_negatives, seed=args.seed, force=args.force,
                         device=args.device, batch_size=args.batch_size, only=only, progress=sys.stderr.isatty())
    reused = f"{report.from_library} embedding(s) from {args.db}, " if args.db else ""
    print(f"wrote {report.out}: {len(report.tags)} tag(s) for model {report.pack.model_id} ({reused}"
          f"{report.decoded} file(s) decoded; {report.seconds:.1f} s)")
    return cl.report_failures(report.failures, report.inputs, "left out of the examples")


def _cmd_models(args: argparse.Namespace) -> int:
    from . import pretrained

    installed = pretrained.available()
    if not installed:
        print("No bundled model is installed (was samplecnn installed without its assets?).\n"
              "Use `samplecnn tag --model PATH` with a checkpoint.")
    for name, desc in installed.items():
        print(f"{name:12s} {desc}")
    return EXIT_OK


def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="registered model name (e.g. default) or checkpoint path")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")


def _cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoint, models, precision, pretrained

    path = pretrained.checkpoint_path(args.checkpoint)
    if args.json:  # the header alone: no weights read
        print(json.dumps(checkpoint.read_info(path).to_json(), indent=1))
        return EXIT_OK
    model, info = checkpoint.read(path)
    trainable, running = models.count_parameters(model)
    config = ", ".join(f"{k}={v}" for k, v in info.config.items())
    print(f"checkpoint   {path}")
    print(f"architecture {info.arch} ({config})")
    print(f"parameters   {trainable:,} trainable + {running:,} BatchNorm statistics")
    print(f"audio        {info.sample_rate} Hz, segments of {info.segment_samples} samples "
          f"({info.segment_samples / info.sample_rate:.3f} s)")
    print(f"tags ({len(info.tags)})    {', '.join(info.tags)}")
    thr = info.thresholds
    print(f"thresholds   min {min(thr):.3f}, median {sorted(thr)[len(thr) // 2]:.3f}, max {max(thr):.3f}")
    for key, value in info.provenance.items():
        if key != precision.CHECKS_KEY:
            print(f"{key:12s} {value}")
    lines = precision.describe(info.provenance)
    print(f"precision    auto runs {precision.resolve_precision('auto', info.provenance)} here "
          f"({precision.device_kind()}, {precision.cpu_model()}); checks (rule: {precision.RULE}):")
    for line in lines or ["none recorded (`samplecnn check-precision` makes them)"]:
        print(f"  {line}")
    return EXIT_OK


def _check_precision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="registered model name (e.g. default) or checkpoint path")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="real music, at least 60 songs")
    p.add_argument("--out", required=True, help="the checkpoint with the records (its weights unchanged); the "
                                                 "int8 model goes beside it (NAME.int8.onnx)")
    p.add_argument("--precision", nargs="+", choices=("bf16", "int8"), default=["bf16", "int8"], dest="candidates",
                   help="the precisions to check (default: both)")
    p.add_argument("--calibrate", nargs="+", default=[], metavar="FILE_OR_DIR",
                   help="real music to calibrate int8's activation ranges on (not the check's songs); int8 is "
                        "skipped without it")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                   help="fine-tune the int8 model's weights for N steps on the calibration music first "
                        "(quantisation-aware, towards the fp32 model's own scores; ~1.3 s a step on 2 cores)")
    p.add_argument("--excerpt", type=float, default=30.0, metavar="S",
                   help="seconds from the middle of each file; 0 = whole files (default: %(default)s)")
    cl.add_device(p)
    cl.add_force(p)


def _cmd_check_precision(args: argparse.Namespace) -> int:
    from . import audio, checkpoint, devices, int8, precision, pretrained, verification

    src = pretrained.checkpoint_path(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not args.force:  # before minutes of work, not after
        raise SampleCNNError("already exists (pass --force to replace it)", out)
    seconds = args.excerpt or None
    files, failures = audio.find_audio(args.inputs)
    songs, bad = verification.read_songs(files, seconds)
    failures = [(e.path, e.reason) for e in failures] + bad
    if not songs:
        raise SampleCNNError("no readable audio among the inputs")
    model, info = checkpoint.read(src)
    candidates = list(dict.fromkeys(args.candidates))
    int8_file = None
    if "int8" in candidates:
        if not args.calibrate:
            print("samplecnn: int8 skipped: it needs --calibrate FILE_OR_DIR (real music)", file=sys.stderr)
            candidates.remove("int8")
        else:
            calib_files, calib_failures = audio.find_audio(args.calibrate)
            calib, calib_bad = verification.read_songs(calib_files, seconds)
            failures += [(e.path, e.reason) for e in calib_failures] + calib_bad
            int8_file = int8.quantize(src, [s for _, s in calib], int8.int8_path(out), overwrite=args.force,
                                      finetune_steps=args.finetune_steps)
    device = devices.torch_device(args.device)
    records = verification.check_precision(model, info, songs, candidates, device=device, int8_model=int8_file)
    kind = precision.device_kind(device)
    for name, record in records.items():
        precision.record_check(info, kind, name, record)
    checkpoint.save(out, model, info, half=checkpoint.stored_half(src), overwrite=args.force)
    print(f"checked {', '.join(records)} on {len(songs)} songs ({kind}); wrote {out}"
          + (f" and {int8_file}" if int8_file else ""))
    for line in precision.describe(info.provenance, device):
        print(f"  {line}")
    if len(songs) < precision.MIN_FILES:
        print(f"samplecnn: only {len(songs)} songs: a check passes on {precision.MIN_FILES} or more",
              file=sys.stderr)
    return cl.report_failures(failures, len(files) + len(failures), "skipped") if failures else EXIT_OK


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="seed, samplecnn, se or rese2")
    p.add_argument("out")
    p.add_argument("--multi-level", action="store_true", help="multi-level aggregation (se, rese2)")
    p.add_argument("--tags", help="comma-separated tag vocabulary (default: the MTAT top 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial weights")
    cl.add_force(p)


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
    return EXIT_OK


def _import_keras_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--tags", help="comma-separated tag vocabulary (default: the MTAT top 50 for 50 outputs)")
    cl.add_force(p)


def _cmd_import_keras(args: argparse.Namespace) -> int:
    from .keras_import import convert

    info = convert(args.model, args.out, tags=_tag_list(args.tags), overwrite=args.force)
    print(f"wrote {info.arch} checkpoint with {len(info.tags)} tags to {args.out}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    path = train(TrainConfig(data=args.data, out=args.out, arch=args.arch, recipe=args.recipe, epochs=args.epochs,
                             batch_size=args.batch_size, amp=args.amp, seed=args.seed,
                             checkpoint_every=args.checkpoint_every, stop_after_steps=args.stop_after_steps,
                             budget_minutes=args.budget_minutes,
                             resume=args.resume, device=args.device, width=args.width,
                             multi_level=args.multi_level, epoch_repeats=args.epoch_repeats,
                             valid_segments=args.valid_segments, teacher=args.teacher, augment=args.augment,
                             loss=args.loss, voices=args.voices, extra_data=tuple(args.extra_data),
                             extra_share=tuple(args.extra_share), epoch_steps=args.epoch_steps, ema=args.ema,
                             init=args.init, lr=args.lr, freeze=args.freeze, augment_crops=args.augment_crops,
                             layout=args.layout, export_best=args.export_best, valid_data=args.valid_data,
                             dropout=args.dropout))
    if path is not None:
        print(f"trained model: {path}")
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="CHECKPOINT")
    p.add_argument("--data", required=True, metavar="CACHE")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--out", metavar="DIR", help="write summary.json, per_tag.csv and per_tag.png here")
    cl.add_batch_size(p)
    cl.add_device(p)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(args.model, args.data, split=args.split, out=args.out, batch_size=args.batch_size,
                      device=args.device)
    print(f"{result['split']}: {result['clips']} clips, {result['tags_scored']} tags scored")
    print(f"macro ROC-AUC {result['roc_auc']:.4f}")
    print(f"macro PR-AUC  {result['pr_auc']:.4f}")
    if "spearman" in result:
        print(f"mean per-song Spearman correlation with the soft labels {result['spearman']:.4f}")
    if args.out:
        print(f"per-tag table and plot in {args.out}")
    return EXIT_OK


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    datasets = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = datasets.add_parser("mtat", help="MagnaTagATune as distributed (annotations_final.csv, mp3 folders 0-f)")
    q.add_argument("--root", required=True, help="folder holding annotations_final.csv and the folders 0-9, a-f")
    q.add_argument("--split", choices=("lee2017", "full"), default="lee2017",
                   help="lee2017: only clips with a top-50 tag; full: every readable clip (default: %(default)s)")
    q.add_argument("--top", type=int, default=50, help="vocabulary size (default: %(default)s)")
    r = datasets.add_parser("folder", help="any audio folder plus a CSV/TSV label table")
    r.add_argument("--audio", required=True, help="folder the table's paths are relative to")
    r.add_argument("--labels", required=True, help="CSV or TSV: a path column and tag-list, 0/1 or [0, 1] columns")
    vocab_opts = r.add_mutually_exclusive_group()
    vocab_opts.add_argument("--top", type=int, help="keep the N most frequent tags (default: all)")
    vocab_opts.add_argument("--tags", help="comma-separated tags to keep, in this order")
    r.add_argument("--path-column", help="default: path, file, filename, filepath, audio or mp3_path")
    r.add_argument("--tag-column", help="a column of ';'-separated tags (default: a column named 'tags', if any)")
    r.add_argument("--split-column", help="column of train/valid/test; otherwise a seeded random split")
    r.add_argument("--group-column", help="keep each group (artist, album) on one side of the random split")
    r.add_argument("--valid-fraction", type=float, default=0.1, help="default: %(default)s")
    r.add_argument("--test-fraction", type=float, default=0.1, help="default: %(default)s")
    r.add_argument("--seed", type=int, default=0, help="seed of the random split (default: %(default)s)")
    for d in (q, r):
        d.add_argument("--out", required=True, help="cache folder to write")
        d.add_argument("--min-seconds", type=float, default=0.0,
                       help="leave out clips shorter than this (Lee et al. 2017 used 29.1 on MTAT; default: 0)")
        d.add_argument("--workers", type=int, help="decoding processes (default: min(4, CPUs))")
        cl.add_force(d, "OUT's cache (a complete one, or an interrupted one that would be resumed)")
        d.set_defaults(run=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from . import data

    common = dict(out=args.out, min_seconds=args.min_seconds, workers=args.workers, force=args.force)
    if args.dataset == "mtat":
        cache = data.prepare_mtat(args.root, split=args.split, top=args.top, **common)
    else:
        split = ({"split_column": args.split_column} if args.split_column else
                 {"group_column": args.group_column, "valid_fraction": args.valid_fraction,
                  "test_fraction": args.test_fraction, "seed": args.seed})
        cache = data.prepare_folder(args.audio, args.labels, top=args.top, tags=_tag_list(args.tags),
                                    path_column=args.path_column, tag_column=args.tag_column, **split, **common)
    meta = cache.meta
    sizes = " / ".join(f"{meta['splits'][s]:,} {s}" for s in ("train", "valid", "test"))
    print(f"wrote {args.out}: {len(cache):,} clips ({sizes}), {len(cache.tags)} tags, "
          f"{meta['audio_seconds'] / 3600:.1f} h, {meta['audio_bytes'] / 1e9:.2f} GB")
    if meta["too_short"]:
        print(f"left out {len(meta['too_short'])} clip(s) shorter than {meta['min_seconds']} s")
    return cl.report_failures(cache.failures, len(cache) + len(meta["too_short"]) + len(cache.failures),
                              "not decodable: left out of the cache")


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s; 0 picks a free port")
    cl.add_model(p)
    cl.add_device(p)
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload (default: %(default)s MB)")
    p.add_argument("--max-seconds", type=float, default=1200.0,
                   help="longest audio accepted (default: %(default)s s)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a request may wait and run before a 503/504 (default: %(default)s)")
    p.add_argument("--queue", type=int, default=32,
                   help="requests waiting for the model before new ones get 503 (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a client may take to send its upload before a 408 (default: %(default)s)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (e.g. http://localhost:3000) whose pages may POST here; repeatable "
                        "(default: only the service's own page)")
    p.add_argument("--tags", nargs="+", action="extend", default=[], metavar="PACK",
                   help="also score your own tags from these tag packs (`samplecnn learn`), beside the model's")


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import server

    tag_packs = _read_packs(args.tags, args.model)  # before the model loads: a wrong pack fails at once
    server.serve(model=args.model, tag_packs=tag_packs, host=args.host, port=args.port, device=args.device,
                 limits=server.Limits(max_upload_bytes=int(args.max_upload_mb * 1e6), max_seconds=args.max_seconds,
                                      timeout=args.timeout, queue=args.queue, body_timeout=args.body_timeout),
                 allow_origins=args.allow_origin)
    return EXIT_OK


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
