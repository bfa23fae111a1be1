"""The original bytes of a file samplecnn edits in place: a crash-safe copy during the edit, and a small patch after.

Why this shape:
- Tags are written *in place* (mutagen edits the open file), so the file keeps its inode, owner, mode, hard links
  and the symlinks that point at it. An in-place edit is not atomic, so a copy of the file's bytes is made first,
  in a folder beside the library (`LIB.sqlite-tagwrite/`), and kept until the write is verified and recorded. A run
  that finds such a copy (a crash or a kill in the middle of a write) puts the file back from it, in place.
- For the undo, a whole copy of every file would double the library on disk. What is kept instead is a patch
  (`make_patch`): the original file read as runs of bytes that are still there at the same offset, runs that moved
  by the size change of the tag, and the few blocks that mutagen really rewrote (the tag and size fields), literally.
  It is usually a few KiB, and it rebuilds the original bytes exactly from the written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import SampleCNNError
from ..fileio import file_hash

_CHUNK = 1 << 20
_BLOCK = 4096
_MAGIC = b"SCP1"
_SAME, _MOVED, _LITERAL = 0, 1, 2
# a patch that would keep more than this many original bytes is not kept (undo then works on the field alone)
MAX_LITERAL = 32 << 20


def new_hasher():
    return hashlib.blake2b(digest_size=16)  # the same hash as file_hash, which the library records


# ------------------------------------------------------------------------------------------------------------------
# the copy kept during one edit


@dataclass
class Pending:
    """A file being edited, and the copy of its bytes (with their hash and times) taken just before."""

    path: str
    copy: Path
    meta: Path
    hash: str
    atime_ns: int
    mtime_ns: int

    def restore(self) -> None:
        """Put the copied bytes back into the same file (same inode), with its old times; raise if that failed."""
        try:
            with open(self.copy, "rb") as src, open(self.path, "r+b") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.truncate()
                dst.flush()
                os.fsync(dst.fileno())
            os.utime(self.path, ns=(self.atime_ns, self.mtime_ns))
            ok = _hash_file(self.path) == self.hash
        except OSError as e:
            raise SampleCNNError(f"could not be put back ({e.strerror or e}); its original bytes are kept in "
                                 f"{self.copy}", self.path) from None
        if not ok:
            raise SampleCNNError(f"could not be put back; its original bytes are kept in {self.copy}", self.path)

    def roll_back(self) -> None:
        """The edit failed: the file gets its copied bytes back, and the copy goes (kept if putting back failed)."""
        self.restore()
        self.done()

    def done(self) -> None:
        """The edit is verified and recorded (or undone): the copy is no longer needed."""
        self.meta.unlink(missing_ok=True)  # first: a copy without its note is known to be garbage
        self.copy.unlink(missing_ok=True)


class Journal:
    """The folder of copies kept during edits. Held locked for a whole batch, so two runs never mix their copies."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = None

    @classmethod
    def beside(cls, db_path: Path) -> "Journal":
        return cls(db_path.with_name(db_path.name + "-tagwrite"))

    @classmethod
    @contextlib.contextmanager
    def scratch(cls) -> Iterator["Journal"]:
        """A journal in a temporary folder, for an edit outside any library (no recovery after a crash)."""
        with tempfile.TemporaryDirectory(prefix="samplecnn-tagwrite-") as d:
            yield cls(Path(d))

    def lock(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SampleCNNError(f"cannot create the folder of backup copies ({e.strerror or e})",
                                 self.folder) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SampleCNNError("another samplecnn run is writing tags with this library; wait for it to end",
                                 self.folder) from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def begin(self, path: str, op: str) -> Pending:
        """Copy `path`'s bytes here (fsync'd) and write the note that names it, before any byte of it changes."""
        copy = None
        try:
            st = os.stat(path)
            fd, name = tempfile.mkstemp(prefix="pending-", suffix=".orig", dir=self.folder)
            copy = Path(name)
            h = new_hasher()
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            pending = Pending(path, copy, copy.with_suffix(".json"), h.hexdigest(), st.st_atime_ns, st.st_mtime_ns)
            note = {"path": path, "op": op, "hash": pending.hash, "atime_ns": st.st_atime_ns,
                    "mtime_ns": st.st_mtime_ns}
            _write_durably(pending.meta, json.dumps(note).encode())
            _fsync_dir(self.folder)
        except OSError as e:
            if copy is not None:  # nothing was changed yet: a partial copy is just garbage
                copy.with_suffix(".json").unlink(missing_ok=True)
                copy.unlink(missing_ok=True)
            raise SampleCNNError(f"cannot keep a backup copy before writing ({e.strerror or e}): not written",
                                 path) from None
        return pending

    def pending_paths(self) -> list[str]:
        """The files that copies left by an interrupted run belong to (nothing is changed)."""
        return [json.loads(m.read_text())["path"] for m in sorted(self.folder.glob("pending-*.json"))]

    def recover(self, committed: Callable[[str, str, str], bool]) -> list[tuple[str, str, bool]]:
        """Deal with copies a crashed run left: (path, what was done, whether the file is fine now) for each.

        `committed(path, op, current_hash)` tells whether the library recorded the file's current bytes as the
        result of the edit; then the copy is simply dropped. Otherwise the file is put back from the copy."""
        outcomes = []
        for meta in sorted(self.folder.glob("pending-*.json")):
            note = json.loads(meta.read_text())
            p = Pending(note["path"], meta.with_suffix(".orig"), meta, note["hash"], note["atime_ns"],
                        note["mtime_ns"])
            try:
                current = _hash_file(p.path)
            except OSError as e:
                outcomes.append((p.path, f"an interrupted write left a backup copy, but the file cannot be read "
                                         f"({e.strerror or e}); its original bytes are kept in {p.copy}", False))
                continue
            if current == p.hash or committed(p.path, note["op"], current):
                p.done()
                continue
            try:
                p.restore()
            except SampleCNNError as e:
                outcomes.append((p.path, e.reason, False))
                continue
            p.done()
            outcomes.append((p.path, "an interrupted write was rolled back: its original bytes are back", True))
        # copies no note names (the crash came first), rebuilt originals, notes never finished
        for orphan in [*self.folder.glob("*-*.orig"), *self.folder.glob("pending-*.tmp")]:
            if orphan.suffix == ".tmp" or not orphan.with_suffix(".json").exists():
                orphan.unlink(missing_ok=True)
        return outcomes


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path) -> str:
    return file_hash(path)[0]


# ------------------------------------------------------------------------------------------------------------------
# the undo patch


def make_patch(original: str | os.PathLike, written: str | os.PathLike) -> bytes | None:
    """A patch that rebuilds `original`'s bytes from `written`'s, or None if it would keep too many bytes.

    Each 4-KiB block of the original is found in the written file at the same offset, or at the offset shifted by
    the change in size (the audio after a tag that grew or shrank), or else kept literally."""
    la, lb = os.path.getsize(original), os.path.getsize(written)
    shift = lb - la
    runs: list[list] = []  # [kind, offset, length, literal bytes]
    literal = 0
    with open(original, "rb") as a, open(written, "rb") as b:
        for offset in range(0, la, _BLOCK):
            block = a.read(_BLOCK)
            kind = _where(b, lb, block, offset, shift)
            if runs and runs[-1][0] == kind:
                runs[-1][2] += len(block)
            else:
                runs.append([kind, offset, len(block), bytearray()])
            if kind == _LITERAL:
                runs[-1][3] += block
                literal += len(block)
                if literal > MAX_LITERAL:
                    return None
    body = [struct.pack(">4sQq", _MAGIC, la, shift)]
    for kind, offset, length, data in runs:
        body.append(struct.pack(">BQQ", kind, offset, length))
        body.append(bytes(data))
    return zlib.compress(b"".join(body), 6)


def _where(b, lb: int, block: bytes, offset: int, shift: int) -> int:
    n = len(block)
    if offset + n <= lb:
        b.seek(offset)
        if b.read(n) == block:
            return _SAME
    if shift and 0 <= offset + shift and offset + shift + n <= lb:
        b.seek(offset + shift)
        if b.read(n) == block:
            return _MOVED
    return _LITERAL


def apply_patch(patch: bytes, written: str | os.PathLike, out) -> int:
    """Write the original bytes, rebuilt from the file `written`, to `out` (anything with write()); their size."""
    data = zlib.decompress(patch)
    magic, size, shift = struct.unpack_from(">4sQq", data)
    if magic != _MAGIC:
        raise ValueError("not a samplecnn undo patch")
    pos = struct.calcsize(">4sQq")
    run = struct.calcsize(">BQQ")
    with open(written, "rb") as b:
        while pos < len(data):
            kind, offset, length = struct.unpack_from(">BQQ", data, pos)
            pos += run
            if kind == _LITERAL:
                out.write(data[pos:pos + length])
                pos += length
                continue
            b.seek(offset + (shift if kind == _MOVED else 0))
            left = length
            while left:
                chunk = b.read(min(left, _CHUNK))
                if not chunk:
                    raise ValueError("the written file is shorter than the patch expects")
                out.write(chunk)
                left -= len(chunk)
    return size


def patched_hash(patch: bytes, written: str | os.PathLike) -> str:
    """The hash of the bytes the patch rebuilds from `written` (to check a patch before trusting it)."""
    h = new_hasher()
    apply_patch(patch, written, _Writer(h.update))
    return h.hexdigest()


@dataclass
class _Writer:
    write: Callable[[bytes], object]


def restore_original(pending: Pending, patch: bytes, original_hash: str) -> None:
    """Rebuild the original bytes from the copy of the written file into the file itself, in place; verify them."""
    try:
        with open(pending.path, "r+b") as dst:
            size = apply_patch(patch, pending.copy, dst)
            dst.truncate(size)
            dst.flush()
            os.fsync(dst.fileno())
        ok = _hash_file(pending.path) == original_hash
    except (OSError, ValueError, zlib.error) as e:
        pending.roll_back()
        raise SampleCNNError(f"its original bytes could not be rebuilt ({e}); left as it was", pending.path) from None
    if not ok:
        pending.roll_back()
        raise SampleCNNError("its original bytes could not be rebuilt (the result did not match); left as it was",
                             pending.path)


def rebuild_to(patch: bytes, written: str | os.PathLike, folder: Path) -> Path:
    """The original bytes rebuilt into a new file in `folder` (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix="original-", suffix=".orig", dir=folder)
    with os.fdopen(fd, "wb") as out:
        apply_patch(patch, written, out)
    return Path(name)
