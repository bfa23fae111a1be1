"""Where the files of an index live: local paths, or fsspec URLs (`file://`, `s3://`, `gs://`... any protocol whose
fsspec package is installed), with one set of answers for both: the files under an input, a file's stat, whether
it still exists, and its bytes as a local file for the decoder.

Why: on a cluster the files must be readable by every worker. A shared filesystem needs nothing more than its paths;
an object store is reached through fsspec, the library the data tools of the field share. A URL is kept exactly as
given (the library stores it as its path), and its file is fetched to a local temporary file while it is hashed (one
read), so ffmpeg decodes it as any local file: seeking formats (mp4, ogg) need no remote reads, and the decoding is
the one the local path has.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from typing import Iterable, Iterator

from ..errors import AudioError, SampleCNNError
from ..fileio import file_hash, stream_hash


def is_url(path: str) -> bool:
    """Whether `path` names a file through fsspec (a protocol such as `s3://`), not a local path."""
    head, sep, _ = str(path).partition("://")
    return bool(sep) and head.replace("+", "").replace("-", "").replace(":", "").isalnum()


def key(path: str | os.PathLike) -> str:
    """The path as the library stores it: a URL as given, a local path made absolute."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def find(inputs: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The audio files under `inputs` (in a stable order, each once) as library keys, and (input, reason) for each
    input that gave none. Local paths are walked by audio.find_audio; URLs the same way through fsspec."""
    from .. import audio

    files: list[str] = []
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for arg in inputs:
        if is_url(arg):
            found, problem = _find_url(arg)
            if problem:
                errors.append((arg, problem))
        else:
            paths, problems = audio.find_audio([arg])
            found = [os.path.abspath(p) for p in paths]
            errors.extend((os.fspath(e.path), e.reason) for e in problems)
        for f in found:
            if f not in seen:
                seen.add(f)
                files.append(f)
    return files, errors


def _find_url(url: str) -> tuple[list[str], str | None]:
    from .. import audio

    fs, root = _fs(url)
    try:
        if fs.isfile(root):
            return [url], None
        if not fs.isdir(root):
            return [], "no such file or directory"
        found = []
        for p in sorted(fs.find(root)):
            rel = p[len(root.rstrip("/")):].lstrip("/")
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            if os.path.splitext(p)[1].lower() in audio.AUDIO_EXTENSIONS:
                found.append(url.rstrip("/") + "/" + rel)
    except OSError as e:
        return [], f"cannot be read ({e.strerror or e})"
    return found, None if found else "no audio files found in this folder"


def _fs(url: str):
    try:
        import fsspec
    except ImportError:
        raise SampleCNNError("a URL needs fsspec (pip install fsspec, and the package of its protocol)", url) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise SampleCNNError(f"cannot be opened ({e})", url) from None


def stat(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a file; OSError if it cannot be read. An object store's modification time is its
    last-modified stamp; a store that gives none reads as 0, so that only the size and the hash decide."""
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    fs, p = _fs(path)
    info = fs.info(p)
    return int(info["size"]), _mtime_ns(info)


def _mtime_ns(info: dict) -> int:
    for name in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(name)
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return int(value.timestamp() * 1_000_000) * 1000
        if isinstance(value, (int, float)):
            return int(round(value * 1e6)) * 1000  # seconds as a float: exact to the microsecond
    return 0


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.lexists(path)
    fs, p = _fs(path)
    try:
        return fs.exists(p)
    except OSError:
        return False


@contextlib.contextmanager
def fetched(path: str) -> Iterator[tuple[str, dict]]:
    """(a local path to decode, {"hash", "size", "mtime_ns"}) of a file: the file itself where it is local, else a
    temporary copy made while hashing, removed on leaving. A URL whose object cannot be read raises AudioError."""
    if not is_url(path):
        digest, size, mtime_ns = file_hash(path)
        yield path, {"hash": digest, "size": size, "mtime_ns": mtime_ns}
        return
    fs, p = _fs(path)
    suffix = os.path.splitext(p)[1][:16]
    with tempfile.NamedTemporaryFile(prefix="samplecnn-", suffix=suffix) as tmp:
        try:
            size, mtime_ns = stat(path)
            with fs.open(p, "rb") as f:
                digest, _ = stream_hash(f, copy_to=tmp)
        except FileNotFoundError:
            raise AudioError("no such file", path) from None
        except OSError as e:
            raise AudioError(f"cannot be read ({e.strerror or e})", path) from None
        tmp.flush()
        yield tmp.name, {"hash": digest, "size": size, "mtime_ns": mtime_ns}
