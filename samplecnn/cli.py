"""The `samplecnn` command: every subcommand is a parser block in `_parser` and a `_cmd_*` function that imports
what it needs lazily (so `samplecnn --help` starts fast).

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


_BATCH_HELP = "segments per forward pass (default on CPU: 1, 8 in bf16; GPU: 64; see inference.Tagger)"


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
    p.add_argument("--batch-size", type=int, help=_BATCH_HELP)
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 only where the hardware has it and the checkpoint records bf16 was verified on "
                        "real music, else fp32 (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace existing taggram files")
    p.set_defaults(run=_cmd_tag)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("info", help="print a checkpoint's metadata")
    p.add_argument("checkpoint", help="registered model name (e.g. default) or checkpoint path")
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
    p = sub.add_parser("train", help="train a model on a prepared dataset (torchrun for several GPUs/processes)")
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
    p.add_argument("--teacher", choices=("none", "musicnn", "vgg", "both"), default="none",
                   help="label augmented views with this musicnn teacher inside each step (consistent teaching); "
                        "none: learn the cache's labels (default: %(default)s)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="with --teacher: plain crops instead of augmented views (speed, mixing, filters, gain)")
    p.add_argument("--loss", choices=("bce", "logit-mse"), default="bce",
                   help="bce on the targets' probabilities, or MSE between logits (default: %(default)s)")
    p.add_argument("--epoch-steps", type=int, default=1000, metavar="N",
                   help="with --teacher: steps per epoch, i.e. between validations (default: %(default)s)")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="validate and export a moving average of the weights (default: 0.999 for cosine, else off)")
    p.add_argument("--init", metavar="CKPT|NAME",
                   help="start from this checkpoint's weights (or a registered model, e.g. default), fresh optimizer")
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
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("evaluate", help="song-level ROC-AUC / PR-AUC of a checkpoint on a dataset split")
    p.add_argument("model", metavar="CHECKPOINT")
    p.add_argument("--data", required=True, metavar="CACHE")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--out", metavar="DIR", help="write summary.json, per_tag.csv and per_tag.png here")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("prepare", help="decode a dataset once into a training cache (resumable: rerun to go on)")
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
    for q in (q, r):
        q.add_argument("--out", required=True, help="cache folder to write")
        q.add_argument("--min-seconds", type=float, default=0.0,
                       help="leave out clips shorter than this (Lee et al. 2017 used 29.1 on MTAT; default: 0)")
        q.add_argument("--workers", type=int, help="decoding processes (default: min(4, CPUs))")
        q.add_argument("--force", action="store_true", help="rebuild OUT if it is already a complete cache")
        q.set_defaults(run=_cmd_prepare)

    # -- library tagging and the HTTP service (issue 5) --
    p = sub.add_parser("index", help="tag folders into a library database (resumable: reruns skip unchanged files)")
    p.add_argument("inputs", nargs="+", metavar="DIR")
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite", help="library database (created if missing)")
    p.add_argument("--model", default="default", help="registered model name or checkpoint path (default: %(default)s)")
    p.add_argument("--workers", type=int, help="decoder processes beside the model (default: CPUs - 1, at most 4; "
                                                 "16 with a GPU)")
    p.add_argument("--batch-size", type=int, help=_BATCH_HELP)
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--taggrams", action="store_true", help="also store each track's taggram (segments x tags)")
    p.add_argument("--prune", action="store_true", help="remove tracks whose files are gone from the library "
                                                        "(refused for a given folder that is gone or empty)")
    p.add_argument("--verify", action="store_true",
                   help="hash every file, even those whose size and mtime are unchanged, and re-tag changed ones")
    p.add_argument("--write-tags", action="store_true",
                   help="then write each file's decided tags into its metadata (field SAMPLECNN_TAGS)")
    p.add_argument("--dry-run", action="store_true", help="with --write-tags: only show what would change")
    p.set_defaults(run=_cmd_index)

    p = sub.add_parser("search", help="rank indexed tracks by tag scores")
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite")
    p.add_argument("--tag", action="append", default=[], help="a wanted tag (repeatable)")
    p.add_argument("--not", dest="without", action="append", default=[], metavar="TAG",
                   help="an unwanted tag (repeatable): ranks by 1 - its score")
    p.add_argument("--limit", type=int, default=20, help="tracks to list; 0 = all (default: %(default)s)")
    p.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    p.add_argument("--model", help="which model's tracks, when the library holds several (id, name or checkpoint)")
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("similar", help="rank indexed tracks by embedding similarity to a track or any audio file")
    p.add_argument("query", metavar="FILE_OR_INDEXED_PATH")
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite")
    p.add_argument("--limit", type=int, default=20, help="tracks to list; 0 = all (default: %(default)s)")
    p.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    p.add_argument("--model", help="the library's model (id, name or checkpoint); a checkpoint path also embeds "
                                   "a file that is not indexed when the library's own copy has moved")
    p.add_argument("--device", help="torch device for embedding a file that is not indexed")
    p.set_defaults(run=_cmd_similar)

    p = sub.add_parser("export", help="write every indexed track as CSV, JSON lines or Parquet")
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="csv")
    p.add_argument("--out", help="output file (default: standard output; Parquet needs a file)")
    p.add_argument("--model", help="which model's tracks, when the library holds several")
    p.add_argument("--no-embeddings", action="store_true", help="leave the embeddings out (jsonl, parquet)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("write-tags", help="write indexed tracks' decided tags into their files' metadata, or undo")
    p.add_argument("paths", nargs="*", metavar="FILE_OR_DIR", help="only these files or folders (default: all)")
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite")
    p.add_argument("--model", help="whose decisions, when the library holds several models")
    p.add_argument("--dry-run", action="store_true", help="only show what would change")
    p.add_argument("--undo", action="store_true", help="put the SAMPLECNN_TAGS fields back as they were")
    p.set_defaults(run=_cmd_write_tags)

    p = sub.add_parser("serve", help="run the HTTP tagging service and its web page (loopback only by default)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s; 0 picks a free port")
    p.add_argument("--model", default="default", help="registered model name or checkpoint path (default: %(default)s)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
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
    p.set_defaults(run=_cmd_serve)

    # -- ONNX export (issue 6) --
    p = sub.add_parser("export-onnx", help="export a checkpoint to ONNX (BatchNorm folded, dynamic batch, tags in "
                                           "the metadata); needs the `onnx` extra")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="registered model name or checkpoint path")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_cmd_export_onnx)

    # -- training corpus from Debian's archive (issue 4) --
    p = sub.add_parser("corpus", help="build a corpus of redistributable training music (resumable: rerun to go on)")
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="SOURCE")
    q = corpora.add_parser("debian", help="game soundtracks from 15 Debian packages (apt-get download + dpkg-deb -x, "
                                          "no root); see docs/corpus.md")
    q.add_argument("--out", required=True, metavar="DIR", help="corpus folder: audio/, manifest.csv, excluded.csv")
    q.add_argument("--debs", metavar="DIR", help="use the .deb files in DIR instead of downloading")
    q.add_argument("--packages", metavar="A,B,...", help="a subset of the recipe's packages (default: all of them)")
    q.add_argument("--min-seconds", type=float, default=30.0,
                   help="leave out music shorter than this (default: %(default)s)")
    q.add_argument("--force", action="store_true", help="redo packages that an earlier run already extracted")
    q.set_defaults(run=_cmd_corpus)
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
    q.add_argument("--force", action="store_true", help="render again what an earlier run already rendered")
    q.add_argument("--eval-instruments", action="store_true",
                   help="instead: the instrument evaluation set through csound-soundfont (never for training)")
    q.add_argument("--clips", type=int, default=9, help="with --eval-instruments: clips per instrument "
                                                       "(default: %(default)s, 17 instruments)")
    q.set_defaults(run=_cmd_corpus_midi)

    # -- teacher labels for distillation (issue 4) --
    p = sub.add_parser("teach", help="label a prepared cache's segments with the musicnn teacher (resumable: rerun "
                                     "to go on)")
    p.add_argument("--data", metavar="CACHE", help="a cache made by `samplecnn prepare` (its tags: MTAT tags)")
    p.add_argument("--teacher", choices=("musicnn", "vgg", "both"), default="both",
                   help="MTT_musicnn, MTT_vgg or the mean of both (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="teacher processes, one torch thread each; 1 = in this process (default: %(default)s)")
    p.add_argument("--audio", metavar="DIR", help="folder the cache's paths are relative to (default: the one "
                                                 "prepare recorded)")
    p.add_argument("--force", action="store_true", help="compute the labels again")
    p.add_argument("--make-table", nargs="+", metavar="MANIFEST... OUT_CSV",
                   help="instead: write a label table for `prepare folder` from one or more corpus manifests (path, "
                        "split and the 50 MTAT tags as zero columns); paths are made relative to the first "
                        "manifest's folder, the --audio folder for `prepare folder`")
    p.set_defaults(run=_cmd_teach)
    return parser


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
        return 0
    done = teach.teach(args.data, teacher=args.teacher, workers=args.workers, force=args.force,
                       audio_root=args.audio)
    meta = done.cache.teacher_meta
    minutes, seconds = divmod(done.seconds, 60)
    print(f"wrote {Path(args.data) / 'teacher'}: {meta['segments']:,} segments of {meta['clips']:,} clips "
          f"({' + '.join(meta['teachers'])}; {done.computed:,} clips labelled in {int(minutes)} min {seconds:.0f} s); "
          f"labels.npy = clip means (original kept in labels_original.npy)")
    stats = teach.tag_statistics(done.rows, done.cache.tags)
    print("highest mean teacher scores: " + ", ".join(f"{s['tag']} {s['mean']:.3f}" for s in stats[:10]))
    if done.failures:
        print(f"samplecnn: {len(done.failures)} file(s) could not be read; they have no segment labels and keep "
              f"their original clip labels:", file=sys.stderr)
        for path, error in done.failures:
            print(f"  {path}: {error}", file=sys.stderr)
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    import importlib.util

    from . import pretrained

    if importlib.util.find_spec("onnx") is None:
        raise SampleCNNError("export-onnx needs the onnx package: pip install 'samplecnn[onnx]'")
    from .onnx_export import export

    out = export(pretrained.resolve(args.checkpoint), args.out, overwrite=args.force)
    print(f"wrote {out} (input 'audio' (batch, 1, samples); outputs 'probabilities', 'embedding')")
    return 0


def _cmd_corpus(args: argparse.Namespace) -> int:
    import time

    from .corpus import build

    start = time.monotonic()
    packages = [n.strip() for n in args.packages.split(",") if n.strip()] if args.packages else None
    summary = build(args.out, packages=packages, debs=args.debs, min_seconds=args.min_seconds, force=args.force,
                    progress=sys.stderr.isatty())
    print()
    for line in summary.lines(args.min_seconds):
        print(line)
    minutes, seconds = divmod(time.monotonic() - start, 60)
    reused = f"; {len(summary.skipped)} package(s) reused from an earlier run" if summary.skipped else ""
    print(f"wrote {Path(args.out) / 'manifest.csv'} in {int(minutes)} min {seconds:.0f} s{reused}")
    return 0


def _cmd_corpus_midi(args: argparse.Namespace) -> int:
    import importlib.util
    import time

    missing = [m for m in ("music21", "pretty_midi", "fluidsynth", "soundfile") if importlib.util.find_spec(m) is None]
    if missing:
        raise SampleCNNError(f"corpus midi needs {', '.join(missing)}: pip install 'samplecnn[corpus]'")
    if args.eval_instruments:
        from .corpus.eval_instruments import build_eval

        build_eval(args.out, clips_per_instrument=args.clips, seed=args.seed, force=args.force,
                   progress=sys.stderr.isatty())
        return 0
    from .corpus.midi import build

    start = time.monotonic()
    sources = [n.strip() for n in args.sources.split(",") if n.strip()]
    summary = build(args.out, hours=args.hours, seed=args.seed, terms=args.terms, sources=sources,
                    max_seconds=args.max_seconds, min_seconds=args.min_seconds, debs=args.debs, force=args.force,
                    progress=sys.stderr.isatty())
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
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    from . import audio, inference

    if args.top_k < 0:
        raise SampleCNNError(f"--top-k must be 0 (all) or positive, got {args.top_k}")
    files, failures = audio.find_audio(args.inputs)
    n_inputs = len(files) + len(failures)
    tagger = inference.load(args.model, device=args.device, batch_size=args.batch_size,
                            precision=args.precision) if files else None
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
        print("No bundled model is installed (was samplecnn installed without its assets?).\n"
              "Use `samplecnn tag --model PATH` with a checkpoint.")
    for name, desc in installed.items():
        print(f"{name:12s} {desc}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoint, models, pretrained

    path = pretrained.resolve(args.checkpoint)
    if args.json:  # the header alone: no weights read
        print(json.dumps(checkpoint.read_info(path).to_json(), indent=1))
        return 0
    model, info = checkpoint.load(path)
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


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    path = train(TrainConfig(data=args.data, out=args.out, arch=args.arch, recipe=args.recipe, epochs=args.epochs,
                             batch_size=args.batch_size, amp=args.amp, seed=args.seed,
                             checkpoint_every=args.checkpoint_every, stop_after_steps=args.stop_after_steps,
                             budget_minutes=args.budget_minutes,
                             resume=args.resume, device=args.device, width=args.width,
                             multi_level=args.multi_level, epoch_repeats=args.epoch_repeats,
                             valid_segments=args.valid_segments, teacher=args.teacher, augment=args.augment,
                             loss=args.loss, epoch_steps=args.epoch_steps, ema=args.ema, init=args.init,
                             layout=args.layout, export_best=args.export_best, valid_data=args.valid_data))
    if path is not None:
        print(f"trained model: {path}")
    return 0


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
    return 0


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
    if cache.failures:
        print(f"samplecnn: {len(cache.failures)} file(s) could not be decoded and were left out:", file=sys.stderr)
        for path, error in cache.failures:
            print(f"  {path}: {error}", file=sys.stderr)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    import os

    from .library import index, store, tagwrite
    from .library.output import quote_path

    report = index.index(args.inputs, args.db, model=args.model, workers=args.workers, batch_size=args.batch_size,
                         device=args.device, taggrams=args.taggrams, prune=args.prune,
                         progress=sys.stderr.isatty(), verify=args.verify)
    with store.Library(args.db) as lib:
        total = lib.count(report.model_id) if report.model_id else 0
        print(f"{report.indexed} track(s) tagged ({report.new} new, {report.retagged} changed), "
              f"{report.unchanged + report.touched} unchanged, {len(report.failures)} failed; "
              f"the library has {total} track(s) of {report.model_id}")
        if report.missing:
            verb = "were removed from the library" if report.pruned else "are still listed (--prune removes them)"
            print(f"{len(report.missing)} indexed file(s) are gone from disk and {verb}:", file=sys.stderr)
            for path in report.missing:
                print(f"  {quote_path(path)}", file=sys.stderr)
        if args.write_tags and not report.interrupted:
            model = lib.model(report.model_id)
            changes = tagwrite.write_decisions(lib, model, under=[os.path.abspath(p) for p in args.inputs],
                                               dry_run=args.dry_run)
            _report_tag_changes(changes, args.dry_run, args.db)
            report.failures.extend((c.path, c.error) for c in changes if c.error)
    if report.interrupted:
        print(f"samplecnn: interrupted; {report.indexed} track(s) were saved: rerun to go on", file=sys.stderr)
        return 130
    return _report_failures(report.failures, report.inputs)


def _cmd_search(args: argparse.Namespace) -> int:
    from .library import output, search, store

    if args.limit < 0:
        raise SampleCNNError(f"--limit must be 0 (all) or positive, got {args.limit}")
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model)
        hits = search.search(lib, model, args.tag, args.without, limit=args.limit)
    output.write_hits(hits, args.format, sys.stdout)
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from .library import output, search, store

    if args.limit < 0:
        raise SampleCNNError(f"--limit must be 0 (all) or positive, got {args.limit}")
    checkpoint = args.model if args.model and Path(args.model).is_file() else None
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model)
        query, indexed = search.query_embedding(lib, model, args.query, checkpoint=checkpoint, device=args.device)
        hits = search.similar(lib, model, query, limit=args.limit, exclude=indexed)
    output.write_hits(hits, args.format, sys.stdout, score_name="similarity")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .fileio import atomic_path
    from .library import export, store

    if args.format == "parquet" and not args.out:
        raise SampleCNNError("Parquet is a binary format: give --out FILE")
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model)
        if not args.out:
            n = export.write_csv(lib, model, sys.stdout) if args.format == "csv" else \
                export.write_jsonl(lib, model, sys.stdout, embeddings=not args.no_embeddings)
        else:
            with atomic_path(args.out, overwrite=args.force) as tmp:
                if args.format == "parquet":
                    n = export.write_parquet(lib, model, tmp, embeddings=not args.no_embeddings)
                else:
                    with open(tmp, "w", encoding="utf-8", newline="") as f:
                        n = export.write_csv(lib, model, f) if args.format == "csv" else \
                            export.write_jsonl(lib, model, f, embeddings=not args.no_embeddings)
            print(f"wrote {n} track(s) to {args.out}", file=sys.stderr)
    return 0


def _cmd_write_tags(args: argparse.Namespace) -> int:
    import os

    from .library import store, tagwrite

    under = [os.path.abspath(p) for p in args.paths] or None
    with store.Library(args.db) as lib:
        if args.undo:
            changes = tagwrite.undo(lib, under=under, dry_run=args.dry_run)
        else:
            changes = tagwrite.write_decisions(lib, lib.model(args.model), under=under, dry_run=args.dry_run)
    _report_tag_changes(changes, args.dry_run, args.db, undo=args.undo)
    return _report_failures([(c.path, c.error) for c in changes if c.error], len(changes))


def _report_tag_changes(changes, dry_run: bool, db: str, undo: bool = False) -> None:
    import shlex

    for c in changes:
        if c.note:  # a file an interrupted run had left half-written
            print(f"samplecnn: {c.path}: {c.note}", file=sys.stderr)
    changes = [c for c in changes if not c.note]
    changed = [c for c in changes if c.changed]
    for c in changed:
        before = "(absent)" if c.before is None else "; ".join(c.before) or "(empty)"
        after = "(absent)" if c.after is None else "; ".join(c.after) or "(empty)"
        print(f"{c.path}\n  SAMPLECNN_TAGS: {before} -> {after}")
    verb = "would change" if dry_run else "changed"
    print(f"{verb} the SAMPLECNN_TAGS field of {len(changed)} file(s); {len(changes) - len(changed)} already "
          f"{'as they were' if undo else 'up to date'} or failed")
    if changed and not dry_run and not undo:
        print(f"undo with: samplecnn write-tags --db {shlex.quote(str(db))} --undo")


def _report_failures(failures: list[tuple[str, str]], n_inputs: int) -> int:
    """One line per failed input; names are quoted where needed, so that no file name can forge a line."""
    from .library.output import quote_path

    if not failures:
        return 0
    print(f"samplecnn: {len(failures)} of {max(n_inputs, len(failures))} input(s) failed:", file=sys.stderr)
    for path, reason in failures:
        print(f"  {quote_path(str(path))}: {reason}", file=sys.stderr)
    return EXIT_FAILED


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import server

    server.serve(model=args.model, host=args.host, port=args.port, device=args.device,
                 limits=server.Limits(max_upload_bytes=int(args.max_upload_mb * 1e6), max_seconds=args.max_seconds,
                                      timeout=args.timeout, queue=args.queue, body_timeout=args.body_timeout),
                 allow_origins=args.allow_origin)
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
