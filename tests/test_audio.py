"""samplecnn.audio: every accepted format decodes to the right signal at 22050 Hz mono; bad input is one clear line.

Fixtures are synthesised in tmp_path with PyAV's encoders (and soundfile), from an analytic signal: three tones plus
a quiet chirp (so that cross-correlation finds a codec's delay without the tones' periodic ambiguity).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from samplecnn import audio
from samplecnn.audio import AUDIO_EXTENSIONS, AudioError

from conftest import encode_audio as write_av

SR = 22050
DUR = 2.0
TONES = ((440.0, 0.2), (1000.0, 0.15), (2500.0, 0.1))
CHIRP = (300.0, 3300.0, 0.05)  # start Hz, end Hz, amplitude
EDGE = int(0.1 * SR)  # resampler/codec edge transients are not compared


def reference(sr: int, dur: float = DUR) -> np.ndarray:
    t = np.arange(int(round(dur * sr))) / sr
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in TONES)
    f0, f1, a = CHIRP
    x = x + a * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t * t))
    return x


def snr_db(y, ref) -> float:
    return 10 * np.log10(np.sum(ref**2) / max(np.sum((y - ref) ** 2), 1e-30))


def align(y, ref, max_lag):
    """y shifted by the lag (|lag| <= max_lag) that best matches ref, both cut to the common middle."""
    n = min(len(y), len(ref))
    seg = ref[max_lag + EDGE : n - max_lag - EDGE]
    m = len(y) + len(seg)
    nfft = 1 << (m - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(seg, nfft)), nfft)
    lags = np.arange(-max_lag, max_lag + 1)
    lag = lags[np.argmax(corr[max_lag + EDGE + lags])]
    start = max_lag + EDGE + lag
    return y[start : start + len(seg)], seg, int(lag)


def tone_amplitude(y, f, sr=SR) -> float:
    t = np.arange(len(y)) / sr
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef))


def spectral_peaks(y, k, sr=SR):
    """Frequencies of the k strongest spectral peaks (each peak's +-30 Hz neighbourhood blanked after picking)."""
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    peaks = []
    for _ in range(k):
        i = int(np.argmax(spec))
        peaks.append(freqs[i])
        spec[np.abs(freqs - freqs[i]) < 30] = 0
    return sorted(peaks)


# name, extension, codec, container format, sample format, source rate, channels, options, minimum SNR (dB), lossy
LOSSLESS = [
    ("wav-u8-11025-mono", ".wav", "pcm_u8", "wav", None, 11025, 1, {}, 35),
    ("wav-s16-44100-stereo", ".wav", "pcm_s16le", "wav", None, 44100, 2, {}, 80),
    ("wav-s24-96000-mono", ".wav", "pcm_s24le", "wav", None, 96000, 1, {}, 100),
    ("wav-s32-8000-stereo", ".wav", "pcm_s32le", "wav", None, 8000, 2, {}, 100),
    ("wav-f32-48000-5.1", ".wav", "pcm_f32le", "wav", None, 48000, 6, {}, 100),
    ("wav-f64-32000-mono", ".wav", "pcm_f64le", "wav", None, 32000, 1, {}, 100),
    ("flac-s16-44100-stereo", ".flac", "flac", "flac", "s16", 44100, 2, {}, 80),
    ("flac-s32-96000-5.1", ".flac", "flac", "flac", "s32", 96000, 6, {}, 100),
    ("oga-flac-11025-stereo", ".oga", "flac", "ogg", "s16", 11025, 2, {}, 80),
    ("mka-flac-48000-mono", ".mka", "flac", "matroska", "s16", 48000, 1, {}, 80),
    ("aiff-s16be-22050-mono", ".aiff", "pcm_s16be", "aiff", None, 22050, 1, {}, 80),
    ("aif-s24be-8000-stereo", ".aif", "pcm_s24be", "aiff", None, 8000, 2, {}, 100),
    ("wv-wavpack-32000-stereo", ".wv", "wavpack", "wv", "fltp", 32000, 2, {}, 100),
    # (PCM in CAF: ffmpeg's CAF reader drops the last partial ALAC packet, <0.1 s, even of libsndfile's files)
    ("caf-s16-44100-mono", ".caf", "pcm_s16le", "caf", None, 44100, 1, {}, 80),
    ("m4a-alac-44100-stereo", ".m4a", "alac", "ipod", "s16p", 44100, 2, {}, 80),
]
VORBIS = {"strict": "-2"}  # ffmpeg's native vorbis encoder is "experimental"
LOSSY = [  # (LAME scales its input by 0.95: the SNR is measured after fitting the gain)
    ("mp3-44100-stereo", ".mp3", "libmp3lame", "mp3", None, 44100, 2, {"b": "128k"}, 40),
    ("mp3-32000-mono", ".mp3", "libmp3lame", "mp3", None, 32000, 1, {"b": "96k"}, 40),
    ("mp3-22050-mono", ".mp3", "libmp3lame", "mp3", None, 22050, 1, {"b": "64k"}, 40),
    ("mp3-8000-mono", ".mp3", "libmp3lame", "mp3", None, 8000, 1, {"b": "32k"}, 40),
    ("ogg-vorbis-44100-stereo", ".ogg", "vorbis", "ogg", None, 44100, 2, VORBIS, 30),
    ("ogg-vorbis-32000-stereo", ".ogg", "vorbis", "ogg", None, 32000, 2, VORBIS, 30),
    ("opus-48000-stereo", ".opus", "libopus", "opus", None, 48000, 2, {"b": "96k"}, 30),
    ("opus-48000-mono", ".opus", "libopus", "opus", None, 48000, 1, {"b": "64k"}, 30),
    ("webm-opus-48000-stereo", ".webm", "libopus", "webm", None, 48000, 2, {"b": "96k"}, 30),
    ("m4a-aac-44100-stereo", ".m4a", "aac", "ipod", None, 44100, 2, {"b": "128k"}, 40),
    ("m4a-aac-48000-5.1", ".m4a", "aac", "ipod", None, 48000, 6, {"b": "256k"}, 15),  # ffmpeg's AAC encoder is
    ("aac-adts-32000-mono", ".aac", "aac", "adts", None, 32000, 1, {"b": "96k"}, 15),  # mediocre on these two
    ("mp4-aac-96000-stereo", ".mp4", "aac", "mp4", None, 96000, 2, {"b": "192k"}, 35),
    ("wma-wmav2-44100-stereo", ".wma", "wmav2", "asf", None, 44100, 2, {"b": "128k"}, 35),
]


def make_case(tmp_path, case):
    name, ext, codec, fmt, sample_fmt, sr, ch, opts, *_ = case
    x = np.tile(reference(sr), (ch, 1))
    expected = reference(SR)
    if ch == 6 and codec == "aac":
        x[3] = 0  # AAC band-limits the LFE channel: keep it silent, so the average is 5/6 of the signal
        expected = expected * 5 / 6
    opts = dict(opts)
    bit_rate = opts.pop("b", None)
    bit_rate = bit_rate and int(bit_rate[:-1]) * 1000
    path = write_av(tmp_path / (name + ext), x, sr, codec, fmt, sample_fmt, bit_rate, opts)
    return path, expected


def test_extensions_are_all_tested():
    assert {c[1] for c in LOSSLESS + LOSSY} == set(AUDIO_EXTENSIONS)
    assert all(e == e.lower() and e.startswith(".") for e in AUDIO_EXTENSIONS)


@pytest.mark.parametrize("case", LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_lossless_formats_decode_exactly(tmp_path, case):
    path, expected = make_case(tmp_path, case)
    sr_in, min_snr = case[5], case[8]
    y = audio.decode_mono(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - round(DUR * sr_in) * SR / sr_in) <= 1
    mid = slice(EDGE, len(expected) - EDGE)
    assert snr_db(y[mid], expected[mid]) > min_snr
    assert spectral_peaks(y[mid], 3) == pytest.approx([f for f, _ in TONES], abs=2)


@pytest.mark.parametrize("case", LOSSY, ids=[c[0] for c in LOSSY])
def test_lossy_formats_decode_close(tmp_path, case):
    path, expected = make_case(tmp_path, case)
    min_snr = case[8]
    y = audio.decode_mono(path)
    assert y.dtype == np.float32 and y.ndim == 1
    # ffmpeg trims encoder delay/padding where the container records it (mp3 LAME header, mp4 edit list, opus
    # pre-skip); raw ADTS and WMA keep up to a few codec frames
    assert abs(len(y) - len(expected)) <= 0.1 * SR
    got, ref, lag = align(y, expected, max_lag=int(0.05 * SR))
    gain = np.dot(got, ref) / np.dot(ref, ref)
    assert 0.9 < gain < 1.1
    assert snr_db(got / gain, ref) > min_snr, f"lag {lag}"
    assert spectral_peaks(got, 3) == pytest.approx([f for f, _ in TONES], abs=2)


def test_stream_blocks_concatenate_to_load(tmp_path):
    path = write_av(tmp_path / "a.mp3", np.tile(reference(44100), (2, 1)), 44100, "libmp3lame")
    whole = audio.decode_mono(path)
    with audio.stream(path, block_seconds=0.25) as s:
        assert s.duration == pytest.approx(DUR, abs=0.05)
        blocks = list(s)
    size = round(0.25 * SR)
    assert len(blocks) >= 8
    assert all(len(b) == size for b in blocks[:-1]) and 0 < len(blocks[-1]) <= size
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), whole)


def test_stream_can_be_abandoned_early(tmp_path):
    path = write_av(tmp_path / "a.flac", reference(44100), 44100, "flac", sample_fmt="s16")
    s = audio.stream(path, block_seconds=0.1)
    first = next(s)
    assert len(first) == round(0.1 * SR)
    s.close()  # closes the file; no error, no warning


def test_stereo_is_averaged_to_mono(tmp_path):
    t = np.arange(2 * 44100) / 44100
    lr = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1000 * t)])
    y = audio.decode_mono(write_av(tmp_path / "lr.wav", lr, 44100, "pcm_s16le"))[EDGE:-EDGE]
    assert tone_amplitude(y, 440) == pytest.approx(0.25, rel=0.01)
    assert tone_amplitude(y, 1000) == pytest.approx(0.25, rel=0.01)


def test_six_channels_are_averaged_plainly(tmp_path):
    """A plain mean, not ffmpeg's surround downmix matrix (which would weight the centre and drop the LFE)."""
    t = np.arange(2 * 48000) / 48000
    freqs = [300, 700, 1100, 1500, 1900, 2300]
    x = np.stack([0.6 * np.sin(2 * np.pi * f * t) for f in freqs])
    y = audio.decode_mono(write_av(tmp_path / "six.flac", x, 48000, "flac", sample_fmt="s16"))[EDGE:-EDGE]
    for f in freqs:
        assert tone_amplitude(y, f) == pytest.approx(0.1, rel=0.01), f


def test_file_at_22050_passes_through_untouched(tmp_path):
    x = reference(SR).astype(np.float32)
    sf.write(tmp_path / "same.wav", x, SR, subtype="FLOAT")
    y = audio.decode_mono(tmp_path / "same.wav")
    assert np.array_equal(y, x)


def test_resampler_rejects_aliases(tmp_path):
    """Naive decimation would fold a 12 kHz tone at 44.1 kHz to 10.05 kHz at full level; soxr HQ removes it."""
    t = np.arange(2 * 44100) / 44100
    fade = np.minimum(1, np.minimum(t, t[::-1]) / 0.1)  # no clicks at the ends (a click has energy below 11 kHz)
    sf.write(tmp_path / "12k.wav", fade * 0.5 * np.sin(2 * np.pi * 12000 * t), 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="is silent"):  # nothing of it survives: < -80 dBFS
        audio.decode_mono(tmp_path / "12k.wav")
    x = 0.5 * np.sin(2 * np.pi * 12000 * t) + 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "12k+1k.wav", x, 44100, subtype="FLOAT")
    y = audio.decode_mono(tmp_path / "12k+1k.wav")[EDGE:-EDGE]
    residual = y - 0.5 * np.sin(2 * np.pi * 1000 * (np.arange(len(y)) + EDGE) / SR)
    assert np.sqrt(np.mean(residual**2)) < 0.5 / np.sqrt(2) * 1e-3  # > 60 dB down


def test_resampler_has_no_interpolation_images(tmp_path):
    """A 10 kHz tone from 48 kHz: linear interpolation would leave images/distortion around -20..-30 dB."""
    t = np.arange(2 * 48000) / 48000
    sf.write(tmp_path / "10k.wav", 0.5 * np.sin(2 * np.pi * 10000 * t), 48000, subtype="FLOAT")
    y = audio.decode_mono(tmp_path / "10k.wav")[EDGE:-EDGE].astype(np.float64)
    tt = (np.arange(len(y)) + EDGE) / SR
    basis = np.stack([np.sin(2 * np.pi * 10000 * tt), np.cos(2 * np.pi * 10000 * tt)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    assert np.hypot(*coef) == pytest.approx(0.5, rel=0.01)
    residual = y - basis @ coef
    assert 20 * np.log10(np.sqrt(np.mean(residual**2)) / (0.5 / np.sqrt(2))) < -60


def test_in_memory_arrays():
    x = reference(44100)
    y = audio.to_mono_resampled(x, 44100)
    assert y.dtype == np.float32 and len(y) == len(x) // 2
    ref = reference(SR)
    assert snr_db(y[EDGE:-EDGE], ref[EDGE:-EDGE]) > 100
    stereo = np.stack([x, x])
    assert np.array_equal(audio.to_mono_resampled(stereo, 44100), audio.to_mono_resampled(stereo.T, 44100))
    np.testing.assert_allclose(audio.to_mono_resampled(stereo, 44100), y, atol=1e-6)
    pcm16 = np.round(x * 32767).astype(np.int16)
    assert snr_db(audio.to_mono_resampled(pcm16, 44100)[EDGE:-EDGE], ref[EDGE:-EDGE]) > 80
    same = audio.to_mono_resampled(ref.astype(np.float32), SR)
    assert np.array_equal(same, ref.astype(np.float32))
    audio.validate(stereo.T, "clip")


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.zeros((2, 3, 100)), "must be 1-D"),
        (np.zeros(0), "contains no audio"),
        (np.zeros((2, 0)), "contains no audio"),
        (np.array([0.1, np.nan, 0.2] * 100), "NaN or infinite"),
        (np.array([0.1, np.inf, 0.2] * 100), "NaN or infinite"),
        (np.full(1000, 1e-6), "is silent"),
        (np.zeros((100, 100)), "cannot tell channels"),
        (np.array(["a", "b"]), "not a numeric audio array"),
    ],
)
def test_validate_rejects(samples, message):
    with pytest.raises(AudioError, match=message) as err:
        audio.validate(samples, "my-array")
    assert str(err.value).startswith("my-array: ") and "\n" not in str(err.value)
    with pytest.raises(AudioError, match=message):
        audio.to_mono_resampled(samples, 44100, name="my-array")


def test_in_memory_bad_rate():
    with pytest.raises(AudioError, match="sample rate"):
        audio.to_mono_resampled(np.ones(100) * 0.1, 0)
    with pytest.raises(AudioError, match="sample rate"):
        audio.to_mono_resampled(np.ones(100) * 0.1, 44100.5)


# ---------------------------------------------------------------------------------------------------------------
# bad files


def _png_bytes() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * 24 for _ in range(8))
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _video_only_mp4(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for p in list(s.encode(frame)) + list(s.encode(None)):
            c.mux(p)


def _bad_file(tmp_path, kind) -> Path:
    good_wav = tmp_path / "good.wav"
    sf.write(good_wav, reference(44100), 44100, subtype="PCM_16")
    p = tmp_path / f"{kind}.mp3"
    if kind == "missing":
        return tmp_path / "missing.mp3"
    if kind == "folder":
        p = tmp_path / "folder.mp3"
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("these are my notes\nnot a song\n")
    elif kind == "png":
        p.write_bytes(_png_bytes())
    elif kind == "random":
        p = tmp_path / "random.wav"
        p.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif kind == "cut-in-header":
        p = tmp_path / "cut.wav"
        p.write_bytes(good_wav.read_bytes()[:30])
    elif kind == "cut-flac-header":
        sf.write(tmp_path / "good.flac", reference(44100), 44100)
        p = tmp_path / "cut.flac"
        p.write_bytes((tmp_path / "good.flac").read_bytes()[:20])
    elif kind == "video-only":
        p = tmp_path / "video.mp4"
        _video_only_mp4(p)
    elif kind == "zero-frames":
        p = tmp_path / "zero.wav"
        sf.write(p, np.zeros((0, 1)), 44100, subtype="PCM_16")
    elif kind in ("nan", "inf"):
        x = reference(44100).astype(np.float32)
        x[30000] = np.nan if kind == "nan" else np.inf
        p = tmp_path / f"{kind}.wav"
        sf.write(p, x, 44100, subtype="FLOAT")
    elif kind == "silent-wav":
        p = tmp_path / "silent.wav"
        sf.write(p, np.zeros(44100 * 2), 44100, subtype="PCM_16")
    elif kind == "hiss-wav":  # +-1 LSB of 16-bit noise: -90 dBFS
        p = tmp_path / "hiss.wav"
        sf.write(p, np.random.default_rng(0).integers(-1, 2, 44100).astype(np.int16), 44100, subtype="PCM_16")
    elif kind == "silent-mp3":
        write_av(p, np.zeros((2, 44100 * 2)), 44100, "libmp3lame")
    return p


BAD = [
    ("missing", "no such file"),
    ("folder", "is a folder"),
    ("empty", r"is empty \(0 bytes\)"),
    ("text", "not an audio file"),
    ("png", r"not an audio file \(it looks like a PNG image\)"),
    ("random", "not an audio file"),
    ("cut-in-header", "not an audio file"),
    ("cut-flac-header", "not an audio file|contains no audio"),
    ("video-only", r"has no audio stream \(only video\)"),
    ("zero-frames", "contains no audio"),
    ("nan", "contains NaN or infinite samples"),
    ("inf", "contains NaN or infinite samples"),
    ("silent-wav", "is silent"),
    ("hiss-wav", "is silent"),
    ("silent-mp3", "is silent"),
]


@pytest.mark.parametrize("kind, message", BAD, ids=[b[0] for b in BAD])
def test_bad_files_give_one_line_errors(tmp_path, capfd, kind, message):
    path = _bad_file(tmp_path, kind)
    for call in (audio.decode_mono, lambda p: list(audio.stream(p, block_seconds=0.5))):
        with pytest.raises(AudioError, match=message) as err:
            call(path)
        text = str(err.value)
        assert text.startswith(str(path) + ": ") and "\n" not in text
        assert err.value.path == str(path)
        assert err.value.__cause__ is None  # no chained ffmpeg exception to print
    assert capfd.readouterr().err == ""  # ffmpeg's own log stays quiet


def test_silence_is_reported_after_the_last_block(tmp_path):
    path = _bad_file(tmp_path, "silent-wav")
    seen = []
    with pytest.raises(AudioError, match="is silent"):
        for block in audio.stream(path, block_seconds=0.5):
            seen.append(len(block))
    assert sum(seen) == 2 * SR  # every block was delivered first


@pytest.mark.parametrize(
    "ext, codec, fmt", [(".wav", "pcm_s16le", "wav"), (".flac", "flac", "flac"), (".mp3", "libmp3lame", "mp3")]
)
def test_truncated_files_decode_up_to_the_cut(tmp_path, ext, codec, fmt):
    whole = write_av(tmp_path / ("whole" + ext), np.tile(reference(44100, 4.0), (2, 1)), 44100, codec, fmt)
    data = whole.read_bytes()
    cut = tmp_path / ("cut" + ext)
    cut.write_bytes(data[: len(data) // 2])
    y = audio.decode_mono(cut)
    assert abs(len(y) / SR - 2.0) < 0.3  # about the first half
    got, ref, _ = align(y, reference(SR, 4.0)[: len(y)], max_lag=int(0.05 * SR))
    assert snr_db(got[:-EDGE], ref[:-EDGE]) > 20


def test_damaged_middle_is_skipped(tmp_path):
    path = write_av(tmp_path / "a.mp3", np.tile(reference(44100, 4.0), (2, 1)), 44100, "libmp3lame")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(1).bytes(3000)
    path.write_bytes(bytes(data))
    y = audio.decode_mono(path)
    assert abs(len(y) / SR - 4.0) < 0.3


def test_unknown_extension_is_still_decoded(tmp_path):
    sf.write(tmp_path / "song.dat", reference(44100), 44100, subtype="PCM_16", format="WAV")
    assert len(audio.decode_mono(tmp_path / "song.dat")) == 2 * SR


def test_duration(tmp_path):
    sf.write(tmp_path / "a.wav", reference(44100), 44100, subtype="PCM_16")
    assert audio.duration(tmp_path / "a.wav") == pytest.approx(2.0, abs=1e-3)
    path = write_av(tmp_path / "a.ogg", np.tile(reference(44100), (2, 1)), 44100, "vorbis", options=VORBIS)
    assert audio.duration(path) == pytest.approx(2.0, abs=0.05)
    with pytest.raises(AudioError, match="no such file"):
        audio.duration(tmp_path / "nope.ogg")


# ---------------------------------------------------------------------------------------------------------------
# find_audio


def test_find_audio(tmp_path):
    root = tmp_path / "music"
    for rel in ["b.mp3", "a/z.flac", "a/y/x.OGG", "a/.hidden.mp3", ".secret/s.mp3", "c/notes.txt", "c/cover.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "d").mkdir()  # an empty subfolder inside a folder with audio is fine
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-audio").mkdir()
    (tmp_path / "no-audio" / "readme.txt").write_text("hi")
    lone = tmp_path / "track.weird"
    lone.write_bytes(b"x")

    args = [root, lone, tmp_path / "nope", tmp_path / "empty", tmp_path / "no-audio", root / "b.mp3"]
    files, errors = audio.find_audio(args)
    assert files == [root / "a/y/x.OGG", root / "a/z.flac", root / "b.mp3", lone]
    assert [(e.path, e.reason) for e in errors] == [
        (str(tmp_path / "nope"), "no such file or directory"),
        (str(tmp_path / "empty"), "no audio files found in this folder"),
        (str(tmp_path / "no-audio"), "no audio files found in this folder"),
    ]
    assert all("\n" not in str(e) for e in errors)
    assert audio.find_audio(str(root / "b.mp3")) == ([root / "b.mp3"], [])  # a single path, not its characters


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_find_audio_survives_symlink_loops(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.wav").write_bytes(b"x")
    os.symlink(tmp_path / "m", tmp_path / "m" / "loop")
    files, errors = audio.find_audio([tmp_path / "m"])
    assert files == [tmp_path / "m" / "a.wav"] and errors == []


def test_sample_rate_change_mid_file(tmp_path):
    """Two mp3s glued together (44.1 kHz then 32 kHz): the resampler is restarted, both halves come out right."""
    a = write_av(tmp_path / "a.mp3", reference(44100), 44100, "libmp3lame")
    b = write_av(tmp_path / "b.mp3", reference(32000), 32000, "libmp3lame")
    (tmp_path / "ab.mp3").write_bytes(a.read_bytes() + b.read_bytes())
    y = audio.decode_mono(tmp_path / "ab.mp3")
    assert abs(len(y) / SR - 4.0) < 0.1
    for part in (y[EDGE : 2 * SR - EDGE], y[-2 * SR + EDGE : -EDGE]):
        assert spectral_peaks(part, 3) == pytest.approx([f for f, _ in TONES], abs=2)
        assert tone_amplitude(part, 440) == pytest.approx(0.2 * 0.95, rel=0.03)


def test_blocks_are_writable_arrays(tmp_path):
    """Pass-through (file already at 22050 Hz) hands out arrays of its own, not views of ffmpeg's frame buffers."""
    sf.write(tmp_path / "tiny.wav", reference(SR, 0.05).astype(np.float32), SR, subtype="FLOAT")
    for y in (audio.decode_mono(tmp_path / "tiny.wav"), *audio.stream(tmp_path / "tiny.wav", block_seconds=0.01)):
        assert y.flags.writeable and (y.base is None or isinstance(y.base, np.ndarray))
        y *= 2  # a consumer may scale in place
