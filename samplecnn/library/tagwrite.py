"""Write a track's decided tags into the file's own metadata, and take them out again exactly.

One clearly named field, and nothing else, is touched:
- ID3 (mp3, wav, aiff): a TXXX frame with description SAMPLECNN_TAGS, one value per tag (an ID3v2.3 tag, which
  cannot hold several values, stores them as one `a/b/c` value, and that is what a rerun compares against);
- Vorbis comments (ogg, opus, flac): SAMPLECNN_TAGS, one comment per tag;
- MP4 (m4a, mp4): the freeform atom ----:org.samplecnn:SAMPLECNN_TAGS, one value per tag.

How a write is kept safe (each step exists because skipping it lost or damaged someone's file):
- Files are edited in place by mutagen, never replaced: the inode, owner, mode, hard links and symlinks stay. A file
  without any write permission bit is skipped, even when root could write it.
- A file whose container is not intact (a WAV cut short, an atom or page running past the end) is refused:
  mutagen trusts the size fields and would put the tag where decoders read audio (see integrity.py).
- A copy of the bytes is kept beside the library until the write is verified (the field reads back, the container
  is whole, the decoded audio is the same) and recorded; otherwise, or after a crash, the file is put back from it.
- Undo: the field's original value (usually: absent) is recorded before samplecnn first writes a file, and so is a
  small patch that rebuilds the original bytes. While the file still holds exactly what samplecnn wrote, undo
  restores those bytes; after other edits it puts the field back, and refuses if the field no longer reads back.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import SampleCNNError
from ..fileio import file_hash
from . import backup, integrity, store

FIELD = "SAMPLECNN_TAGS"
_MP4_KEY = f"----:org.samplecnn:{FIELD}"
_ID3_KEY = f"TXXX:{FIELD}"


@dataclass
class Change:
    """What writing (or undoing) one file did, or would do with dry_run; `note`: what a crash recovery did."""

    path: str
    before: list[str] | None
    after: list[str] | None
    error: str | None = None
    note: str | None = None

    @property
    def changed(self) -> bool:
        return self.error is None and self.note is None and self.before != self.after


def read_field(path: str | os.PathLike) -> list[str] | None:
    """The SAMPLECNN_TAGS values in the file's metadata, or None if the field is absent."""
    return _get(_open(path))


def write_field(path: str | os.PathLike, values: list[str] | None) -> None:
    """Set the field to `values` (None: remove it) in place, outside any library (no undo is recorded).

    Checked and verified like a library write; the original bytes wait in a temporary copy until then."""
    path = os.fspath(path)
    f = _open_checked(path)
    _check_can_write(f, path)
    fingerprint = integrity.audio_fingerprint(path)
    with backup.Journal.scratch() as journal:
        pending = journal.begin(path, "write")
        _edit(f, pending, values, _as_stored(f, values), fingerprint)
        pending.done()


def write_decisions(lib: store.Library, model: store.Model, under: list[str] | None = None,
                    dry_run: bool = False) -> list[Change]:
    """Make each indexed file's field equal its decided tags, the model's then the library's tag packs' (absent
    when none were decided)."""
    own = lib.own_tags(model.model_id)
    with _journal(lib, dry_run) as (journal, changes):
        for t in lib.tracks(model.model_id, under=under):
            target = list(t.decisions) + own.get(t.path, ({}, []))[1] or None
            try:
                changes.append(_write_track(lib, journal, model, t, target, dry_run))
            except SampleCNNError as e:
                changes.append(Change(t.path, None, target, error=e.reason))
            except OSError as e:
                changes.append(Change(t.path, None, target, error=f"cannot be written ({e.strerror or e})"))
    return changes


def undo(lib: store.Library, under: list[str] | None = None, dry_run: bool = False) -> list[Change]:
    """Put every file samplecnn wrote back as it was (exact bytes, or the field alone), and forget the writes."""
    with _journal(lib, dry_run) as (journal, changes):
        for path, original in lib.tag_writes(under):
            try:
                changes.append(_undo_path(lib, journal, path, original, dry_run))
            except SampleCNNError as e:
                changes.append(Change(path, None, original, error=e.reason))
            except OSError as e:
                changes.append(Change(path, None, original, error=f"cannot be undone ({e.strerror or e})"))
    return changes


# ------------------------------------------------------------------------------------------------------------------
# one file


def _write_track(lib: store.Library, journal: backup.Journal, model: store.Model, t: store.Track,
                 target: list[str] | None, dry_run: bool) -> Change:
    _check_unchanged(t)
    f = _open_checked(t.path)
    change = Change(t.path, _get(f), _as_stored(f, target))
    if not change.changed:
        return change
    _check_can_write(f, t.path)
    if dry_run:
        return change
    fingerprint = integrity.audio_fingerprint(t.path)
    previous, undo_record = lib.tag_write(t.path), lib.tag_undo(t.path)
    pending = journal.begin(t.path, "write")
    _edit(f, pending, target, change.after, fingerprint)
    with _put_back_on_failure(pending):
        original_hash, patch = _undo_patch(journal, pending, previous is None, undo_record)
        digest, size, mtime_ns = file_hash(t.path)
        original = previous[0] if previous is not None else change.before
        lib.record_tag_write(t.path, original, change.after or [], model.model_id, size, mtime_ns, digest,
                             original_hash, patch)
    pending.done()
    return change


def _undo_path(lib: store.Library, journal: backup.Journal, path: str, original: list[str] | None,
               dry_run: bool) -> Change:
    f = _open_checked(path)
    change = Change(path, _get(f), _as_stored(f, original))
    undo_record = lib.tag_undo(path)
    exact = (undo_record is not None and undo_record[0] is not None and undo_record[2] is not None
             and file_hash(path)[0] == undo_record[1])
    if not exact:
        written = lib.tag_write(path)[1]
        if change.before != _as_stored(f, written or None):
            raise SampleCNNError("the SAMPLECNN_TAGS field samplecnn wrote does not read back, and no saved copy "
                                 "of the original bytes fits the file as it is now: not undone", path)
    if dry_run:
        return change
    if not exact and not change.changed:
        _forget(lib, path)
        return change
    if exact:
        _check_writable(path)
        pending = journal.begin(path, "undo")
        backup.restore_original(pending, undo_record[2], undo_record[0])
    else:
        _check_can_write(f, path)
        fingerprint = integrity.audio_fingerprint(path)
        pending = journal.begin(path, "undo")
        _edit(f, pending, original, change.after, fingerprint)
    with _put_back_on_failure(pending):
        _forget(lib, path)
    pending.done()
    return change


def _forget(lib: store.Library, path: str) -> None:
    digest, size, mtime_ns = file_hash(path)
    lib.forget_tag_write(path, size, mtime_ns, digest)


def _undo_patch(journal: backup.Journal, pending: backup.Pending, first: bool,
                undo_record: tuple | None) -> tuple[str | None, bytes | None]:
    """(hash of the original bytes, a checked patch that rebuilds them from the file now), patch None if impossible.

    On the first write the copy taken before it holds the original bytes. On a later one they are rebuilt from
    that copy with the previous patch, which only fits if the file was not changed by anything else since."""
    if first:
        return pending.hash, _checked_patch(pending.copy, pending.path, pending.hash)
    if undo_record is None or None in (undo_record[0], undo_record[2]) or undo_record[1] != pending.hash:
        return (undo_record[0] if undo_record else None), None
    original = backup.rebuild_to(undo_record[2], pending.copy, journal.folder)
    try:
        return undo_record[0], _checked_patch(original, pending.path, undo_record[0])
    finally:
        original.unlink(missing_ok=True)


def _checked_patch(original, written, original_hash: str) -> bytes | None:
    patch = backup.make_patch(original, written)
    return patch if patch is not None and backup.patched_hash(patch, written) == original_hash else None


def _edit(f, pending: backup.Pending, values: list[str] | None, expected: list[str] | None,
          fingerprint: str) -> None:
    """Set the field in place and verify the result; any failure puts the original bytes back and says why."""
    try:
        _set(f, values)
        _save(f)
    except Exception as e:  # mutagen raises many kinds; whichever it is, the file must not stay half-written
        pending.roll_back()
        raise SampleCNNError(f"cannot write its metadata ({getattr(e, 'strerror', None) or e}); its original "
                             "bytes were put back", pending.path) from None
    problem = _verify(pending.path, expected, fingerprint)
    if problem is not None:
        pending.roll_back()
        raise SampleCNNError(f"the write did not verify ({problem}), so its original bytes were put back",
                             pending.path)


def _verify(path: str, expected: list[str] | None, fingerprint: str) -> str | None:
    """What is wrong with a file just written, or None: the decoded audio, the field and the container."""
    try:
        if integrity.audio_fingerprint(path) != fingerprint:
            return "the decoded audio changed"
        integrity.check_container(path)
        if _get(_open(path)) != expected:
            return "the SAMPLECNN_TAGS field did not read back as written"
    except SampleCNNError as e:
        return e.reason
    except Exception as e:  # whatever a decoder or parser throws, an unverified write must not stay
        return f"it could not be verified ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def _put_back_on_failure(pending: backup.Pending) -> Iterator[None]:
    """Recording an edit in the library can fail (a locked database...): the file then goes back as it was."""
    try:
        yield
    except OSError as e:
        pending.roll_back()
        raise SampleCNNError(f"cannot be read back ({e.strerror or e}); its original bytes were put back",
                             pending.path) from None
    except Exception:
        pending.roll_back()
        raise


@contextlib.contextmanager
def _journal(lib: store.Library, dry_run: bool) -> Iterator[tuple[backup.Journal, list[Change]]]:
    """The batch's journal, locked, after putting back any file a crashed run left half-written.

    A dry run changes nothing, so it only reports such files."""
    journal = backup.Journal.beside(lib.path)
    if dry_run:
        yield journal, [Change(p, None, None, note="an interrupted write left a backup copy; a run without "
                               "--dry-run puts the file back from it") for p in journal.pending_paths()]
        return
    journal.lock()
    try:
        outcomes = journal.recover(lambda path, op, digest: _committed(lib, path, op, digest))
        yield journal, [Change(p, None, None, note=msg) if ok else Change(p, None, None, error=msg)
                        for p, msg, ok in outcomes]
    finally:
        journal.unlock()


def _committed(lib: store.Library, path: str, op: str, digest: str) -> bool:
    """Did the library record the file's current bytes as the outcome of the interrupted edit?"""
    if op == "undo":
        return lib.tag_write(path) is None
    record = lib.tag_undo(path)
    return record is not None and record[1] == digest


def _check_unchanged(t: store.Track) -> None:
    """Never write tags decided for other bytes than the file now holds."""
    try:
        st = os.stat(t.path)
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror})", t.path) from None
    if (st.st_size, st.st_mtime_ns) != (t.size, t.mtime_ns):
        raise SampleCNNError("changed since it was indexed: run `samplecnn index` on it first", t.path)


def _check_can_write(f, path: str) -> None:
    """Everything that must hold before any byte of the file changes: permission, format, an intact container."""
    _check_writable(path)
    integrity.check_format(f, path)
    integrity.check_container(path)


def _check_writable(path: str) -> None:
    """A file nobody may write is the user saying "leave it": root, who could, skips it too."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror})", path) from None
    if not mode & 0o222:
        raise SampleCNNError("is read-only (no write permission): skipped", path)
    if not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
        raise SampleCNNError("cannot be written (permission denied): skipped", path)


# ------------------------------------------------------------------------------------------------------------------
# mutagen


def _open_checked(path: str | os.PathLike):
    """_open, except that a file mutagen cannot parse because its container is broken is reported as that."""
    try:
        return _open(path)
    except SampleCNNError:
        integrity.check_container(path)
        raise


def _open(path: str | os.PathLike):
    import mutagen

    try:
        f = mutagen.File(path)
    except mutagen.MutagenError as e:
        raise SampleCNNError(f"cannot read its metadata ({e})", path) from None
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror or e})", path) from None
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
    from mutagen._vorbis import VComment
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    if isinstance(tags, ID3):
        return "id3"
    if isinstance(tags, VComment):
        return "vorbis"
    if isinstance(tags, MP4Tags):
        return "mp4"
    return None


def _id3_version(tags) -> int:
    """The ID3v2 minor version a save keeps: 3 or 4 (an old v2.2 tag can only be saved as v2.4)."""
    return tags.version[1] if tags.version[1] in (3, 4) else 4


def _as_stored(f, values: list[str] | None) -> list[str] | None:
    """`values` as the file's tag will hold them, and so read them back: ID3v2.3 joins several values with '/'."""
    if values is None:
        return None
    if _kind(f.tags) == "id3" and _id3_version(f.tags) == 3:
        return ["/".join(values)]
    return list(values)


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
    """In place (mutagen rewrites the open file); an ID3 tag keeps its own version, v2.3 stays v2.3."""
    from mutagen.id3 import ID3

    if isinstance(f.tags, ID3):
        f.save(v2_version=_id3_version(f.tags))  # an ID3v1 tag is updated only if present
    else:
        f.save()
