"""Write a track's decided tags into the file's own metadata, and take them out again exactly.

One clearly named field, and nothing else, is touched:
- ID3 (mp3, wav, aiff): a TXXX frame with description SAMPLECNN_TAGS, one value per tag;
- Vorbis comments (ogg, opus, flac): SAMPLECNN_TAGS, one comment per tag;
- MP4 (m4a, mp4): the freeform atom ----:org.samplecnn:SAMPLECNN_TAGS, one value per tag.

The audio data is never rewritten: mutagen edits only the tag block. Each write goes to a copy of the file that
replaces the original in one rename, so a crash never leaves a half-written file. Before samplecnn first writes a
file, the field's original value (usually: absent) is recorded in the library, so `write-tags --undo` restores the
field exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SampleCNNError
from . import hashing, store

FIELD = "SAMPLECNN_TAGS"
_MP4_KEY = f"----:org.samplecnn:{FIELD}"
_ID3_KEY = f"TXXX:{FIELD}"


@dataclass
class Change:
    """What writing (or undoing) one file did, or would do with dry_run."""

    path: str
    before: list[str] | None
    after: list[str] | None
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.error is None and self.before != self.after


def read_field(path: str | os.PathLike) -> list[str] | None:
    """The SAMPLECNN_TAGS values in the file's metadata, or None if the field is absent."""
    return _get(_open(path))


def write_field(path: str | os.PathLike, values: list[str] | None) -> None:
    """Set the field to `values` (None: remove it), atomically, leaving every other tag and the audio alone."""
    path = Path(path)
    _open(path)  # a one-line error for an unsupported file before any copy is made
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        shutil.copy2(path, tmp)
        f = _open(tmp)  # the copy keeps the suffix, so mutagen picks the same format
        _set(f, values)
        _save(f)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise SampleCNNError(f"cannot write its metadata ({e.strerror or e})", path) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_decisions(lib: store.Library, model: store.Model, under: list[str] | None = None,
                    dry_run: bool = False) -> list[Change]:
    """Make each indexed file's field equal its decided tags (absent when none were decided)."""
    changes = []
    for t in lib.tracks(model.model_id, under=under):
        target = list(t.decisions) or None
        try:
            _check_unchanged(t)
            before = read_field(t.path)
            change = Change(t.path, before, target)
            if change.changed and not dry_run:
                previous = lib.tag_write(t.path)
                original = previous[0] if previous is not None else before
                write_field(t.path, target)
                digest, size, mtime_ns = hashing.file_hash(t.path)
                lib.record_tag_write(t.path, original, target or [], model.model_id, size, mtime_ns, digest)
        except SampleCNNError as e:
            change = Change(t.path, None, target, error=e.reason)
        changes.append(change)
    return changes


def undo(lib: store.Library, under: list[str] | None = None, dry_run: bool = False) -> list[Change]:
    """Put every field samplecnn wrote back to its original value (or remove it), and forget the writes."""
    changes = []
    for path, original in lib.tag_writes(under):
        try:
            before = read_field(path)
            change = Change(path, before, original)
            if not dry_run:
                if change.changed:
                    write_field(path, original)
                digest, size, mtime_ns = hashing.file_hash(path)
                lib.forget_tag_write(path, size, mtime_ns, digest)
        except (SampleCNNError, OSError) as e:
            change = Change(path, None, original, error=getattr(e, "reason", None) or str(e))
        changes.append(change)
    return changes


def _check_unchanged(t: store.Track) -> None:
    """Never write tags decided for other bytes than the file now holds."""
    try:
        st = os.stat(t.path)
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror})", t.path) from None
    if (st.st_size, st.st_mtime_ns) != (t.size, t.mtime_ns):
        raise SampleCNNError("changed since it was indexed: run `samplecnn index` on it first", t.path)


def _open(path: str | os.PathLike):
    import mutagen

    try:
        f = mutagen.File(path)
    except mutagen.MutagenError as e:
        raise SampleCNNError(f"cannot read its metadata ({e})", path) from None
    if f is None:
        raise SampleCNNError("metadata writing is not supported for this file's format", path)
    if f.tags is None:
        try:
            f.add_tags()
        except (mutagen.MutagenError, NotImplementedError, AttributeError):
            raise SampleCNNError("metadata writing is not supported for this file's format", path) from None
    if _kind(f.tags) is None:
        raise SampleCNNError(f"metadata writing is not supported for {type(f.tags).__name__} tags", path)
    return f


def _kind(tags) -> str | None:
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags
    from mutagen._vorbis import VComment

    if isinstance(tags, ID3):
        return "id3"
    if isinstance(tags, VComment):
        return "vorbis"
    if isinstance(tags, MP4Tags):
        return "mp4"
    return None


def _get(f) -> list[str] | None:
    kind = _kind(f.tags)
    if kind == "id3":
        frames = f.tags.getall(_ID3_KEY)
        return [str(v) for fr in frames for v in fr.text] if frames else None
    if kind == "vorbis":
        return list(f.tags[FIELD]) if FIELD in f.tags else None
    values = f.tags.get(_MP4_KEY)
    return [bytes(v).decode("utf-8") for v in values] if values is not None else None


def _set(f, values: list[str] | None) -> None:
    kind = _kind(f.tags)
    if kind == "id3":
        from mutagen.id3 import TXXX

        f.tags.delall(_ID3_KEY)
        if values is not None:
            f.tags.add(TXXX(encoding=3, desc=FIELD, text=list(values)))
    elif kind == "vorbis":
        if FIELD in f.tags:
            del f.tags[FIELD]
        if values is not None:
            f.tags[FIELD] = list(values)
    else:
        from mutagen.mp4 import MP4FreeForm

        f.tags.pop(_MP4_KEY, None)
        if values is not None:
            f.tags[_MP4_KEY] = [MP4FreeForm(v.encode("utf-8")) for v in values]


def _save(f) -> None:
    from mutagen.id3 import ID3

    if isinstance(f.tags, ID3):
        # keep the tag's own version (v2.3 stays v2.3 for old players); an ID3v1 tag is updated only if present
        version = f.tags.version[1] if f.tags.version[1] in (3, 4) else 4
        f.save(v2_version=version)
    else:
        f.save()
