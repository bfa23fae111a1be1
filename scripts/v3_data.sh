#!/usr/bin/env bash
# Build the v3 long run's data under runs/ (about 35 minutes on 2 cores): the Debian corpus, 10 h of MIDI renders,
# the csound-soundfont instrument set, the voices, their teacher tables and the training/validation caches.
# Each step is skipped when its output exists, so a rerun after an interruption does only what is left.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/samplecnn
R=runs
mkdir -p $R
[ -f $R/corpus/manifest.csv ] || $S corpus debian --out $R/corpus
command -v fluidsynth >/dev/null || bash scripts/install-fluidsynth.sh
[ -f $R/corpus/midi/manifest.csv ] || $S corpus midi --out $R/corpus/midi --hours 10
[ -f $R/eval-instruments/manifest.csv ] || $S corpus midi --out $R/eval-instruments --eval-instruments
[ -f $R/corpus-labels.csv ] || $S teach --make-table $R/corpus/manifest.csv $R/corpus/midi/manifest.csv \
    $R/corpus-labels.csv
[ -f $R/corpus-cache/index.csv ] || $S prepare folder --audio $R/corpus --labels $R/corpus-labels.csv \
    --split-column split --out $R/corpus-cache --workers 2
# Validation: the held-out packages only (the valid split without the MIDI renders), labelled by both teachers.
if [ ! -f $R/valid-labels.csv ]; then
  .venv/bin/python - "$R" <<'PY'
import csv, sys
src, dst = f"{sys.argv[1]}/corpus-labels.csv", f"{sys.argv[1]}/valid-labels.csv"
with open(src, newline="") as f:
    reader = csv.DictReader(f)
    rows = [r for r in reader if r["split"] == "valid" and not r[reader.fieldnames[0]].startswith("midi/")]
    fields = reader.fieldnames
with open(dst + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)
import os; os.replace(dst + ".tmp", dst)
print(f"{len(rows)} held-out tracks -> {dst}")
PY
fi
if [ ! -f $R/valid-cache/index.csv ]; then
  $S prepare folder --audio $R/corpus --labels $R/valid-labels.csv --split-column split --out $R/valid-cache --workers 2
  $S teach --data $R/valid-cache --teacher both --workers 2
fi
# The fit check: 42 of the training game-music tracks (a fixed draw), labelled by both teachers like the held-out
# ones: how well a student fits music it trained on, beside how it does on music it never heard.
if [ ! -f $R/fit-cache/index.csv ]; then
  .venv/bin/python - "$R" <<'PY'
import csv, os, random, sys
src, dst = f"{sys.argv[1]}/corpus-labels.csv", f"{sys.argv[1]}/fit-labels.csv"
with open(src, newline="") as f:
    reader = csv.DictReader(f)
    rows = [r for r in reader if r["split"] == "train" and not r[reader.fieldnames[0]].startswith("midi/")]
    fields = reader.fieldnames
rows = [dict(r, split="valid") for r in random.Random(0).sample(rows, 42)]  # scored as a "valid" split
with open(dst + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)
os.replace(dst + ".tmp", dst)
print(f"{len(rows)} training tracks for the fit check -> {dst}")
PY
  $S prepare folder --audio $R/corpus --labels $R/fit-labels.csv --split-column split --out $R/fit-cache --workers 2
  $S teach --data $R/fit-cache --teacher both --workers 2
fi
# The game music alone (no MIDI renders), for the ablation's v3-game run.
if [ ! -f $R/game-cache/index.csv ]; then
  .venv/bin/python - "$R" <<'PY'
import csv, os, sys
src, dst = f"{sys.argv[1]}/corpus-labels.csv", f"{sys.argv[1]}/game-labels.csv"
with open(src, newline="") as f:
    reader = csv.DictReader(f)
    rows = [r for r in reader if not r[reader.fieldnames[0]].startswith("midi/")]
    fields = reader.fieldnames
with open(dst + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)
os.replace(dst + ".tmp", dst)
PY
  $S prepare folder --audio $R/corpus --labels $R/game-labels.csv --split-column split --out $R/game-cache --workers 2
fi
[ -f $R/voices/manifest.csv ] || $S corpus voices --out $R/voices
[ -f $R/voices-labels.csv ] || $S teach --make-table $R/voices/manifest.csv $R/voices-labels.csv
[ -f $R/voices-cache/index.csv ] || $S prepare folder --audio $R/voices --labels $R/voices-labels.csv \
    --split-column split --min-seconds 0.5 --out $R/voices-cache --workers 2
echo "v3 data ready in $R"
