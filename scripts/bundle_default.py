"""Turn a trained run into the bundled default model: samplecnn/assets/default.safetensors.

    .venv/bin/python scripts/bundle_default.py RUN_DIR/model.safetensors --valid-report RUN_DIR/valid/summary.json \
        --floor-report untrained-valid/summary.json FILE...

Stores fp32 weights (7.5 MB), or with --half fp16 ones if every song-level score of FILE... stays within 1e-3 of
fp32 (measured either way and recorded), and writes the evaluation numbers and the training facts into the
checkpoint's provenance. Then run `scripts/check_default_precision.py CORPUS_DIR`: the bf16/int8 check that "auto"
precision follows (per kind of device; a new model starts with none, so it runs fp32 until checked).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from samplecnn import checkpoint
from samplecnn.inference import Tagger
from samplecnn.pretrained import ASSETS

FP16_TOLERANCE = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("files", nargs="+", help="real music for the fp16 check")
    parser.add_argument("--valid-report", required=True)
    parser.add_argument("--floor-report", required=True)
    parser.add_argument("--half", action="store_true", help="fp16 storage when it passes the 1e-3 check")
    args = parser.parse_args()

    model, info = checkpoint.read(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        half_path = checkpoint.save(Path(tmp) / "half.safetensors", model, info, half=True)
        half_model, _ = checkpoint.read(half_path)
    full, half = Tagger(model, info, precision="fp32"), Tagger(half_model, info, precision="fp32")
    fp16_diff = max(float(np.max(np.abs(full.tag(f).scores - half.tag(f).scores))) for f in args.files)
    use_half = args.half and fp16_diff <= FP16_TOLERANCE
    if use_half:
        model = half_model

    valid, floor = json.loads(Path(args.valid_report).read_text()), json.loads(Path(args.floor_report).read_text())
    info.provenance.update({
        "name": "default",
        "description": "SampleCNN 3^9 distilled from musicnn (MTT_musicnn + MTT_vgg) on 19.4 h of Debian game music",
        "teacher": "mean of musicnn 0.1.0 MTT_musicnn and MTT_vgg (PyTorch port, samplecnn.teachers.musicnn)",
        "training_data": "samplecnn corpus debian: 317 tracks, 19.42 h, 15 Debian packages (docs/corpus.md); "
                         "valid = hedgewars-data + freedroidrpg-data",
        "data": "corpus-cache (samplecnn prepare folder + samplecnn teach --teacher both)",
        "held_out_roc_auc": round(valid["roc_auc"], 4), "held_out_pr_auc": round(valid["pr_auc"], 4),
        "held_out_spearman": round(valid["spearman"], 4), "held_out_tags_scored": valid["tags_scored"],
        "untrained_roc_auc": round(floor["roc_auc"], 4), "untrained_pr_auc": round(floor["pr_auc"], 4),
        "untrained_spearman": round(floor["spearman"], 4),
        "storage": "fp16" if use_half else "fp32", "fp16_max_score_diff": round(fp16_diff, 6),
        "licence": "research and personal use: the teacher's weights are ISC (PyPI musicnn) and CC BY-NC-ND (MTG)",
    })
    info.provenance.pop("data", None)
    ASSETS.mkdir(exist_ok=True)
    out = checkpoint.save(ASSETS / "default.safetensors", model, info, half=use_half, overwrite=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {'fp16' if use_half else 'fp32'} storage; "
          f"fp16 max song-score diff {fp16_diff:.2e}); now run scripts/check_default_precision.py CORPUS_DIR")


if __name__ == "__main__":
    main()
