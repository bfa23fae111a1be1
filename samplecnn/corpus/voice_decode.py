"""One voice clip -> mono float32 at 22050 Hz, and the FLAC it is stored as.

Why not samplecnn.audio: that decoder opens files by content sniffing with strict-ish metadata handling, which is
right for music a user hands us but not for two kinds of voice files Debian ships: Asterisk's raw G.722 prompts (no
container at all: ffmpeg must be told `format='g722'`) and KTuberling's Ogg files with cp1251 tags (opened with
`metadata_errors='ignore'`, the tags are never read anyway). The signal path is the same: PyAV decodes, channels are
averaged before resampling, soxr 'HQ' resamples. Clips are seconds long, so each is decoded whole.

Silence is judged on the whole clip: a peak under samplecnn.audio.SILENCE_PEAK (digital silence), or an RMS level
under SILENT_RMS_DBFS (Asterisk's silence/N.g722 files hold faint line noise, not zeros).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
import soxr

from ..audio import SILENCE_PEAK
from ..errors import AudioError
from ..segments import SAMPLE_RATE

__all__ = ["SILENT_RMS_DBFS", "Clip", "decode", "write_flac"]

SILENT_RMS_DBFS = -55.0  # speech sits at -30..-15 dBFS RMS; a clip this quiet overall is room tone at best
_FORMATS = {".g722": "g722"}  # raw streams without a container: ffmpeg cannot guess these from the bytes
_FRAME = 4608  # samples per FLAC frame handed to the encoder
_INT_SCALE = {"u8": 1 / 128, "s16": 1 / 2**15, "s32": 1 / 2**31, "s64": 1 / 2**63}


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray  # mono float32 at SAMPLE_RATE
    source_rate: int
    source_channels: int
    codec: str

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE


def _mono(frame) -> np.ndarray:
    """A decoded frame as mono float32 in [-1, 1] (channels averaged, integers scaled)."""
    x = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        x = x.reshape(-1, channels).T
    base = frame.format.name.rstrip("p")
    x = x.astype(np.float64 if base in ("dbl", "s32", "s64") else np.float32)
    if base == "u8":
        x = x - 128.0
    x = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    return (x * _INT_SCALE.get(base, 1.0)).astype(np.float32)


def _reason(e: BaseException) -> str:
    """ffmpeg's message without the file name it repeats (the row already names the file)."""
    text = str(getattr(e, "strerror", None) or e).strip()
    text = (text.splitlines() or [type(e).__name__])[0]
    return text[:1].lower() + text[1:]


def decode(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> Clip:
    """The whole clip at `sr`; AudioError (one line) when it cannot be decoded, is empty, not finite or silent."""
    path = Path(path)
    if not path.is_file():
        raise AudioError("is not a file", path)
    if path.stat().st_size == 0:
        raise AudioError("is empty (0 bytes)", path)
    fmt = _FORMATS.get(path.suffix.lower())
    parts, rate, channels, codec = [], None, 0, ""
    try:
        with av.open("file:" + os.path.abspath(path), format=fmt, metadata_errors="ignore",
                     options={"protocol_whitelist": "file"}) as container:
            if not container.streams.audio:
                raise AudioError("has no audio stream", path)
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            demux = container.demux(stream)
            while True:
                try:
                    packet = next(demux)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    if not parts:
                        raise AudioError(f"cannot be decoded ({_reason(e)})", path) from None
                    break  # after the audio: a damaged tail or an odd trailer (KLettres' Czech syllables), kept
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue  # a damaged packet is a glitch, not the end (as ffmpeg's own tool does)
                for frame in frames:
                    if not frame.samples:
                        continue
                    if rate is None:
                        rate, channels = frame.sample_rate, frame.layout.nb_channels
                    elif frame.sample_rate != rate:
                        raise AudioError("changes its sample rate mid-clip", path)
                    parts.append(_mono(frame))
    except AudioError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(f"cannot be decoded ({_reason(e)})", path) from None
    if not parts:
        raise AudioError("contains no audio", path)
    x = np.concatenate(parts)
    if not np.isfinite(x).all():
        raise AudioError("contains NaN or infinite samples", path)
    y = x if rate == sr else soxr.resample(x, rate, sr, quality="HQ").astype(np.float32, copy=False)
    peak = float(np.abs(y).max()) if y.size else 0.0
    rms = math.sqrt(float(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    if peak < SILENCE_PEAK or rms <= 10 ** (SILENT_RMS_DBFS / 20):
        level = f"{20 * math.log10(rms):.0f}" if rms > 0 else "-inf"
        raise AudioError(f"is silent (RMS {level} dBFS)", path)
    return Clip(y, int(rate), int(channels), codec.removesuffix("float"))


def write_flac(path: Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """16-bit mono FLAC, written with PyAV (no extra dependency). A clip whose resampled peak passes full scale is
    scaled down rather than clipped."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    scale = 32767.0 / peak if peak > 1.0 else 32767.0
    pcm = np.round(samples.astype(np.float64) * scale).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=sr, layout="mono")
        stream.format = "s16"
        for start in range(0, pcm.size, _FRAME):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + _FRAME], format="s16", layout="mono")
            frame.sample_rate = sr
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
