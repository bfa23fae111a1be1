"""Check bf16 and int8 against fp32 for the bundled default model on this machine's kind of device, and store the
records in samplecnn/assets/default.safetensors (its weights unchanged; the records of other device kinds kept)
and the calibrated int8 model beside it (default.int8.onnx). Rerun it on each kind of machine, and after the
default model is replaced.

    .venv/bin/python scripts/check_default_precision.py CORPUS_DIR [--reference DIR] [--finetune-steps N]

CORPUS_DIR: the Debian game-music corpus (`samplecnn corpus debian`, docs/corpus.md), read through its manifest.
The check: 30-s excerpts of every held-out ("valid") track, of every track of the training packages with at most
15 tracks, and of the musicnn reference excerpts (96 songs with today's corpus); int8's activation ranges are
calibrated on three tracks of each other training package, so no song of the check is calibrated on (and with
--finetune-steps, the int8 model's weights fine-tuned on them: `samplecnn check-precision --finetune-steps`).
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samplecnn.cli import main as samplecnn  # noqa: E402

SMALL_PACKAGE = 15   # training packages with at most this many tracks go into the check set whole
CALIBRATE_EACH = 3   # tracks calibrated on per other training package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "musicnn-reference"))
    parser.add_argument("--finetune-steps", default="0", help="int8 fine-tuning steps (default: none)")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    with open(corpus / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_package = collections.defaultdict(list)
    for r in rows:
        if r["split"] == "train":
            by_package[r["package"]].append(str(corpus / r["path"]))
    check = [str(corpus / r["path"]) for r in rows if r["split"] != "train"]
    calibrate = []
    for _, files in sorted(by_package.items()):
        if len(files) <= SMALL_PACKAGE:
            check += files
        else:
            calibrate += files[:CALIBRATE_EACH]
    if Path(args.reference).is_dir():
        check.append(args.reference)
    return samplecnn(["check-precision", "default", *check, "--calibrate", *calibrate, "--finetune-steps",
                      args.finetune_steps, "--out", str(ROOT / "samplecnn" / "assets" / "default.safetensors"),
                      "--force"])


if __name__ == "__main__":
    sys.exit(main())
