#!/usr/bin/env bash
# The v3 long run (data: scripts/v3_data.sh). Resumes runs/v3 exactly where it exists; on a machine without it,
# continues from the progress committed in checkpoints/v3 (the best weights so far, at the learning rate the run
# had reached, fresh optimizer), else starts from the bundled default. Pause it with SIGSTOP/SIGCONT.
#   scripts/v3_train.sh        train (resumes)
#   scripts/v3_train.sh save   export the best weights so far into checkpoints/v3 (commit them: the next machine
#                              continues from there)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/v3
SAVED=checkpoints/v3
args=(--data runs/corpus-cache --valid-data runs/valid-cache --out $OUT --recipe paper --teacher both
      --voices runs/voices-cache --amp bf16 --batch-size 16 --ema 0.999 --valid-segments 12 --checkpoint-every 100
      --epoch-steps 500)
if [ "${1:-}" = save ]; then
  .venv/bin/samplecnn train "${args[@]}" --lr "$(cat $OUT/start-lr)" --resume --export-best
  mkdir -p $SAVED
  cp $OUT/model.safetensors $SAVED/model.safetensors.tmp && mv $SAVED/model.safetensors.tmp $SAVED/model.safetensors
  # the rate the run has reached: where the next machine continues
  .venv/bin/python -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[-1]['lr'])" \
      $OUT/metrics.jsonl > $SAVED/lr
  # every machine's records, each run named by the time of its first validation (a rerun of save replaces its own)
  .venv/bin/python - "$OUT/metrics.jsonl" "$SAVED/history.jsonl" <<'PY'
import json, os, sys
src, dst = sys.argv[1:]
new = [json.loads(l) for l in open(src)]
run = new[0]["time"]
new = [dict(r, run=run) for r in new]
old = [json.loads(l) for l in open(dst)] if os.path.exists(dst) else []
old = [r for r in old if r.get("run") != run]
with open(dst + ".tmp", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in old + new)
os.replace(dst + ".tmp", dst)
PY
  echo "saved the best weights so far to $SAVED (lr $(cat $SAVED/lr)); commit $SAVED"
  exit 0
fi
if [ -f $OUT/last.pt ]; then
  start=(--resume --lr "$(cat $OUT/start-lr)")
elif [ -f $SAVED/model.safetensors ]; then
  mkdir -p $OUT && cp $SAVED/lr $OUT/start-lr
  start=(--init $SAVED/model.safetensors --lr "$(cat $OUT/start-lr)")
else
  mkdir -p $OUT && echo 0.002 > $OUT/start-lr
  start=(--init default --lr 0.002)
fi
exec .venv/bin/samplecnn train "${args[@]}" "${start[@]}"
