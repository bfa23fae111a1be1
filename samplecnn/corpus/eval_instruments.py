"""`samplecnn corpus midi --eval-instruments --out DIR`: clips of one known instrument each, with exact labels.

The student was distilled on game music and renders through fluid-soundfont-gm and timgm6mb-soundfont; these clips
are rendered through csound-soundfont, which no training render uses, from music21 works of the validation share
(corpus midi's split), so neither the instrument samples nor the tunes are ones the student trained on. Each clip is
one General MIDI instrument playing every part of a tune (drums: a drum part on the tune's beat grid, alone) for
10-30 s. labels.csv gives each clip the MTAT tags that are certainly true of it: a violin is `violin` and `strings`,
a choir `choir` (not `vocal`: "aah" samples sing no words, and MTAT's vocal tags mean singing), an organ none (MTAT
has no organ tag: a clip that tests what the model says when no instrument tag applies).
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SampleCNNError
from ..fileio import atomic_path
from . import drums, music21_works, programs, render, soundfonts
from .midi import rng_for, split_of
from .piece import Part, Piece

__all__ = ["INSTRUMENTS", "INSTRUMENT_TAGS", "LABEL_COLUMNS", "build_eval"]

# (name, General MIDI program or None for the drum kit, MTAT tags that are certainly true)
INSTRUMENTS: tuple[tuple[str, int | None, tuple[str, ...]], ...] = (
    ("piano", 0, ("piano",)),
    ("harpsichord", 6, ("harpsichord",)),
    ("nylon guitar", 24, ("guitar",)),
    ("steel guitar", 25, ("guitar",)),
    ("clean electric guitar", 27, ("guitar",)),
    ("distortion guitar", 30, ("guitar",)),
    ("violin", 40, ("violin", "strings")),
    ("cello", 42, ("cello", "strings")),
    ("harp", 46, ("harp",)),
    ("string ensemble", 48, ("strings",)),
    ("choir", 52, ("choir",)),
    ("flute", 73, ("flute",)),
    ("sitar", 104, ("sitar",)),
    ("drums", None, ("drums",)),
    ("synth lead", 81, ("synth",)),
    ("synth pad", 89, ("synth",)),
    ("church organ", 19, ()),
)
# the MTAT tags the evaluation ranks: every tag some clip above has
INSTRUMENT_TAGS: tuple[str, ...] = tuple(dict.fromkeys(t for _, _, tags in INSTRUMENTS for t in tags))
LABEL_COLUMNS = ["path", "instrument", "program", "tags", "duration", "soundfont", "original_path", "title",
                 "licence", "terms", "copyright"]
_DRUM_KIT = 0


def _clip(piece: Piece, program: int | None, rng: np.random.Generator, seconds: float):
    """(piece, voices) for one instrument: every melodic part on `program`, or a drum part alone."""
    piece = piece.cut(seconds)
    if program is None:
        hits = drums.pattern(rng, piece.beats, piece.beats_per_bar, seconds)
        return Piece([Part("drums", hits, is_drum=True)], piece.beats, piece.beats_per_bar), \
            [render.Voice(_DRUM_KIT, True)]
    parts = [p for p in piece.parts if not p.is_drum]
    voices = [render.Voice(program, False, programs.octave_shift(p.median_pitch(), program), 1.0) for p in parts]
    return Piece(parts, piece.beats, piece.beats_per_bar), voices


def build_eval(out: str | Path, clips_per_instrument: int = 9, seed: int = 0, force: bool = False,
               progress: bool = True, log: Callable[[str], None] = print,
               works: list[music21_works.Work] | None = None) -> list[dict]:
    """Render the set into out/audio/ and write out/labels.csv (last, atomically); returns its rows."""
    from tqdm import tqdm

    out = Path(out)
    labels = out / "labels.csv"
    if labels.exists() and not force:
        raise SampleCNNError("already holds an evaluation set (pass --force to render it again)", out)
    if not labels.exists() and (out / "audio").is_dir() and any((out / "audio").iterdir()):
        raise SampleCNNError("holds an audio/ folder that is not an evaluation set's (a corpus?): give --out a "
                             "folder of its own", out)
    if clips_per_instrument < 1:
        raise SampleCNNError(f"--clips must be at least 1, got {clips_per_instrument}")
    sf = soundfonts.EVALUATION[0]
    soundfonts.require((sf,))
    if works is None:
        works = [w for w in music21_works.works("free") if split_of(w.group) == "valid"]
    pool = sorted(works, key=lambda w: music21_works.stable_fraction(f"eval:{seed}:{w.id}"))
    if not pool:
        raise SampleCNNError("no music21 works in the validation share to play")
    shutil.rmtree(out / "audio", ignore_errors=True)
    rows, failures, next_work = [], [], 0
    total = clips_per_instrument * len(INSTRUMENTS)
    start = time.monotonic()
    with tqdm(total=total, unit="clip", disable=not progress) as bar:
        for k in range(clips_per_instrument):
            for name, program, tags in INSTRUMENTS:
                clip_id = f"{k:02d}-{name.replace(' ', '-')}"
                rng = rng_for(seed, "eval:" + clip_id)
                for _attempt in range(len(pool)):
                    w = pool[next_work % len(pool)]
                    next_work += 1
                    try:
                        piece = music21_works.load(w)
                    except SampleCNNError as e:
                        failures.append(f"{w.id}: {e.reason}")
                        continue
                    if piece.end < 10.0:
                        continue
                    seconds = float(rng.uniform(10.0, min(30.0, piece.end)))
                    clip, voices = _clip(piece, program, rng, seconds)
                    audio = render.render(clip, voices, sf)[: int(seconds * render.SAMPLE_RATE)]
                    if render.is_silent(audio) or len(audio) < 10 * render.SAMPLE_RATE:
                        continue
                    path = f"audio/{clip_id}.flac"
                    render.write_flac(out / path, render.finish(audio, 0.7))
                    rows.append({"path": path, "instrument": name, "program": "drums" if program is None
                                 else program, "tags": ";".join(tags), "duration": round(len(audio) /
                                 render.SAMPLE_RATE, 3), "soundfont": sf.package, "original_path": w.id,
                                 "title": w.title, "licence": w.licence, "terms": w.terms, "copyright": w.copyright})
                    break
                else:
                    raise SampleCNNError(f"no work long enough left for the clip {clip_id}")
                bar.update(1)
    with atomic_path(labels, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, LABEL_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    seconds = sum(r["duration"] for r in rows)
    log(f"wrote {labels}: {len(rows)} clips, {seconds / 60:.1f} min of audio through {sf.package} "
        f"in {time.monotonic() - start:.0f} s; instrument tags: {', '.join(INSTRUMENT_TAGS)}")
    for line in failures:
        log(f"  skipped {line}")
    return rows
