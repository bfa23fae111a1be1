#!/usr/bin/env bash
# Every held-out score of the model card for one model (default: the bundled one) into OUT (default runs/eval-NAME):
# full held-out tracks against the teachers' labels, 42 of the training tracks (how well it fits what it heard),
# the csound-soundfont instrument renders, the sonic-pi loops and the voice mixtures. Needs scripts/v3_data.sh's
# data. About 3 minutes on 2 cores; run it alone.
#   scripts/v3_eval.sh [MODEL] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-default}
OUT=${2:-runs/eval-$(basename "${MODEL%.safetensors}")}
mkdir -p "$OUT"
P=.venv/bin/python
.venv/bin/samplecnn evaluate "$MODEL" --data runs/valid-cache --split valid --out "$OUT/valid" | tail -3
.venv/bin/samplecnn evaluate "$MODEL" --data runs/fit-cache --split valid --out "$OUT/fit" | tail -3
$P scripts/eval_instruments.py runs/eval-instruments --model "$MODEL" --no-teacher > "$OUT/instruments.md"
$P scripts/eval_loops.py --model "$MODEL" > "$OUT/loops.md"
$P scripts/eval_voices.py --music runs/valid-cache --voices runs/voices-cache --model "$MODEL" --n 256 > "$OUT/voices.md"
$P - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
s = json.loads((out / "valid" / "summary.json").read_text())
print(f"held-out tracks: ROC-AUC {s['roc_auc']:.3f} PR-AUC {s['pr_auc']:.3f} Spearman {s.get('spearman', float('nan')):.3f}")
f = json.loads((out / "fit" / "summary.json").read_text())
print(f"training tracks (fit): ROC-AUC {f['roc_auc']:.3f} PR-AUC {f['pr_auc']:.3f} Spearman {f['spearman']:.3f}")
# each script's headline: the model's row, the agreement line, the mean over the vocal tags
for name, pick in (("instruments", "| samplecnn"), ("loops", "student top-1"), ("voices", "**mean**")):
    lines = [line for line in (out / f"{name}.md").read_text().splitlines() if pick in line]
    print(f"{name}: {lines[0] if lines else '(no headline found)'}")
PY
