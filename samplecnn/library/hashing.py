"""Identities: a file's content hash (has it changed?) and a model's id (were these tags made by this model?)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def file_hash(path: str | os.PathLike) -> tuple[str, int, int]:
    """(blake2b-128 hex of the bytes, size, mtime_ns), the stat taken from the same open file as the bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest(), st.st_size, st.st_mtime_ns


def model_id(checkpoint_path: str | os.PathLike, name: str | None = None) -> str:
    """`name-<16 hex of the checkpoint's hash>`: readable, and changes whenever the weights or metadata change."""
    digest, _, _ = file_hash(checkpoint_path)
    return f"{name or Path(checkpoint_path).stem}-{digest[:16]}"
