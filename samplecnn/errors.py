"""User-facing errors: each one prints as a single line naming the file and the reason."""

from __future__ import annotations

import os


class SampleCNNError(Exception):
    """A mistake in what the user gave us (a file, an option), not a bug: the CLI prints it without a traceback."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class AudioError(SampleCNNError):
    """The file cannot be turned into usable audio (missing, not audio, truncated, silent, NaN...)."""


class CheckpointError(SampleCNNError):
    """The file is not a usable samplecnn checkpoint (truncated, foreign, mismatched)."""
