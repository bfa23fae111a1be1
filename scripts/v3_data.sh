#!/usr/bin/env bash
# Build the v3 long run's data under runs/ (50-100 minutes on 2 cores; 100 on the AMD EPYC of 2026-12-04): the
# Debian corpus, 10 h of MIDI renders, 4 h of solo renders, the csound-soundfont instrument set, the voices, their
# teacher tables and the training/validation caches.
# Each step is skipped when its output exists, so a rerun after an interruption does only what is left.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/samplecnn
R=runs
mkdir -p $R
[ -f $R/corpus/manifest.csv ] || $S corpus debian --out $R/corpus
command -v fluidsynth >/dev/null || bash scripts/install-fluidsynth.sh
[ -f $R/corpus/midi/manifest.csv ] || $S corpus midi --out $R/corpus/midi --hours 10
[ -f $R/eval-instruments/labels.csv ] || $S corpus midi --out $R/eval-instruments --eval-instruments
[ -f $R/corpus-labels.csv ] || $S teach --make-table $R/corpus/manifest.csv $R/corpus/midi/manifest.csv \
    $R/corpus-labels.csv
[ -f $R/corpus-cache/index.csv ] || $S prepare folder --audio $R/corpus --labels $R/corpus-labels.csv \
    --split-column split --out $R/corpus-cache --workers 2
# subset SPLIT DST [N]: the game-music rows (no MIDI renders) of corpus-labels.csv in SPLIT (or "any") -> DST,
# atomically; with N, a fixed draw of N of them relabelled "valid", so that `evaluate --split valid` scores them.
# RENDERS=1 subset ...: the MIDI ensemble renders' rows instead.
subset() {
  RENDERS=${RENDERS:-0} .venv/bin/python - "$R/corpus-labels.csv" "$@" <<'PY'
import csv, os, random, sys
src, split, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], (int(sys.argv[4]) if len(sys.argv) > 4 else None)
renders = os.environ["RENDERS"] == "1"
with open(src, newline="") as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames
    rows = [r for r in reader if split in ("any", r["split"]) and r[fields[0]].startswith("midi/") == renders]
if n is not None:
    rows = [dict(r, split="valid") for r in random.Random(0).sample(rows, n)]
with open(dst + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)
os.replace(dst + ".tmp", dst)
print(f"{len(rows)} tracks -> {dst}")
PY
}
# Validation: the held-out packages only (the valid split without the MIDI renders), labelled by both teachers.
[ -f $R/valid-labels.csv ] || subset valid $R/valid-labels.csv
if [ ! -f $R/valid-cache/index.csv ]; then
  $S prepare folder --audio $R/corpus --labels $R/valid-labels.csv --split-column split --out $R/valid-cache --workers 2
  $S teach --data $R/valid-cache --teacher both --workers 2
fi
# The fit check: 42 of the training game-music tracks (a fixed draw), labelled by both teachers like the held-out
# ones: how well a student fits music it trained on, beside how it does on music it never heard.
if [ ! -f $R/fit-cache/index.csv ]; then
  subset train $R/fit-labels.csv 42
  $S prepare folder --audio $R/corpus --labels $R/fit-labels.csv --split-column split --out $R/fit-cache --workers 2
  $S teach --data $R/fit-cache --teacher both --workers 2
fi
# The game music alone (no MIDI renders): the long run's training data.
if [ ! -f $R/game-cache/index.csv ]; then
  subset any $R/game-labels.csv
  $S prepare folder --audio $R/corpus --labels $R/game-labels.csv --split-column split --out $R/game-cache --workers 2
fi
# Its teacher labels, one window every third of a segment (0.89 s; ~78,000 windows, 25-47 min on 2 cores; resumable):
# the long run's views labelled ahead, so that a training step costs the student's work alone.
[ -f $R/game-cache/teacher/meta.json ] || $S teach --data $R/game-cache --teacher both --workers 2 --labels-per-segment 3
# Solo renders (one part alone: a drum kit or one instrument; 4 h) with their own labels ahead: `train --extra-data`
# mixes them into a share of the long run's rows, for the exposed instruments that game music seldom has.
[ -f $R/corpus/midi-solo/manifest.csv ] || $S corpus midi --solo --out $R/corpus/midi-solo --hours 4
[ -f $R/solo-labels.csv ] || $S teach --make-table $R/corpus/midi-solo/manifest.csv $R/solo-labels.csv
[ -f $R/solo-cache/index.csv ] || $S prepare folder --audio $R/corpus/midi-solo --labels $R/solo-labels.csv \
    --split-column split --out $R/solo-cache --workers 2
[ -f $R/solo-cache/teacher/meta.json ] || $S teach --data $R/solo-cache --teacher both --workers 2 --labels-per-segment 3
[ -f $R/voices/manifest.csv ] || $S corpus voices --out $R/voices
[ -f $R/voices-labels.csv ] || $S teach --make-table $R/voices/manifest.csv $R/voices-labels.csv
[ -f $R/voices-cache/index.csv ] || $S prepare folder --audio $R/voices --labels $R/voices-labels.csv \
    --split-column split --min-seconds 0.5 --out $R/voices-cache --workers 2
# WITH_RENDERS=1: also the ensemble MIDI renders (10 h, every part together) with their own labels ahead, like the
# solo renders: a second --extra-data source (the `renders` run of scripts/v3_next_ablation.sh; about half an hour
# of teacher labels more).
if [ "${WITH_RENDERS:-0}" = 1 ]; then
  if [ ! -f $R/midi-cache/index.csv ]; then
    RENDERS=1 subset any $R/midi-labels.csv
    $S prepare folder --audio $R/corpus --labels $R/midi-labels.csv --split-column split --out $R/midi-cache --workers 2
  fi
  [ -f $R/midi-cache/teacher/meta.json ] || $S teach --data $R/midi-cache --teacher both --workers 2 \
      --labels-per-segment 3
fi
echo "v3 data ready in $R"
