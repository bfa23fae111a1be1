"""What the manifest says about one audio file: exact length, format, and two hashes.

Every candidate is decoded once, whole, with the same decoder training uses (samplecnn.audio), so a file in the
manifest is known to decode, its duration is counted in samples rather than read from headers, and the
content hash can be taken over the decoded audio:

- content_hash: sha256 of the decoded mono float32 samples at the file's own rate (no resampling: cheaper, and
  nothing but the decoder in between). It finds copies that differ only in their tags or container, which a byte
  hash misses (flare-game has two such pairs of effects); it can change with the ffmpeg version, so it identifies
  audio within one build of a corpus, not across machines.
- file_sha256: sha256 of the bytes, stable everywhere (`sha256sum` checks an extracted file against it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import av
import av.error

from .. import audio
from ..errors import AudioError

__all__ = ["Probe", "probe", "file_sha256"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Probe:
    duration: float   # seconds of decoded audio
    sample_rate: int
    channels: int
    codec: str        # ffmpeg's codec name: vorbis, opus, mp3, pcm_s16le...
    content_hash: str


def _format(path: str | os.PathLike) -> tuple[int, int, str]:
    """(rate, channels, codec) of the first audio stream, from the headers."""
    try:
        with av.open("file:" + os.path.abspath(path), metadata_errors="replace") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError("has no audio stream", path)
            ctx = streams[0].codec_context
            return int(ctx.sample_rate), int(ctx.layout.nb_channels), ctx.name.removesuffix("float")
    except (av.error.FFmpegError, OSError) as e:
        raise AudioError(f"cannot be opened ({str(e).splitlines()[0]})", path) from None


def probe(path: str | os.PathLike) -> Probe:
    """Decode `path` completely; AudioError (one line) when it cannot be, or is silent."""
    audio.duration(path)  # the decoder's own checks and wording for files that do not open
    rate, channels, codec = _format(path)
    h = hashlib.sha256()
    samples = 0
    for block in audio.stream(path, sr=rate, block_seconds=60.0):
        h.update(block.tobytes())
        samples += block.size
    return Probe(samples / rate, rate, channels, codec, h.hexdigest())


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
