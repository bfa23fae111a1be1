"""The library commands of `samplecnn`: index, search, similar, export, write-tags (each one's options beside it).

Registered by samplecnn.cli (COMMANDS); the handlers import what they need when they run, so that building the
parsers stays cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import commandline as cl
from ..errors import SampleCNNError


def index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="DIR",
                   help="folders or files to index (none, with --tags: only add the packs to the library)")
    cl.add_db(p, help="library database (created if missing)")
    cl.add_model(p)
    p.add_argument("--workers", type=int, help="decoder processes beside the model (default: CPUs - 1, at most 4; "
                                                 "16 with a GPU); with --ray: files decoded at once")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="decode and run the model on a Ray cluster: alone, a Ray started on this machine; 'auto' or "
                        "an address (host:port), the running cluster it names (needs the ray extra)")
    p.add_argument("--actors", type=int, help="with --ray: model actors (default: one per GPU, else one per CPU core)")
    cl.add_batch_size(p)
    cl.add_device(p)
    p.add_argument("--taggrams", action="store_true", help="also store each track's taggram (segments x tags)")
    p.add_argument("--prune", action="store_true", help="remove tracks whose files are gone from the library "
                                                        "(refused for a given folder that is gone or empty)")
    p.add_argument("--verify", action="store_true",
                   help="hash every file, even those whose size and mtime are unchanged, and re-tag changed ones")
    p.add_argument("--write-tags", action="store_true",
                   help="then write each file's decided tags into its metadata (field SAMPLECNN_TAGS)")
    p.add_argument("--dry-run", action="store_true", help="with --write-tags: only show what would change")
    p.add_argument("--tags", nargs="+", action="extend", default=[], metavar="PACK",
                   help="store these tag packs (`samplecnn learn`) in the library and score every track of the model "
                        "with them, from the stored embeddings (nothing is decoded again); tracks indexed later are "
                        "scored too. A pack of the same file name replaces the stored one. Put the folders first")


def cmd_index(args: argparse.Namespace) -> int:
    from .. import packs
    from . import index, sources, store, tagwrite
    from .output import quote_path

    if not args.inputs and not args.tags:
        raise SampleCNNError("give the folders to index (DIR...), or --tags PACK to add tag packs to the library")
    if args.write_tags and any(sources.is_url(p) for p in args.inputs):
        raise SampleCNNError("--write-tags edits local files only; a URL was given (index it, then run write-tags "
                             "where the files are mounted)")
    tag_packs = []
    if args.tags:  # the checkpoint is hashed once, for the packs' check and a packs-only run's model
        model_id = packs.model_id_of(args.model)
        tag_packs = packs.read_packs(args.tags, model_id, "--tags takes tag packs: put the folders before --tags")
    if args.inputs:
        report = index.index(args.inputs, args.db, model=args.model, workers=args.workers,
                             batch_size=args.batch_size, device=args.device, taggrams=args.taggrams,
                             prune=args.prune, progress=sys.stderr.isatty(), verify=args.verify, tag_packs=tag_packs,
                             ray=args.ray, actors=args.actors)
    else:  # packs alone: the model's tracks are scored from their embeddings, without loading the model (or Ray)
        with store.Library(args.db) as lib:
            model = lib.model(model_id)
            report = index.Report(model_id=model.model_id, packs=index.add_packs(lib, model, tag_packs))
    with store.Library(args.db) as lib:
        total = lib.count(report.model_id) if report.model_id else 0
        for name, status, n in report.packs:
            scored = ("already stored: nothing to do" if status == "unchanged" else
                      f"{n} track(s) scored from their stored embeddings")
            print(f"tag pack {name}: {status}, {scored}")
        if args.inputs:
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
            under = [os.path.abspath(p) for p in args.inputs] or None
            changes = tagwrite.write_decisions(lib, model, under=under, dry_run=args.dry_run)
            _report_tag_changes(changes, args.dry_run, args.db)
            report.failures.extend((c.path, c.error) for c in changes if c.error)
    if report.interrupted:
        print(f"samplecnn: interrupted; {report.indexed} track(s) were saved: rerun to go on", file=sys.stderr)
        return cl.EXIT_INTERRUPTED
    return cl.report_failures(report.failures, report.inputs)


def search_arguments(p: argparse.ArgumentParser) -> None:
    cl.add_db(p)
    p.add_argument("--tag", action="append", default=[], help="a wanted tag (repeatable)")
    p.add_argument("--not", dest="without", action="append", default=[], metavar="TAG",
                   help="an unwanted tag (repeatable): ranks by 1 - its score")
    cl.add_limit(p)
    cl.add_hit_format(p)
    cl.add_model_id(p, "which model's tracks")


def cmd_search(args: argparse.Namespace) -> int:
    from . import output, search, store

    cl.check_limit(args.limit)
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model_id)
        hits = search.search(lib, model, args.tag, args.without, limit=args.limit)
    output.write_hits(hits, args.format, sys.stdout)
    return cl.EXIT_OK


def similar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", metavar="FILE_OR_INDEXED_PATH")
    cl.add_db(p)
    cl.add_limit(p)
    cl.add_hit_format(p)
    cl.add_model(p, default=None, also=": the library's model, which also embeds a query that is not indexed "
                                       "when the library's own copy has moved")
    p.add_argument("--model-id", metavar="ID",
                   help="which model's tracks, when the library holds several (a model id, its name or its "
                        "checkpoint; default: --model's)")
    cl.add_device(p)


def cmd_similar(args: argparse.Namespace) -> int:
    from .. import pretrained
    from . import output, search, store

    cl.check_limit(args.limit)
    given = args.model
    checkpoint = given if given and (Path(given).is_file() or given in pretrained.MODELS) else None
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model_id or given)
        query, indexed = search.query_embedding(lib, model, args.query, checkpoint=checkpoint, device=args.device)
        hits = search.similar(lib, model, query, limit=args.limit, exclude=indexed)
    output.write_hits(hits, args.format, sys.stdout, score_name="similarity")
    return cl.EXIT_OK


def export_arguments(p: argparse.ArgumentParser) -> None:
    cl.add_db(p)
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="csv")
    p.add_argument("--out", help="output file (default: standard output; Parquet needs a file)")
    cl.add_model_id(p, "which model's tracks")
    p.add_argument("--no-embeddings", action="store_true", help="leave the embeddings out (jsonl, parquet)")
    cl.add_force(p)


def cmd_export(args: argparse.Namespace) -> int:
    from ..fileio import atomic_path
    from . import export, store

    if args.format == "parquet" and not args.out:
        raise SampleCNNError("Parquet is a binary format: give --out FILE")
    with store.Library(args.db, readonly=True) as lib:
        model = lib.model(args.model_id)
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
    return cl.EXIT_OK


def write_tags_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="FILE_OR_DIR", help="only these files or folders (default: all)")
    cl.add_db(p)
    cl.add_model_id(p, "whose decisions")
    p.add_argument("--dry-run", action="store_true", help="only show what would change")
    p.add_argument("--undo", action="store_true", help="put the SAMPLECNN_TAGS fields back as they were")


def cmd_write_tags(args: argparse.Namespace) -> int:
    from . import store, tagwrite

    under = [os.path.abspath(p) for p in args.paths] or None
    with store.Library(args.db) as lib:
        if args.undo:
            changes = tagwrite.undo(lib, under=under, dry_run=args.dry_run)
        else:
            changes = tagwrite.write_decisions(lib, lib.model(args.model_id), under=under, dry_run=args.dry_run)
    _report_tag_changes(changes, args.dry_run, args.db, undo=args.undo)
    return cl.report_failures([(c.path, c.error) for c in changes if c.error], len(changes))


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


# name -> (help, add_arguments, handler), in the order `samplecnn --help` lists them
COMMANDS = {
    "index": ("tag folders into a library database (resumable: reruns skip unchanged files)",
              index_arguments, cmd_index),
    "search": ("rank indexed tracks by tag scores (the model's and the library's tag packs')", search_arguments,
               cmd_search),
    "similar": ("rank indexed tracks by embedding similarity to a track or any audio file",
                similar_arguments, cmd_similar),
    "export": ("write every indexed track as CSV, JSON lines or Parquet", export_arguments, cmd_export),
    "write-tags": ("write indexed tracks' decided tags into their files' metadata, or undo",
                   write_tags_arguments, cmd_write_tags),
}
