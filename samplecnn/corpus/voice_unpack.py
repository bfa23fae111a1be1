"""One extracted package -> its voice clips as 22050 Hz mono FLAC, and a record of what was kept, left out and why.

The package's tree (from dpkg-deb -x) is walked once, without following links. A file whose path the source calls
voice is decoded (voice_decode) and kept when it decodes, is not silent, lasts at least `min_seconds`, and no
earlier file of the package has the same bytes or the same decoded audio (Tux Paint reuses one description for
every colour of a stamp). Other audio files are listed as left out but never decoded. Clips are stored resampled,
not byte for byte: training mixes them at 22050 Hz, and G.722 has no container a reader would recognise.

A bad file costs only itself: it is listed with its reason, one line is printed, and the package goes on.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable
from pathlib import Path

import av.error

from ..audio import AUDIO_EXTENSIONS
from ..errors import AudioError, SampleCNNError
from . import dep5
from .probe import file_sha256
from .voice_decode import decode, write_flac
from .voice_sources import Source

__all__ = ["licence_of", "unpack"]

_AUDIO = AUDIO_EXTENSIONS | {".g722"}


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _AUDIO


def licence_of(root: Path, package: str, source: Source) -> Callable[[str], dep5.Licence]:
    """path in the package -> its licence, from the package's debian/copyright (DEP-5; or the source's hand-read
    fallback for a free-text file, taken only while that file still says what was read)."""
    path = root / "usr/share/doc" / package / "copyright"
    parsed = dep5.read(path)
    if parsed is not None:
        return lambda original: parsed.licence_for(source.source_path(original))
    if source.fallback and path.is_file() and not path.is_symlink():
        name, holders, phrase = source.fallback
        if phrase in path.read_text(encoding="utf-8", errors="replace"):
            found = dep5.Licence(name, "(not machine-readable: read by hand)", holders)
            return lambda original: found
    return lambda original: dep5.UNKNOWN


def _walk(root: Path, source: Source) -> tuple[list[tuple[str, Path]], list[tuple[str, str, str]]]:
    """(voice files as (path in package, file), left-out rows as (path, reason, detail)), in path order."""
    voice, left_out = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if not _is_audio(name):
                continue
            if not source.is_voice(rel):
                left_out.append((rel, "not voice (path)", ""))
            elif full.is_symlink():
                left_out.append((rel, "link", "-> " + os.readlink(full)))
            else:
                voice.append((rel, full))
    return voice, left_out


def _target(rel: str, used: set[str]) -> str:
    """audio path of a clip: its path in the package with .flac for its extension (the extension is kept before
    .flac when two files differ only by it, e.g. x.ogg and x.wav)."""
    out = posixpath.splitext(rel)[0] + ".flac"
    if out in used:
        out = rel + ".flac"
    used.add(out)
    return out


def unpack(root: Path, package: str, version: str, source: Source, dest: Path, min_seconds: float,
           progress: bool = False, say: Callable[[str], None] = print) -> dict:
    """Write the voice clips of the package extracted at `root` under `dest`; returns {"kept": rows,
    "excluded": rows}. A kept row's `path` is where its FLAC will be once `dest` is renamed to DIR/audio/<package>."""
    from tqdm import tqdm

    licence = licence_of(root, package, source)
    voice, left_out = _walk(root, source)
    kept, seen, used = [], {}, set()
    dest.mkdir(parents=True, exist_ok=True)
    for rel, full in tqdm(voice, desc=package, unit="file", leave=False, disable=not progress):
        sha = file_sha256(full)
        if sha in seen:
            left_out.append((rel, "duplicate", seen[sha]))
            continue
        try:
            clip = decode(full)
        except AudioError as e:
            reason = "silent" if e.reason.startswith("is silent") else "undecodable"
            left_out.append((rel, reason, e.reason))
            if reason == "undecodable":
                say(f"{package}: {rel}: {e.reason}")
            continue
        if clip.duration < min_seconds:
            left_out.append((rel, "too short", f"{clip.duration:.2f} s"))
            continue
        content = hashlib.sha256(clip.samples.tobytes()).hexdigest()
        if content in seen:
            left_out.append((rel, "duplicate", seen[content]))
            continue
        out = _target(rel, used)
        path = f"audio/{package}/{out}"
        try:
            write_flac(dest / out, clip.samples)
        except (OSError, ValueError, av.error.FFmpegError) as e:  # a disk problem is the run's, not the file's
            raise SampleCNNError(f"cannot be written ({e})", dest / out) from None
        seen[sha] = seen[content] = path
        lic = licence(rel)
        kept.append({
            "path": path, "package": package, "version": version, "original_path": rel,
            "duration": round(clip.duration, 4), "source_rate": clip.source_rate,
            "source_channels": clip.source_channels, "codec": clip.codec, "content_hash": content,
            "file_sha256": sha, "licence": lic.name, "licence_files": lic.files, "copyright": lic.copyright,
        })
    excluded = [{"package": package, "version": version, "original_path": o, "reason": r, "detail": d}
                for o, r, d in sorted(left_out)]
    return {"kept": kept, "excluded": excluded}
