"""What every `samplecnn` command shares: its options with one wording each, the failure report, the exit status.

Exit status, one rule for every command:
- 0: everything asked for was done;
- 1 (EXIT_FAILED): the command failed (one line, `samplecnn: error: ...`, no traceback), or a batch command (`tag`,
  `index`, `prepare`, `teach`, `write-tags`) went through every input but some failed: after processing the rest,
  it lists them at the end (`report_failures`) and exits 1;
- 2 (EXIT_USAGE): bad options (argparse's own code);
- 130 (EXIT_INTERRUPTED): Ctrl-C; what was finished is kept, and resumable commands go on when run again.

Option names mean one thing everywhere: `--model` is a checkpoint (a registered name or a path), `--model-id` picks
one model's tracks in a library, `--force` overwrites outputs that already exist, `--device` is a torch device.

This module imports nothing heavy: `samplecnn --help` builds every parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable

EXIT_OK = 0
EXIT_FAILED = 1       # a command failed, or some inputs of a batch failed
EXIT_USAGE = 2        # argparse's own code for bad options
EXIT_INTERRUPTED = 130

DEVICE_HELP = "torch device (default: the local GPU if any, else cpu)"
BATCH_HELP = "segments per forward pass (default on CPU: 1, 8 in bf16 and int8; GPU: 64; see inference.Tagger)"
HIT_FORMATS = ("table", "json", "jsonl", "csv")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help=DEVICE_HELP)


def add_batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help=BATCH_HELP)


def add_model(p: argparse.ArgumentParser, default: str | None = "default", also: str = "") -> None:
    """`--model`: the checkpoint to run, a registered model name or a path (`samplecnn models` lists the names)."""
    shown = " (default: %(default)s)" if default else ""
    p.add_argument("--model", default=default, metavar="CKPT",
                   help=f"registered model name or checkpoint path{also}{shown}")


def add_model_id(p: argparse.ArgumentParser, what: str) -> None:
    """`--model-id`: which model's tracks of a library; the old spelling `--model` still works (deprecated)."""
    p.add_argument("--model-id", dest="model_id", metavar="ID",
                   help=f"{what}, when the library holds several models (a model id, its name or its checkpoint)")
    p.add_argument("--model", dest="model_id", metavar="ID", help="deprecated: the old name of --model-id")


def add_force(p: argparse.ArgumentParser, outputs: str = "OUT") -> None:
    """`--force`: overwrite outputs that already exist (without it they are never replaced)."""
    p.add_argument("--force", action="store_true", help=f"overwrite {outputs} if it already exists")


def add_db(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--db", required=True, metavar="LIBRARY.sqlite", help=help)


def add_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=20, help="tracks to list; 0 = all (default: %(default)s)")


def add_hit_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=HIT_FORMATS, default="table")


def check_limit(limit: int) -> None:
    from .errors import SampleCNNError

    if limit < 0:
        raise SampleCNNError(f"--limit must be 0 (all) or positive, got {limit}")


def report_failures(failures: Iterable[tuple[str | os.PathLike, str]], n_inputs: int, consequence: str = "") -> int:
    """The end of a batch: one line per failed input (names quoted where needed, so that no file name can forge a
    line), then the exit status: EXIT_FAILED if any input failed, else EXIT_OK."""
    from .library.output import quote_path

    failures = list(failures)
    if not failures:
        return EXIT_OK
    why = f" ({consequence})" if consequence else ""
    print(f"samplecnn: {len(failures)} of {max(n_inputs, len(failures))} input(s) failed{why}:", file=sys.stderr)
    for path, reason in failures:
        print(f"  {quote_path(os.fspath(path))}: {reason}", file=sys.stderr)
    return EXIT_FAILED
