"""The recipe: `samplecnn corpus midi --out DIR` renders symbolic music to DIR/audio/ and writes DIR/manifest.csv.

What is rendered, in order (docs/corpus.md): the ten MIDI files of planetblupi-music-midi, once with each training
soundfont; then music21's works whose terms --terms allows, in an order fixed by --seed (each work's place depends on
the seed and the work alone, so --terms noncommercial keeps every render of --terms free and adds more), a second
pass with fresh instruments if one pass is not enough, until --hours of audio are rendered. Every render is capped at
--max-seconds, drawn from one generator seeded by (--seed, its id), and written as 22050 Hz mono FLAC; a record in
DIR/records/ then marks it done, so a rerun renders only what is missing. excluded.csv and then manifest.csv are
written last, atomically, from the records.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import SampleCNNError
from ..fileio import atomic_path
from . import arrange as arranging
from . import midi_files, music21_works, render, soundfonts
from .manifest import write_csv
from .piece import Piece
from .probe import file_sha256, probe

__all__ = ["RECIPE_VERSION", "MANIFEST_COLUMNS", "EXCLUDED_COLUMNS", "SOURCES", "VALID_SHARE", "Item", "Summary",
           "build", "split_of", "rng_for"]

RECIPE_VERSION = 1     # bump when a code change alters what a render yields: records of older runs are redone
SOURCES = ("planetblupi", "music21")
VALID_SHARE = 0.05     # of music21's works (by group: a quartet's movements stay together); planetblupi: all train
MAX_PASSES = 4         # renders of one work, each with other instruments, when the corpus is asked for more hours

# the Debian corpus' columns where they apply, then what a render adds
MANIFEST_COLUMNS = ["path", "package", "version", "original_path", "duration", "sample_rate", "channels", "codec",
                    "content_hash", "file_sha256", "licence", "licence_files", "copyright", "split", "terms",
                    "title", "soundfont", "soundfont_licence", "programs", "instruments", "drums", "seed", "variant"]
EXCLUDED_COLUMNS = ["package", "original_path", "variant", "reason", "detail"]


@dataclass(frozen=True)
class Item:
    """One planned render."""
    id: str                 # source id + variant: what seeds the render's draws
    path: str               # relative to DIR
    package: str
    version: str
    original_path: str
    title: str
    licence: str
    licence_files: str
    copyright: str
    terms: str
    split: str
    variant: int
    load: Callable[[], Piece]
    soundfont: soundfonts.Soundfont | None = None   # fixed, or None: drawn
    solo: bool = False                              # one part alone (arrange.solo)


@dataclass
class Summary:
    rows: list[dict]
    excluded: list[dict]
    failures: list[tuple[str, str]] = field(default_factory=list)   # (what, reason): a line each
    rendered: int = 0
    reused: int = 0
    render_seconds: float = 0.0    # wall time of this run's renders
    audio_seconds: float = 0.0     # audio they produced

    def hours(self, key: str | None = None, value: str | None = None) -> float:
        return sum(float(r["duration"]) for r in self.rows if key is None or r[key] == value) / 3600

    def lines(self) -> list[str]:
        out = []
        for key in ("package", "licence", "terms", "soundfont", "split"):
            counts = Counter(r[key] for r in self.rows)
            out.append(f"{key}: " + ", ".join(f"{v} {self.hours(key, v):.2f} h ({n})" for v, n in
                                             counts.most_common()))
        progs = Counter(name for r in self.rows for name in r["instruments"].split(";") if name)
        out.append("instruments (renders): " + ", ".join(f"{k} {n}" for k, n in progs.most_common(16)))
        drums = Counter(r["drums"] or "none" for r in self.rows)
        out.append("drums: " + ", ".join(f"{k} {n}" for k, n in drums.most_common()))
        reasons = Counter(e["reason"] for e in self.excluded)
        out.append("left out (excluded.csv): " + (", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"))
        speed = f", {self.audio_seconds / self.render_seconds:.0f}x real time" if self.render_seconds else ""
        out.append(f"total {len(self.rows)} renders, {self.hours():.2f} h; this run rendered {self.rendered} "
                   f"({self.audio_seconds / 3600:.2f} h{speed}), reused {self.reused}")
        return out


def split_of(group: str) -> str:
    return "valid" if music21_works.stable_fraction("split:" + group) < VALID_SHARE else "train"


def rng_for(seed: int, item_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _planetblupi_items(files: list[midi_files.MidiFile]) -> Iterator[Item]:
    for sf_index, sf in enumerate(soundfonts.TRAINING):
        for f in files:
            yield Item(f"{f.id}@{sf.package}", f"audio/{f.package}/{f.slug}-{sf.package}.flac", f.package,
                       f.version, f.original_path, f.slug, f.licence, f.licence_files, f.copyright, "free", "train",
                       sf_index, lambda f=f: midi_files.load(f.path, f.id), sf)


def _music21_items(works: list[music21_works.Work], seed: int) -> Iterator[Item]:
    version = music21_works.version()
    for variant in range(MAX_PASSES):
        order = sorted(works, key=lambda w: music21_works.stable_fraction(f"{seed}:{variant}:{w.id}"))
        for w in order:
            yield Item(f"music21/{w.id}@{variant}", f"audio/music21/{w.slug}-v{variant}.flac", "music21", version,
                       w.id, w.title, w.licence, w.licence_from if w.licence_from == "file"
                       else f"collection:{w.collection}", w.copyright, w.terms, split_of(w.group), variant,
                       lambda w=w: music21_works.load(w))


def _fingerprint(item: Item, seed: int, max_seconds: float, min_seconds: float) -> str:
    text = json.dumps({"recipe": RECIPE_VERSION, "id": item.id, "seed": seed, "max": max_seconds,
                       "min": min_seconds, "path": item.path}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record_path(out: Path, item: Item) -> Path:
    return out / "records" / (hashlib.sha256(item.id.encode()).hexdigest()[:20] + ".json")


def _render_item(out: Path, item: Item, seed: int, max_seconds: float, min_seconds: float) -> dict:
    """Render one item; returns its record ({"row": ...} or {"excluded": ...})."""
    rng = rng_for(seed, item.id)
    sf = item.soundfont or soundfonts.TRAINING[int(rng.integers(0, len(soundfonts.TRAINING)))]
    piece = item.load().cut(max_seconds)
    excluded = {"package": item.package, "original_path": item.original_path, "variant": item.variant}
    if not piece.parts:
        return {"excluded": {**excluded, "reason": "no notes", "detail": ""}}
    arr = (arranging.solo if item.solo else arranging.arrange)(piece, rng)
    audio = render.render(arr.piece, arr.voices, sf)
    if render.is_silent(audio):
        return {"excluded": {**excluded, "reason": "silent", "detail": sf.package}}
    audio = audio[: int(max_seconds * render.SAMPLE_RATE)]
    seconds = len(audio) / render.SAMPLE_RATE
    if seconds < min_seconds:
        return {"excluded": {**excluded, "reason": "too short", "detail": f"{seconds:.1f} s"}}
    dest = out / item.path
    render.write_flac(dest, render.finish(audio, float(rng.uniform(0.3, 0.9))))
    info = probe(dest)
    progs, names = arranging.describe(arr.voices)
    row = {"path": item.path, "package": item.package, "version": item.version,
           "original_path": item.original_path, "duration": round(info.duration, 3),
           "sample_rate": info.sample_rate, "channels": info.channels, "codec": info.codec,
           "content_hash": info.content_hash, "file_sha256": file_sha256(dest), "licence": item.licence,
           "licence_files": item.licence_files, "copyright": item.copyright, "split": item.split,
           "terms": item.terms, "title": item.title, "soundfont": sf.package, "soundfont_licence": sf.licence,
           "programs": progs, "instruments": names, "drums": arr.drums, "seed": seed, "variant": item.variant}
    return {"row": row}


def _plan(out: Path, sources: tuple[str, ...], terms: str, seed: int, debs, force: bool,
          log: Callable[[str], None]) -> Iterator[Item]:
    if "planetblupi" in sources:
        files = midi_files.fetch(out, debs=debs, force=force)
        log(f"{midi_files.PACKAGE} {files[0].version}: {len(files)} MIDI files "
            f"({', '.join(sorted({f.licence for f in files}))})")
        yield from _planetblupi_items(files)
    if "music21" in sources:
        works = music21_works.works(terms)
        by_terms = Counter(w.terms for w in works)
        log(f"music21 {music21_works.version()}: {len(works)} works allowed by --terms {terms} "
            f"({', '.join(f'{k} {n}' for k, n in by_terms.most_common())})")
        yield from _music21_items(works, seed)


def _refuse_other_manifest(path: Path) -> None:
    """Never overwrite another corpus' manifest (the Debian one, when --out is its folder rather than a subfolder)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as e:
        raise SampleCNNError(f"exists and cannot be read ({e})", path) from None
    if header != MANIFEST_COLUMNS:
        raise SampleCNNError("belongs to another corpus (not `corpus midi`'s columns): give --out a folder of its "
                             "own, e.g. corpus/midi", path)


def build(out: str | os.PathLike, hours: float = 10.0, seed: int = 0, terms: str = "free",
          sources: tuple[str, ...] | list[str] = SOURCES, max_seconds: float = 180.0, min_seconds: float = 10.0,
          debs: str | os.PathLike | None = None, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, items: Iterator[Item] | None = None, solo: bool = False) -> Summary:
    """Render until `hours` of audio are in DIR (or the sources run out), reusing finished renders; returns the
    summary. `items` replaces the planned sources (tests). With `solo`, every render is one part of its piece alone
    (arrange.solo), under ids and file names of its own, so a solo corpus never reuses an ensemble render's draws.
    A source that cannot be read is one failure line, and the run goes on."""
    from tqdm import tqdm

    if not hours > 0:
        raise SampleCNNError(f"--hours must be positive, got {hours}")
    if not (max_seconds > 0 and 0 <= min_seconds <= max_seconds):
        raise SampleCNNError(f"need 0 <= --min-seconds <= --max-seconds and --max-seconds > 0, got {min_seconds} "
                             f"and {max_seconds}")
    music21_works.terms_allowed(terms)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise SampleCNNError(f"unknown source(s) {', '.join(unknown)}: choose from {', '.join(SOURCES)}")
    soundfonts.require(soundfonts.TRAINING)
    out = Path(out)
    _refuse_other_manifest(out / "manifest.csv")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-midi-*"):
        shutil.rmtree(stale, ignore_errors=True)
    say = tqdm.write if progress else log
    plan = items if items is not None else _plan(out, tuple(sources), terms, seed, debs, force, say)
    if solo:
        plan = (replace(i, id=f"solo/{i.id}", path=i.path.removesuffix(".flac") + "-solo.flac", solo=True)
                for i in plan)
    summary = Summary([], [])
    budget = hours * 3600
    done = 0.0
    bar = tqdm(total=round(budget), unit="s", desc="rendered audio", disable=not progress, dynamic_ncols=True)
    try:
        for item in plan:
            if done >= budget:
                break
            fp = _fingerprint(item, seed, max_seconds, min_seconds)
            rec_path = _record_path(out, item)
            record = None
            if not force:
                try:
                    record = json.loads(rec_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    record = None
                if record is not None and (record.get("fingerprint") != fp or
                                           ("row" in record and not (out / item.path).is_file())):
                    record = None
            if record is None:
                bar.set_postfix_str(item.original_path[-40:])
                start = time.monotonic()
                try:
                    record = _render_item(out, item, seed, max_seconds, min_seconds)
                except SampleCNNError as e:
                    summary.failures.append((item.original_path, e.reason if e.path else str(e)))
                    continue
                summary.render_seconds += time.monotonic() - start
                record = {"id": item.id, "fingerprint": fp, **record}
                with atomic_path(rec_path, overwrite=True) as tmp:
                    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
                summary.rendered += 1
                if "row" in record:
                    summary.audio_seconds += float(record["row"]["duration"])
            else:
                summary.reused += 1
            if "row" in record:
                summary.rows.append(record["row"])
                done += float(record["row"]["duration"])
                bar.update(min(round(float(record["row"]["duration"])), max(0, round(budget) - bar.n)))
            else:
                summary.excluded.append(record["excluded"])
    finally:
        bar.close()
    write_csv(out / "excluded.csv", EXCLUDED_COLUMNS, summary.excluded)
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, summary.rows)
    return summary
