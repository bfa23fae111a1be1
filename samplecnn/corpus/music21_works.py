"""music21's corpus as a source of symbolic music: which works there are, under which terms, and their notes.

The music21 code is BSD, but its corpus/license.txt says the encodings are distributed "with the permission of the
encoders" and that some "may not be used for commercial uses or have other restrictions: please see the licenses
embedded in individual compositions or directories". So each work's terms are decided here, first by the statement
embedded in the file (a MusicXML <rights> or Humdrum !!!YEC record, read from music21's metadata cache), then by its
collection's (COLLECTIONS, checked by hand against music21 10.5's files; docs/corpus.md):

- free: a free licence or the public domain is stated (CC0, CC-BY, CC-BY-SA, GPL);
- unstated: no terms are stated anywhere; the tunes and pieces are centuries old, the encodings are distributed
  with music21 by their encoders' permission (Ryan's Mammoth, O'Neill's, Aird's Airs, the Bach chorales, the
  quartets...);
- non-commercial: the Essen folk song collection (its license.txt: permission for non-commercial use);
- all-rights-reserved: Palestrina (Copyright 2000 John Miller, "Rights to all derivative electronic formats
  reserved", licence agreement required), three CCARH Humdrum chorales (the same wording), one lead sheet, and six
  Monteverdi entries that carry a publisher's notice (UT Orpheus Edizioni 2003).

`samplecnn corpus midi --terms free` (the default) renders free and unstated works; `noncommercial` adds Essen;
`all` adds the works whose rights are reserved.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import SampleCNNError
from .piece import Part, Piece

__all__ = ["COLLECTIONS", "TERMS", "Work", "works", "load", "to_piece", "terms_allowed", "version", "stable_fraction"]

TERMS = ("free", "unstated", "non-commercial", "all-rights-reserved")
_ALLOWED = {"free": {"free", "unstated"}, "noncommercial": {"free", "unstated", "non-commercial"},
            "all": set(TERMS)}

# collection -> (licence, terms, copyright): used when the file itself states nothing
COLLECTIONS: dict[str, tuple[str, str, str]] = {
    "essenFolksong": ("non-commercial", "non-commercial",
                      "Helmut Schaffrath, Ewa Dahlig-Turek (EsAC); ABC by Seymour Schlien"),
    "palestrina": ("all-rights-reserved", "all-rights-reserved", "2000 John Miller"),
    "josquin": ("GPL-2+", "free", "1999 Laura E. Conrad"),
}
_UNSTATED = ("unstated", "unstated", "")

# embedded statements, in order: the first pattern that matches decides
_EMBEDDED: tuple[tuple[str, str, str], ...] = (
    (r"all rights reserved|rights to all derivative|ut orpheus|center for computer assisted research",
     "all-rights-reserved", "all-rights-reserved"),
    (r"\bcc0\b", "CC0", "free"),
    (r"cc-by-sa 3\.0", "CC-BY-SA-3.0", "free"),
    (r"cc-by-sa|cc-sa-by", "CC-BY-SA", "free"),
    (r"cc-by\b", "CC-BY", "free"),
    (r"public domain", "public-domain", "free"),
)


@dataclass(frozen=True)
class Work:
    corpus_path: str        # relative to music21's corpus folder, e.g. ryansMammoth/7thRegimentReel.abc
    number: int | None      # the tune's number inside a multi-tune ABC file
    title: str
    licence: str
    terms: str
    copyright: str
    licence_from: str       # "file" (an embedded statement) or "collection"

    @property
    def collection(self) -> str:
        return self.corpus_path.split("/", 1)[0]

    @property
    def id(self) -> str:
        return self.corpus_path + (f"#{self.number}" if self.number is not None else "")

    @property
    def group(self) -> str:
        """Works that must fall on one side of the split: the movements of one quartet share a folder."""
        parts = self.corpus_path.split("/")
        return "/".join(parts[:-1]) if len(parts) > 2 else self.id

    @property
    def slug(self) -> str:
        """A file name for this work's renders: the corpus path without its extension, unless another file of the
        corpus has the same stem (Monteverdi's madrigals come as .mxl and as .rntxt): then with it."""
        stem = _stem(self.corpus_path)
        if stem in _shared_stems():
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", self.corpus_path.replace(".", "_"))
        return stem + (f"-n{self.number}" if self.number is not None else "")


def _stem(corpus_path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", corpus_path.rsplit(".", 1)[0])


@functools.lru_cache(maxsize=1)
def _shared_stems() -> frozenset[str]:
    """Stems that more than one file of the whole corpus (whatever --terms allows) has."""
    paths = {w.corpus_path for w in _all_works()}
    counts = collections.Counter(_stem(p) for p in paths)
    return frozenset(stem for stem, n in counts.items() if n > 1)


def version() -> str:
    import music21
    return str(music21.__version__)


def _terms_of(collection: str, embedded: str) -> tuple[str, str, str, str]:
    text = embedded.lower()
    for pattern, licence, terms in _EMBEDDED:
        if re.search(pattern, text):
            return licence, terms, embedded, "file"
    licence, terms, holder = COLLECTIONS.get(collection, _UNSTATED)
    return licence, terms, holder or embedded, "collection"


def terms_allowed(option: str) -> set[str]:
    try:
        return _ALLOWED[option]
    except KeyError:
        raise SampleCNNError(f"--terms must be one of {', '.join(_ALLOWED)}, got {option!r}") from None


def works(terms: str = "free") -> list[Work]:
    """Every work of music21's core corpus whose terms `terms` allows, in corpus-path order (one entry per tune of
    a multi-tune ABC file). Reads music21's metadata cache (about 3 s, once per process), never the scores."""
    allowed = terms_allowed(terms)
    return [w for w in _all_works() if w.terms in allowed]


@functools.lru_cache(maxsize=1)
def _all_works() -> tuple[Work, ...]:
    from music21 import corpus

    out: dict[str, Work] = {}
    # bundle[:] takes the entries in one step: iterating the bundle indexes it entry by entry, which copies its
    # whole list each time (15,000 entries: 20 s instead of 0.1 s)
    for entry in corpus.corpora.CoreCorpus().metadataBundle[:]:
        meta = entry.metadata
        if meta is None:
            continue
        path = str(entry.sourcePath).replace("\\", "/")
        copyright_text = " ".join(str(meta.copyright or "").split())
        licence, term, holder, source = _terms_of(path.split("/", 1)[0], copyright_text)
        number = int(entry.number) if entry.number is not None else None
        title = " ".join(str(meta.title or meta.movementName or "").split())
        w = Work(path, number, title, licence, term, holder, source)
        out.setdefault(w.id, w)
    return tuple(out[k] for k in sorted(out))


def _seconds_map(score) -> Callable[[float], float]:
    """Quarter-length offset -> seconds, following the score's metronome marks (120 per quarter where none)."""
    bounds = []
    for start, end, mark in score.metronomeMarkBoundaries():
        if end <= start:
            continue
        qpm = mark.getQuarterBPM() if mark is not None else None
        bounds.append((float(start), float(end), float(qpm) if qpm and qpm > 0 else 120.0))
    if not bounds:
        bounds = [(0.0, float("inf"), 120.0)]
    starts = np.array([b[0] for b in bounds])
    rates = np.array([60.0 / b[2] for b in bounds])
    seconds_at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])

    def to_seconds(ql: float) -> float:
        i = max(0, int(np.searchsorted(starts, ql, side="right")) - 1)
        return float(seconds_at[i] + (ql - starts[i]) * rates[i])

    return to_seconds


def _velocity(el) -> int | None:
    v = getattr(getattr(el, "volume", None), "velocity", None)
    return int(np.clip(v, 1, 127)) if v else None


def to_piece(score, default_velocity: int = 90) -> Piece:
    """The notes of a music21 Score (ties joined, grace notes left out) in seconds, with its beat grid."""
    from music21 import meter

    to_s = _seconds_map(score)
    parts = []
    for i, part in enumerate(score.parts or [score]):
        notes: list[list] = []
        open_ties: dict[int, int] = {}
        for el in part.flatten().notes:
            ql = float(el.duration.quarterLength)
            if ql <= 0 or el.duration.isGrace:
                continue
            start, end = float(el.offset), float(el.offset) + ql
            tie = el.tie.type if el.tie is not None else None
            for p in el.pitches:
                k = int(p.midi)
                if tie in ("stop", "continue") and k in open_ties:
                    notes[open_ties[k]][1] = end
                    if tie == "stop":
                        del open_ties[k]
                    continue
                notes.append([start, end, k, _velocity(el) or default_velocity])
                if tie == "start":
                    open_ties[k] = len(notes) - 1
        if notes:
            timed = [(to_s(s), to_s(e), k, v) for s, e, k, v in notes if 0 <= k <= 127]
            parts.append(Part(str(part.partName or f"part {i + 1}"), timed))
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    beat_ql = float(ts.beatDuration.quarterLength) if ts is not None else 1.0
    per_bar = int(ts.beatCount) if ts is not None else 4
    total = float(score.highestTime)
    beats = np.array([to_s(q) for q in np.arange(0.0, total, beat_ql if beat_ql > 0 else 1.0)])
    return Piece(parts, beats, max(1, per_bar))


def load(work: Work) -> Piece:
    """Parse one work (music21 reads the source file; no pickle is written) and convert it."""
    from music21 import corpus, stream

    try:
        score = corpus.parse(work.corpus_path, number=work.number, forceSource=True)
        if isinstance(score, stream.Opus):
            scores = list(score.scores)
            if not scores:
                raise SampleCNNError("is an empty collection of scores", work.id)
            score = scores[0]
        return to_piece(score)
    except SampleCNNError:
        raise
    except Exception as e:  # music21 raises many kinds for a file it cannot read or convert
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise SampleCNNError(f"music21 cannot read it ({type(e).__name__}{': ' + reason if reason else ''})",
                             work.id) from None


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone (not by Python's hash seed): splits and draws that never change."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(1 << 48)
