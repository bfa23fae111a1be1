#!/usr/bin/env bash
# What should the long run continue with, now that the student fits its training music far better than the music it
# has not heard (the model card's fit row: ROC-AUC 0.990 on training tracks, 0.936 held out)? The 20-minute ablation
# that chose clean game music alone ran when the student underfitted (fit 0.935); this one asks again from the long
# run's weights, at equal compute, scored on every row of the model card (scripts/v3_eval.sh):
#   plain  the long run's recipe: clean views of the game music, labels computed ahead
#   solo   + the solo renders (one part alone: a drum kit or one instrument) in a share of each batch's rows, for
#          the exposed instruments, the drum break and the loops that game music seldom has
#   renders  solo + the ensemble MIDI renders (every part together) in a further MIDI_SHARE of the rows (their
#          cache: WITH_RENDERS=1 scripts/v3_data.sh)
#   aug    the teacher in the step on augmented views (speed, mixing, filters, gain), at 1/1.6 of the steps (a step
#          cost 1.6x one with labels ahead on an earlier machine; 1.8x on the AMD EPYC of 2026-12-03, where aug thus
#          had 29 % more compute than the others: compare its compute_minutes)
# About 3 x 19 + 3 x 3 minutes on 2 cores; run it alone. Each run resumes where it stopped and a finished one is not
# run again.
#   scripts/v3_next_ablation.sh [INIT] [OUT]   (default: checkpoints/v3/model.safetensors, runs/ablation-next)
#   RUNS="plain solo" SHARE=0.25 MIDI_SHARE=0.15 EPOCHS=4 LR=1e-5 scripts/v3_next_ablation.sh   (the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${1:-checkpoints/v3/model.safetensors}
OUT=${2:-runs/ablation-next}
RUNS=${RUNS:-plain solo aug}
SHARE=${SHARE:-0.25}
MIDI_SHARE=${MIDI_SHARE:-0.15}
EPOCHS=${EPOCHS:-4}
common=(--data runs/game-cache --valid-data runs/valid-cache --recipe cosine --epochs "$EPOCHS" --amp bf16
        --batch-size 16 --ema 0.999 --valid-segments 12 --checkpoint-every 100 --lr "${LR:-1e-5}")
for name in $RUNS; do
  case $name in
    plain) extra=(--teacher labels --epoch-steps 500) ;;
    solo) extra=(--teacher labels --epoch-steps 500 --extra-data runs/solo-cache --extra-share "$SHARE") ;;
    renders) extra=(--teacher labels --epoch-steps 500 --extra-data runs/solo-cache --extra-share "$SHARE"
                    --extra-data runs/midi-cache --extra-share "$MIDI_SHARE") ;;
    aug) extra=(--teacher both --epoch-steps 312) ;;
    *) echo "unknown run $name (plain, solo, renders or aug)" >&2; exit 2 ;;
  esac
  if [ ! -f "$OUT/$name/model.safetensors" ]; then
    start=(--init "$INIT")
    [ -f "$OUT/$name/last.pt" ] && start=(--resume)
    .venv/bin/samplecnn train "${common[@]}" "${extra[@]}" --out "$OUT/$name" "${start[@]}"
  fi
  [ -f "$OUT/eval-$name/voices.md" ] || bash scripts/v3_eval.sh "$OUT/$name/model.safetensors" "$OUT/eval-$name" \
    > "$OUT/eval-$name.txt"
done
for name in $RUNS; do echo "== $name"; tail -5 "$OUT/eval-$name.txt"; done
