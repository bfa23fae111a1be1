#!/usr/bin/env bash
# One prepared GPU check (run on a lent GPU machine from the repo root; never part of CI):
#   1. benchmarks/bench_gpu.py: inference/training throughput per precision, whole songs, bf16 accuracy on real music
#   2. the research path on the GPU: prepare a small folder dataset, train through torchrun (NCCL) in bf16, stop,
#      resume exactly, evaluate.
# AUDIO_DIR (real music) and LABELS (its label table, with a split column) default to .gpu/ (not committed).
# Python packages the GPU image lacks (PyAV, soxr, mutagen) are installed from wheels in .whl/ when present.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
AUDIO_DIR=${AUDIO_DIR:-.gpu/audio}; LABELS=${LABELS:-.gpu/labels.csv}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 300 python3 benchmarks/bench_gpu.py "$AUDIO_DIR"/* --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
echo "== research path on the GPU"
W=/tmp/gpu-run; rm -rf "$W"
( set -e
  time python3 -m samplecnn prepare folder --audio "$AUDIO_DIR" --labels "$LABELS" --split-column split \
      --out "$W/cache" --workers 8
  time torchrun --standalone --nproc_per_node=1 -m samplecnn train --data "$W/cache" --out "$W/run" \
      --epochs 3 --epoch-repeats 32 --batch-size 64 --amp bf16 --stop-after-steps 6 --valid-segments 4
  time torchrun --standalone --nproc_per_node=1 -m samplecnn train --data "$W/cache" --out "$W/run" \
      --epochs 3 --epoch-repeats 32 --batch-size 64 --amp bf16 --valid-segments 4 --resume
  python3 -m samplecnn evaluate "$W/run/model.safetensors" --data "$W/cache" --split valid --out "$W/eval"
  python3 -m samplecnn tag "$AUDIO_DIR"/00_* --model "$W/run/model.safetensors" --top-k 3
  cp "$W/run/metrics.jsonl" "$W/run/curves.png" "$OUT/" ) 2>&1 | tee "$OUT/research.log"
echo "rc=$?"
echo "== library indexing on the GPU (the audio copied 8 times)"
L=/tmp/gpu-lib; rm -rf "$L" && mkdir -p "$L"
for i in 1 2 3 4 5 6 7 8; do cp -r "$AUDIO_DIR" "$L/copy$i"; done
for workers in 4 12; do
  rm -f "$L.sqlite"*
  TIMEFORMAT="index --workers $workers: %R s wall"
  time (python3 -m samplecnn index "$L" --db "$L.sqlite" --workers $workers 2>&1 | tail -3)
done | tee "$OUT/index.log"
