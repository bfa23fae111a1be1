"""Checks that make a metadata write safe: is the file's container whole, and is its decoded audio unchanged?

Why these exist: mutagen trusts the container's own size fields. In a WAV cut short, the RIFF header still claims
the full length, so mutagen places its tag chunk where the data chunk says the audio goes on, and every decoder
then plays the tag as audio. A write is therefore refused unless every chunk, atom, page or block the file claims
lies inside it, and after a write the decoded audio is compared with what it was before.

Only the structure is read (headers, not the audio), so the container check costs a few reads per file.
"""

from __future__ import annotations

import hashlib
import os
import struct

from ..errors import SampleCNNError

_FINGERPRINT_VERSION = b"samplecnn-audio-1"


def check_container(path: str | os.PathLike) -> None:
    """Raise a one-line SampleCNNError unless `path`'s container is intact (judged by its first bytes, not by
    mutagen, which may not even parse a broken one). A file of no known container (a bare mp3) has nothing to check."""
    try:
        with open(path, "rb") as fh:
            walk = _walker(fh.read(12))
            reason = walk(fh, os.fstat(fh.fileno()).st_size) if walk is not None else None
    except OSError as e:
        raise SampleCNNError(f"cannot be read ({e.strerror or e})", path) from None
    if reason is not None:
        raise SampleCNNError(f"its container is not intact ({reason}): not written", path)


def check_format(f, path: str | os.PathLike) -> None:
    """Only formats whose structure is understood here are written: for any other, mutagen would be trusted blindly."""
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.ogg import OggFileType
    from mutagen.wave import WAVE

    if not isinstance(f, (WAVE, AIFF, FLAC, OggFileType, MP4, MP3)):
        raise SampleCNNError("metadata writing is not supported for this file's format", path)


def _walker(head: bytes):
    if head[:4] == b"RIFF":
        return _riff
    if head[:4] == b"FORM":
        return _aiff
    if head[:4] == b"OggS":
        return _ogg
    if head[:4] == b"fLaC":
        return _flac
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return _mp4
    if head[:3] == b"ID3":
        return _after_id3
    return None


def _after_id3(fh, size: int) -> str | None:
    """An ID3v2 tag in front of an mp3, or of a FLAC stream."""
    pos = _id3v2_end(fh, size)
    if isinstance(pos, str):
        return pos
    fh.seek(pos)
    if fh.read(4) == b"fLaC":
        return _flac(fh, size)
    return "nothing after its ID3v2 tag" if pos >= size else None


def _riff(fh, size: int) -> str | None:
    return _chunks(fh, size, b"RIFF", "<I", (b"WAVE",), b"data")


def _aiff(fh, size: int) -> str | None:
    return _chunks(fh, size, b"FORM", ">I", (b"AIFF", b"AIFC"), b"SSND")


def _chunks(fh, size: int, magic: bytes, fmt: str, forms: tuple, audio_chunk: bytes) -> str | None:
    """RIFF/IFF: the outer size must be the file's, and every chunk must end inside it."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != magic or head[8:12] not in forms:
        return f"no {magic.decode()} header"
    declared = struct.unpack(fmt, head[4:8])[0] + 8
    if declared > size:
        return f"its header claims {declared} bytes but the file has {size}: truncated"
    if declared < size - 1:
        return f"its header claims {declared} bytes but the file has {size}"
    pos, found = 12, False
    while pos + 8 <= declared:
        fh.seek(pos)
        cid, n = fh.read(4), struct.unpack(fmt, fh.read(4))[0]
        end = pos + 8 + n
        if end > declared:
            return f"its {cid.decode('latin-1').strip()!r} chunk runs {end - declared} bytes past the end: truncated"
        found = found or cid == audio_chunk
        pos = end + (n & 1)
    if pos < declared:
        return "it ends inside a chunk header"
    return None if found else f"no {audio_chunk.decode()!r} chunk"


def _flac(fh, size: int) -> str | None:
    """An optional ID3v2 prefix, fLaC, metadata blocks that fit, then a frame sync."""
    pos = _id3v2_end(fh, size)
    if isinstance(pos, str):
        return pos
    fh.seek(pos)
    if fh.read(4) != b"fLaC":
        return "no fLaC marker"
    pos += 4
    while True:
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 4:
            return "it ends inside its metadata blocks: truncated"
        pos += 4 + int.from_bytes(head[1:], "big")
        if pos > size:
            return "a metadata block runs past the end: truncated"
        if head[0] & 0x80:
            break
    fh.seek(pos)
    sync = fh.read(2)
    if len(sync) < 2 or sync[0] != 0xFF or sync[1] & 0xFE != 0xF8:
        return "no audio frame after its metadata blocks"
    return None


def _ogg(fh, size: int) -> str | None:
    """Every page whole, the last one ending exactly at the end of the file."""
    pos = 0
    while pos < size:
        fh.seek(pos)
        head = fh.read(27)
        if len(head) < 27 or head[:4] != b"OggS" or head[4] != 0:
            return f"no Ogg page at byte {pos}"
        table = fh.read(head[26])
        if len(table) < head[26]:
            return "its last page is cut short: truncated"
        pos += 27 + len(table) + sum(table)
    return "its last page is cut short: truncated" if pos > size else None


def _mp4(fh, size: int) -> str | None:
    """Top-level atoms laid end to end up to the end of the file, one of them moov."""
    pos, names = 0, set()
    while pos < size:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return "it ends inside an atom header: truncated"
        n, name = struct.unpack(">I", head[:4])[0], head[4:]
        if n == 1:
            ext = fh.read(8)
            if len(ext) < 8:
                return "it ends inside an atom header: truncated"
            n = struct.unpack(">Q", ext)[0]
        elif n == 0:
            n = size - pos
        if n < 8:
            return f"an atom of {n} bytes at byte {pos}"
        if pos + n > size:
            return f"its {name.decode('latin-1')!r} atom runs {pos + n - size} bytes past the end: truncated"
        names.add(name)
        pos += n
    return None if b"moov" in names else "no moov atom"


def _id3v2_end(fh, size: int) -> int | str:
    """Where an ID3v2 tag at the start ends (0 without one), or what is wrong with its header."""
    fh.seek(0)
    head = fh.read(10)
    if head[:3] != b"ID3":
        return 0
    if len(head) < 10 or any(b & 0x80 for b in head[6:10]):
        return "a damaged ID3v2 header"
    n = 0
    for b in head[6:10]:
        n = (n << 7) | b
    end = 10 + n + (10 if head[5] & 0x10 else 0)
    return end if end <= size else "its ID3v2 tag runs past the end: truncated"


def audio_fingerprint(path: str | os.PathLike) -> str:
    """A hash of every decoded sample of the first audio stream, with its rate, layout and format.

    Decoded with PyAV exactly as ffmpeg gives it (no resampling, no downmix), so any change a player could hear,
    or a changed number of frames, changes the fingerprint."""
    import av
    import av.error

    h = hashlib.blake2b(_FINGERPRINT_VERSION, digest_size=16)
    try:
        with av.open("file:" + os.path.abspath(path), container_options={"protocol_whitelist": "file"}) as c:
            streams = [s for s in c.streams if s.type == "audio"]
            if not streams:
                raise SampleCNNError("has no audio stream to verify a write against", path)
            for frame in c.decode(streams[0]):
                h.update(f"{frame.sample_rate} {frame.layout.name} {frame.format.name} {frame.samples};".encode())
                _hash_samples(h, frame)
    except (av.error.FFmpegError, OSError) as e:
        raise SampleCNNError(f"cannot be decoded to verify a write ({e}): not written", path) from None
    return h.hexdigest()


def _hash_samples(h, frame) -> None:
    """Only the bytes that hold samples: a plane's buffer is padded for alignment, and the padding is not audio."""
    fmt = frame.format
    per_plane = frame.samples * fmt.bytes * (1 if fmt.is_planar else frame.layout.nb_channels)
    for plane in frame.planes[:frame.layout.nb_channels if fmt.is_planar else 1]:
        h.update(memoryview(plane)[:per_plane])
