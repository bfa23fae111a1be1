"""Audio input: decode any common file to mono float32 at 22050 Hz, in blocks, with one-line errors.

Why this shape:
- Files are decoded with PyAV (ffmpeg) frame by frame and handed out in fixed-size blocks, so a two-hour file never
  sits in memory whole; `decode_mono` is just the concatenation for short files.
- Channels are averaged to mono *before* resampling (half the resampling work for stereo, and a plain average
  rather than ffmpeg's surround matrix, which would weight the centre and drop the LFE).
- Resampling is soxr 'HQ' (streaming). ffmpeg's default libswresample filter, which PyAV's AudioResampler uses,
  lets a 12 kHz tone through at -33 dB (11.5 kHz: -20 dB) when going 44.1 kHz -> 22.05 kHz (soxr: -140 dB), and it
  is also slower than this path (PyAV decode + numpy downmix + soxr; README, Benchmarks: bench_decode.py).
- Problems a user can cause (missing, not audio, no audio stream, NaN, silent...) raise `AudioError`, a single line
  naming the file; no ffmpeg exception or traceback escapes for them. A whole-file check (silence) can only
  happen at the end, so `stream()` raises it after the last block: a consumer needs no check of its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import av
import av.error
import numpy as np
import soxr

from .errors import AudioError
from .segments import SAMPLE_RATE

__all__ = [
    "AUDIO_EXTENSIONS",
    "SILENCE_PEAK",
    "AudioStream",
    "stream",
    "decode_mono",
    "duration",
    "validate",
    "to_mono_resampled",
    "find_audio",
]

# Extensions picked up when walking folders; each one is decoded in tests/test_audio.py. A file named explicitly is
# always tried, whatever its extension: the decoder judges it.
AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3", ".ogg", ".oga", ".opus", ".flac", ".wav", ".m4a", ".aac", ".mp4",
        ".aif", ".aiff", ".wma", ".webm", ".mka", ".wv", ".caf",
    }
)

# A file whose loudest sample (mono, at the output rate) stays below this is "silent": -80 dBFS, under 4 LSB of
# 16-bit audio, i.e. digital silence, dither or hiss only. Tags predicted from it would be meaningless.
SILENCE_PEAK = 1e-4

_RESAMPLE_QUALITY = "HQ"
_FEED_SECONDS = 1.0  # source audio gathered before each soxr call: per-call overhead vs. latency/memory
_DTYPES = {"u8": np.dtype("u1"), "s16": np.dtype("i2"), "s32": np.dtype("i4"), "s64": np.dtype("i8"),
           "flt": np.dtype("f4"), "dbl": np.dtype("f8")}  # ffmpeg sample formats (native byte order)
_INT_SCALE = {"u8": 1 / 128, "s16": 1 / 2**15, "s32": 1 / 2**31, "s64": 1 / 2**63}


# ----------------------------------------------------------------------------------------------------------------
# files


def _reason(exc: BaseException) -> str:
    """The first line of an ffmpeg/OS error, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return text[:1].lower() + text[1:]


def _check_file(path: Path) -> None:
    """Errors that need no decoder, with plain wording (ffmpeg's would be cryptic)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError("no such file", path) from None
    except OSError as e:
        raise AudioError(f"cannot be read ({_reason(e)})", path) from None
    if path.is_dir():
        raise AudioError("is a folder, not an audio file", path)
    if not path.is_file():
        raise AudioError("is not a regular file", path)
    if st.st_size == 0:
        raise AudioError("is empty (0 bytes)", path)
    if not os.access(path, os.R_OK):
        raise AudioError("cannot be read (permission denied)", path)


def _open(path: Path):
    """Open `path` with ffmpeg and pick its first audio stream; returns (container, audio_stream)."""
    _check_file(path)
    try:
        # "file:" stops ffmpeg from reading a name like "concat:a|b" or "http:x" as a protocol; the whitelist keeps
        # playlist-like formats from opening anything but local files.
        container = av.open(
            "file:" + os.path.abspath(path),
            metadata_errors="replace",
            container_options={"protocol_whitelist": "file"},
        )
    except av.error.InvalidDataError as e:
        raise AudioError(f"not an audio file ({_reason(e)})", path) from None
    except (av.error.FFmpegError, OSError) as e:
        raise AudioError(f"cannot be opened ({_reason(e)})", path) from None
    audio = [s for s in container.streams if s.type == "audio"]
    if not audio:
        fmt = container.format.name
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if fmt.endswith("_pipe") or fmt == "image2":
            kind = "an" if fmt == "image2" else "a " + fmt.removesuffix("_pipe").split("_")[0].upper()
            raise AudioError(f"not an audio file (it looks like {kind} image)", path)
        if fmt == "tty":
            raise AudioError("not an audio file (it looks like text)", path)
        found = "only " + " and ".join(kinds) if kinds else "no streams at all"
        raise AudioError(f"has no audio stream ({found})", path)
    return container, audio[0]


def _seconds(container, stream) -> float | None:
    """Duration from the metadata (cheap, may be an estimate for some mp3s), or None when unknown."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def duration(path: str | os.PathLike) -> float | None:
    """Length in seconds from the container's metadata, without decoding (for progress bars); None if unknown."""
    path = Path(path)
    container, astream = _open(path)
    try:
        return _seconds(container, astream)
    finally:
        container.close()


# ----------------------------------------------------------------------------------------------------------------
# decoding


def _frame_to_mono(frame) -> np.ndarray:
    """One decoded frame as a mono float32 array in [-1, 1]: channels averaged, integers scaled.

    Reads the planes directly (no to_ndarray/np.mean per frame): this loop runs ~40 times per second of audio."""
    n = frame.samples
    channels = frame.layout.nb_channels
    fmt = frame.format
    base = fmt.name.rstrip("p")
    dtype = _DTYPES[base]
    if fmt.is_planar:
        planes = [np.frombuffer(p, dtype, n) for p in frame.planes[:channels]]
        if channels == 1:
            x = planes[0]
        else:
            acc = np.float64 if dtype.itemsize == 8 else np.float32
            x = planes[0].astype(acc)
            for p in planes[1:]:
                x += p
            x *= 1.0 / channels
    else:
        x = np.frombuffer(frame.planes[0], dtype, n * channels)
        if channels > 1:
            x = x.reshape(n, channels).mean(axis=1, dtype=np.float64 if dtype.itemsize == 8 else np.float32)
    if base == "u8":
        return (x.astype(np.float32) - np.float32(128.0)) * np.float32(_INT_SCALE["u8"])
    if base in _INT_SCALE:
        return x.astype(np.float32) * np.float32(_INT_SCALE[base])
    return x.astype(np.float32, copy=False)


class _Resampler:
    """soxr 'HQ' in streaming mode, or a pass-through when the rates already match."""

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in = sr_in
        self._rs = None if sr_in == sr_out else soxr.ResampleStream(
            sr_in, sr_out, 1, dtype="float32", quality=_RESAMPLE_QUALITY
        )

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return x
        return self._rs.resample_chunk(x, last=last)


class AudioStream:
    """Iterator over the blocks of one file (see `stream`); also a context manager that closes the file.

    `duration` is the metadata's length in seconds (None if unknown), for a progress bar.
    """

    def __init__(self, path: str | os.PathLike, sr: int = SAMPLE_RATE, block_seconds: float = 30.0):
        if int(sr) != sr or sr <= 0:
            raise ValueError(f"sr must be a positive integer, not {sr!r}")
        if not block_seconds > 0:
            raise ValueError(f"block_seconds must be positive, not {block_seconds!r}")
        self.path = Path(path)
        self.sr = int(sr)
        self.block_samples = max(1, int(round(block_seconds * self.sr)))
        self._container, self._astream = _open(self.path)
        self.duration = _seconds(self._container, self._astream)
        self._blocks = self._generate()

    def __iter__(self) -> "AudioStream":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._blocks)

    def close(self) -> None:
        self._blocks.close()
        self._container.close()

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        """(sample rate, mono float32) per decoded frame. Undecodable packets are skipped as ffmpeg's own tool does
        (a glitch, not the end); a demuxing error after some audio is taken as a truncated file's end."""
        got_audio = False
        bad_packets = 0
        last_error: BaseException | None = None
        demux = self._container.demux(self._astream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as e:
                if not got_audio:
                    raise AudioError(f"cannot be decoded ({_reason(e)})", self.path) from None
                break  # truncated or damaged tail: keep what was decoded
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                bad_packets += 1
                last_error = e
                continue
            for frame in frames:
                if frame.samples:
                    got_audio = True
                    yield frame.sample_rate, _frame_to_mono(frame)
        if not got_audio and bad_packets:
            raise AudioError(f"not an audio file, or its audio is damaged ({_reason(last_error)})", self.path)

    def _generate(self) -> Iterator[np.ndarray]:
        try:
            yield from self._blocks_of(self._resampled())
        except (av.error.FFmpegError, OSError) as e:
            # anything ffmpeg or the OS still throws mid-file (I/O error, decoder bug) stays a one-line AudioError
            raise AudioError(f"cannot be decoded ({_reason(e)})", self.path) from None
        finally:
            self._container.close()

    def _resampled(self) -> Iterator[np.ndarray]:
        """Resampled mono chunks, with the NaN check done on the source samples and the silence check at the end."""
        resampler: _Resampler | None = None
        pending: list[np.ndarray] = []
        pending_n = 0
        peak = 0.0
        total = 0

        def feed(last: bool) -> np.ndarray:
            nonlocal pending, pending_n
            # always a fresh array: a lone frame is a view of ffmpeg's frame buffer, which pass-through
            # (rate == sr) would otherwise hand to the caller
            x = np.concatenate(pending) if len(pending) > 1 else np.array(pending[0] if pending else (), np.float32)
            pending, pending_n = [], 0
            if x.size and not np.isfinite(x).all():
                raise AudioError("contains NaN or infinite samples", self.path)
            return resampler(x, last=last)

        def account(y: np.ndarray) -> np.ndarray:
            nonlocal peak, total
            if y.size:
                peak = max(peak, float(y.max()), -float(y.min()))
                total += y.size
            return y

        for rate, mono in self._decoded():
            if resampler is None or rate != resampler.sr_in:
                if resampler is not None:  # the rate changed mid-file (chained streams): finish the old filter
                    yield account(feed(last=True))
                resampler = _Resampler(rate, self.sr)
            pending.append(mono)
            pending_n += mono.size
            if pending_n >= _FEED_SECONDS * rate:
                yield account(feed(last=False))
        if resampler is not None:
            yield account(feed(last=True))
        if total == 0:
            raise AudioError("contains no audio", self.path)
        if peak < SILENCE_PEAK:
            raise AudioError(f"is silent (peak level {_dbfs(peak)} dBFS)", self.path)

    def _blocks_of(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Re-cut resampled chunks into blocks of exactly block_samples (the last one shorter, never empty)."""
        size = self.block_samples
        buf: list[np.ndarray] = []
        n = 0
        for y in chunks:
            if not y.size:
                continue
            buf.append(y)
            n += y.size
            if n >= size:
                joined = np.concatenate(buf) if len(buf) > 1 else buf[0]
                cut = (n // size) * size
                for i in range(0, cut, size):
                    yield joined[i : i + size]
                rest = joined[cut:]
                buf, n = ([rest] if rest.size else []), rest.size
        if n:
            yield np.concatenate(buf) if len(buf) > 1 else buf[0]


def _dbfs(peak: float) -> str:
    return "-inf" if peak <= 0 else f"{20 * math.log10(peak):.0f}"


def stream(path: str | os.PathLike, sr: int = SAMPLE_RATE, block_seconds: float = 30.0) -> AudioStream:
    """Decode `path` to mono float32 at `sr` in blocks of `block_seconds` (the last one shorter).

    File problems found before decoding (missing, not audio, no audio stream) raise AudioError right here; NaN or
    infinite samples raise when reached; "contains no audio" and "is silent" raise after the last block, so a
    consumer's `for block in stream(p)` ends in AudioError for them without checking anything itself.
    A truncated file yields what could be decoded up to the cut (a file cut inside its header fails to open).
    """
    return AudioStream(path, sr=sr, block_seconds=block_seconds)


def decode_mono(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The whole file as one mono float32 array at `sr` (same checks as `stream`); for clips, not for hours."""
    with stream(path, sr=sr, block_seconds=600.0) as blocks:
        parts = list(blocks)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


# ----------------------------------------------------------------------------------------------------------------
# arrays passed in memory (tagger.tag(array, sr=44100))


def _as_float_array(samples, name: str) -> np.ndarray:
    """`samples` as a float array: integer PCM scaled to [-1, 1] the way decoders do; shape checked."""
    try:
        a = np.asarray(samples)
    except Exception as e:  # e.g. ragged lists
        raise AudioError(f"is not a numeric array ({_reason(e)})", name) from None
    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype.kind == "i":
        a = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))
    elif a.dtype.kind == "u":
        raise AudioError(f"unsigned {a.dtype} samples are ambiguous: pass floats in [-1, 1]", name)
    elif a.dtype.kind != "f":
        raise AudioError(f"is not a numeric audio array (dtype {a.dtype})", name)
    if a.ndim not in (1, 2):
        raise AudioError(f"must be 1-D (mono) or 2-D (channels x samples), not {a.ndim}-D {a.shape}", name)
    if a.size == 0:
        raise AudioError(f"contains no audio (shape {a.shape})", name)
    return a


def _channel_axis(a: np.ndarray, name: str) -> int | None:
    """None for 1-D; else the shorter axis, which must look like channels (<= 64 of them)."""
    if a.ndim == 1:
        return None
    rows, cols = a.shape
    if rows == cols or min(rows, cols) > 64:
        raise AudioError(
            f"cannot tell channels from samples in shape {a.shape}: pass (channels, samples) or 1-D mono", name
        )
    return 0 if rows < cols else 1


def _checked(samples, name: str) -> tuple[np.ndarray, int | None]:
    a = _as_float_array(samples, name)
    axis = _channel_axis(a, name)
    if not np.isfinite(a).all():
        raise AudioError("contains NaN or infinite samples", name)
    peak = float(np.max(np.abs(a)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"is silent (peak level {_dbfs(peak)} dBFS)", name)
    return a, axis


def validate(samples, name: str = "<array>") -> None:
    """Raise AudioError unless `samples` is usable audio: 1-D mono, or 2-D (channels, n) / (n, channels) with the
    shorter axis taken as channels; non-empty, finite, and not silent (peak >= SILENCE_PEAK, -80 dBFS)."""
    _checked(samples, name)


def to_mono_resampled(samples, sr_in: int, sr_out: int = SAMPLE_RATE, name: str = "<array>") -> np.ndarray:
    """An in-memory signal as a new mono float32 array at `sr_out`, after the checks of `validate`: channels
    averaged, then the same soxr 'HQ' resampler as for files (none when the rates match)."""
    if isinstance(sr_in, bool) or not isinstance(sr_in, (int, np.integer, float)) or sr_in <= 0 or int(sr_in) != sr_in:
        raise AudioError(f"sample rate must be a positive whole number of Hz, not {sr_in!r}", name)
    if int(sr_out) != sr_out or sr_out <= 0:
        raise ValueError(f"sr_out must be a positive integer, not {sr_out!r}")
    a, axis = _checked(samples, name)
    mono = a if axis is None else a.mean(axis=axis)
    mono = np.array(mono, dtype=np.float32, order="C")  # always a copy: the caller's array is never aliased
    if int(sr_in) == int(sr_out):
        return mono
    return _Resampler(int(sr_in), int(sr_out))(mono, last=True)


# ----------------------------------------------------------------------------------------------------------------
# finding files


def find_audio(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], list[AudioError]]:
    """Expand files and folders into audio files, in a stable order, plus one AudioError per problem.

    A file is taken as is (even with an unknown extension: the decoder will judge it). A folder is walked
    recursively for AUDIO_EXTENSIONS (any case), skipping hidden files and folders, sorted by path; a folder with
    no audio at all is an error. Arguments keep their order; a file reached twice is listed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    errors: list[AudioError] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = _walk(p, errors)
            if not found:
                errors.append(AudioError("no audio files found in this folder", p))
            for f in found:
                add(f)
        elif p.is_file():
            add(p)
        elif p.exists():
            errors.append(AudioError("is not a regular file or folder", p))
        else:
            errors.append(AudioError("no such file or directory", p))
    return files, errors


def _walk(root: Path, errors: list[AudioError]) -> list[Path]:
    """Audio files under `root`, sorted; follows folder symlinks once each (no loops)."""
    found: list[Path] = []
    visited: set[str] = set()

    def onerror(e: OSError) -> None:
        errors.append(AudioError(f"cannot read this folder ({_reason(e)})", e.filename or root))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in filenames:
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() in AUDIO_EXTENSIONS:
                full = Path(dirpath, fname)
                if full.is_file():
                    found.append(full)
    found.sort(key=lambda f: f.relative_to(root).parts)
    return found
