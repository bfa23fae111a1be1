"""Files: atomic writes (a reader, or a crash, never sees a half-written checkpoint, cache or picture), and the
content hash that says whether a file changed (the library's rows, a model's id)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import SampleCNNError

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path` in one step.

    Refuses to replace an existing file unless `overwrite`: nothing a user owns is lost by accident.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SampleCNNError("already exists (pass --force to replace it)", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SampleCNNError(f"cannot create its folder ({e.strerror})", path) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_hash(path: str | os.PathLike) -> tuple[str, int, int]:
    """(blake2b-128 hex of the bytes, size, mtime_ns), the stat taken from the same open file as the bytes."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest, _ = stream_hash(f)
    return digest, st.st_size, st.st_mtime_ns


def stream_hash(f: BinaryIO, copy_to: BinaryIO | None = None) -> tuple[str, int]:
    """(blake2b-128 hex, byte count) of what is left to read in `f`, written on to `copy_to` as it is read (a remote
    file is fetched and hashed in one pass): the one content hash of a file, wherever it lives."""
    h = hashlib.blake2b(digest_size=16)
    n = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return h.hexdigest(), n
