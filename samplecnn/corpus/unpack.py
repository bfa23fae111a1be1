"""One extracted package -> its music files copied out, and a record of what was kept, left out and why.

The package's file tree (from dpkg-deb -x) is walked once. Audio files and the audio inside zip archives (.pk3) are
candidates; a candidate is kept when its path is music by the package's rule, it decodes, it lasts at least
`min_seconds`, and no earlier candidate of the package has the same content (decoded-audio or byte hash). Kept files
are copied byte for byte under `dest`, at their path in the package (an archive member under ARCHIVE/MEMBER), and
get their licence from the package's debian/copyright. Links are never followed: drascula-music's per-language
folders are links to one set of files, and they are listed as left out. Files that are not music by path are listed
too, but never decoded (hedgewars alone has ~940 effects and voice clips).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import AudioError
from . import dep5
from .packages import Rule
from .probe import file_sha256, probe

__all__ = ["unpack"]


@dataclass(frozen=True)
class _Candidate:
    original: str             # path in the package; ARCHIVE!MEMBER for a member of a zip archive
    file: Path                # the file on disk, or the archive holding the member
    member: str | None = None


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _members(archive: Path, original: str, excluded: list) -> list[_Candidate]:
    try:
        with zipfile.ZipFile(archive) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as e:
        excluded.append((original, "unreadable archive", str(e)))
        return []
    out = []
    for name in sorted(names):
        if not _is_audio(name):
            continue
        norm = posixpath.normpath(name)
        if norm.startswith(("/", "../")) or norm == "..":
            excluded.append((f"{original}!{name}", "unsafe archive member name", ""))
            continue
        out.append(_Candidate(f"{original}!{norm}", archive, name))
    return out


def _walk(root: Path, rule: Rule) -> tuple[list[_Candidate], list]:
    """(candidates, left-out rows as (original, reason, detail)) in path order."""
    candidates, excluded = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                if _is_audio(name):
                    excluded.append((rel, "link", "-> " + os.readlink(full)))
            elif _is_audio(name):
                candidates.append(_Candidate(rel, full))
            elif rule.is_archive(rel):
                candidates.extend(_members(full, rel, excluded))
    return candidates, excluded


def _copy_out(c: _Candidate, target: Path, archives: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if c.member is None:
        shutil.copy2(c.file, target)
        return
    z = archives.get(c.file) or archives.setdefault(c.file, zipfile.ZipFile(c.file))
    with z.open(c.member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _prune_empty(folder: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        if dirpath != str(folder) and not os.listdir(dirpath):
            os.rmdir(dirpath)


def unpack(root: Path, package: str, version: str, rule: Rule, dest: Path, min_seconds: float,
           progress: bool = False) -> dict:
    """Copy the music of the package extracted at `root` to `dest`; returns {"kept": rows, "excluded": rows}.

    A kept row's `path` is where the file will be once `dest` is renamed to DIR/audio/<package>."""
    from tqdm import tqdm

    copyright = dep5.read(root / "usr/share/doc" / package / "copyright")
    candidates, left_out = _walk(root, rule)
    music = []
    for c in candidates:
        if rule.is_music(c.original):
            music.append(c)
        else:
            left_out.append((c.original, "not music (path)", ""))

    kept, seen, archives = [], {}, {}
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for c in tqdm(music, desc=package, unit="file", leave=False, disable=not progress):
            rel = c.original.replace("!", "/")
            target = dest / rel
            _copy_out(c, target, archives)
            try:
                p = probe(target)
            except AudioError as e:
                target.unlink()
                left_out.append((c.original, "undecodable", e.reason))
                continue
            if p.duration < min_seconds:
                target.unlink()
                left_out.append((c.original, "too short", f"{p.duration:.1f} s"))
                continue
            sha = file_sha256(target)
            first = seen.get(p.content_hash) or seen.get(sha)
            path = f"audio/{package}/{rel}"
            if first:
                target.unlink()
                left_out.append((c.original, "duplicate", first))
                continue
            seen[p.content_hash] = seen[sha] = path
            licence = copyright.licence_for(rule.source_path(c.original)) if copyright else dep5.UNKNOWN
            kept.append({
                "path": path, "package": package, "version": version, "original_path": c.original,
                "duration": p.duration, "sample_rate": p.sample_rate, "channels": p.channels, "codec": p.codec,
                "content_hash": p.content_hash, "file_sha256": sha, "licence": licence.name,
                "licence_files": licence.files, "copyright": licence.copyright,
            })
    finally:
        for z in archives.values():
            z.close()
    _prune_empty(dest)
    excluded = [{"package": package, "version": version, "original_path": o, "reason": r, "detail": d}
                for o, r, d in sorted(left_out)]
    return {"kept": kept, "excluded": excluded}
