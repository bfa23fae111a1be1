"""MIDI files from Debian: planetblupi-music-midi, the one music package whose MIDI the training renders use.

It holds the General MIDI originals of Planet Blupi's ten tunes (GPL-3+ per its debian/copyright, like
planetblupi-music-ogg, whose recordings are already in the Debian corpus and in its train split; so are these
renders). The .deb is fetched and unpacked the way `corpus debian` does it (apt-get download, dpkg-deb -x, no
root); only the MIDI files are kept, under DIR/midi/<package>/, with a record of the version and licences.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SampleCNNError
from ..fileio import atomic_path
from . import debs as debtools
from . import dep5
from .piece import Part, Piece

__all__ = ["PACKAGE", "MidiFile", "fetch", "load"]

PACKAGE = "planetblupi-music-midi"
_MUSIC = "usr/share/planetblupi/music/"


@dataclass(frozen=True)
class MidiFile:
    path: Path              # on disk, under DIR/midi/<package>/
    original_path: str      # inside the package
    package: str
    version: str
    licence: str
    licence_files: str
    copyright: str

    @property
    def id(self) -> str:
        return f"{self.package}/{self.original_path}"

    @property
    def slug(self) -> str:
        return Path(self.original_path).stem


def fetch(out: Path, debs: str | os.PathLike | None = None, force: bool = False) -> list[MidiFile]:
    """The package's MIDI files under out/midi/<package>/ (fetched once; a record makes reruns instant)."""
    folder, record_path = out / "midi" / PACKAGE, out / "midi" / f"{PACKAGE}.json"
    record = None
    if not force and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
    if record is None or not all((folder / f["original_path"]).is_file() for f in record["files"]):
        record = _extract(out, folder, debs)
        with atomic_path(record_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return [MidiFile(folder / f["original_path"], f["original_path"], PACKAGE, record["version"], f["licence"],
                     f["licence_files"], f["copyright"]) for f in record["files"]]


def _extract(out: Path, folder: Path, debs: str | os.PathLike | None) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-midi-", dir=out) as tmp:
        tmp = Path(tmp)
        if debs is not None:
            found, _ = debtools.local_debs(debs, [PACKAGE])
            deb = found[PACKAGE][0]
        else:
            deb = debtools.download(PACKAGE, tmp)
        name, version = debtools.fields(deb)
        if name != PACKAGE:
            raise SampleCNNError(f"holds package {name!r}, not {PACKAGE!r}", deb)
        root = tmp / "root"
        debtools.extract(deb, root)
        copyright = dep5.read(root / "usr/share/doc" / PACKAGE / "copyright")
        files = []
        for src in sorted((root / _MUSIC).glob("*")):
            if src.suffix.lower() not in (".mid", ".midi") or src.is_symlink() or not src.is_file():
                continue
            original = str(src.relative_to(root))
            lic = copyright.licence_for(original) if copyright else dep5.UNKNOWN
            dest = folder / original
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            files.append({"original_path": original, "licence": lic.name, "licence_files": lic.files,
                          "copyright": lic.copyright})
    if not files:
        raise SampleCNNError(f"holds no MIDI files under {_MUSIC}", deb)
    return {"package": PACKAGE, "version": version, "files": files}


def load(path: str | os.PathLike, label: str | None = None) -> Piece:
    """A Standard MIDI File as a Piece (pretty_midi's reading: tempo map, notes per track and channel)."""
    import pretty_midi

    label = label or str(path)
    try:
        with warnings.catch_warnings():   # "tempo changes on non-zero tracks" and the like: harmless here
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # mido and pretty_midi raise many kinds (EOFError, OSError, ValueError, KeySignatureError)
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise SampleCNNError(f"is not a readable MIDI file ({reason})", label) from None
    parts = [Part(inst.name or pretty_midi.program_to_instrument_name(inst.program),
                  [(float(n.start), float(n.end), int(n.pitch), int(n.velocity))
                   for n in inst.notes if n.end > n.start],
                  bool(inst.is_drum), int(inst.program)) for inst in pm.instruments]
    parts = [p for p in parts if p.notes]
    if not parts:
        raise SampleCNNError("has no notes", label)
    beats = np.asarray(pm.get_beats(), dtype=float)
    per_bar = 4
    if pm.time_signature_changes:
        per_bar = max(1, int(pm.time_signature_changes[0].numerator))
    return Piece(parts, beats, per_bar)
