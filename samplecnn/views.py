"""Augmented training views for distillation: what the student hears, and the very same audio for the teacher.

Consistent teaching (Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and consistent"): the
teacher labels exactly the augmented audio the student is trained on, with mixing applied before both of them, rather
than the student learning fixed labels of fixed crops. So a view is one window of audio, built at 22050 Hz from a
random place in the corpus and then augmented (speed, mix, filter, gain); the student gets its 59049-sample crop from
the middle and the teacher gets the whole window resampled to 16 kHz, long enough for one 187-frame musicnn patch
that contains the student's crop.

Every random choice comes from numpy's generator seeded with (seed, step, row): a batch is a pure function of its
step, so an interrupted run resumes to the same batches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import soxr
from scipy import signal

from .data import Cache
from .segments import SAMPLE_RATE, SEGMENT_SAMPLES

__all__ = ["Augment", "ViewSampler", "LabelledCrops", "WINDOW", "TEACHER_WINDOW", "TEACHER_RATE", "PAD"]

TEACHER_RATE = 16000
# 22050 / 16000 = 441 / 320: a window of whole 441-sample units resamples to whole 320-sample units, exactly.
WINDOW = 441 * 149            # 65,709 samples = 2.980 s at 22050 Hz: the teacher's window ...
TEACHER_WINDOW = 320 * 149    # ... = 47,680 samples at 16 kHz, which give 1 + 47680 // 256 = 187 log-mel frames
PAD = 441 * 2                 # context read on both sides so that filters and resamplers settle before the window
TEACHER_PAD = PAD * TEACHER_RATE // SAMPLE_RATE
CROP_AT = PAD + (WINDOW - SEGMENT_SAMPLES) // 2   # the student's crop sits in the middle of the window


@dataclasses.dataclass(frozen=True)
class Augment:
    """Probabilities and ranges of the augmentations; every one is applied to audio that the teacher then hears.

    Defaults are moderate on purpose: the teacher must still hear music it knows (MTAT-like levels and spectra).
    """

    p_speed: float = 0.5
    max_speed: float = 0.06                    # +-6 % speed: tempo and pitch together (about one semitone)
    p_mix: float = 0.5
    mix_db: tuple[float, float] = (-12.0, 0.0)  # level of the second track relative to the first
    p_filter: float = 0.4
    gain_db: tuple[float, float] = (-12.0, 3.0)
    p_voice: float = 0.3                       # where a voice cache is given: speech or choir over the music ...
    voice_snr_db: tuple[float, float] = (-6.0, 12.0)  # ... at this level relative to the music's RMS (songs: ~0-10)

    @classmethod
    def none(cls) -> "Augment":
        return cls(p_speed=0.0, p_mix=0.0, p_filter=0.0, gain_db=(0.0, 0.0), p_voice=0.0)


class ViewSampler:
    """Batches of (student crops, teacher windows) drawn from the training clips of a cache.

    A clip is drawn with probability proportional to its length (every second of music is equally likely), and the
    window's position uniformly inside it. `voices` (a cache of speech and choir recordings, e.g. from `samplecnn
    corpus voices`) adds a voice over a share of the views: the student has no singing in its music, and the teacher
    hears voices in mixtures (its vocal and gender tags respond to them).
    """

    def __init__(self, cache: Cache, clips: np.ndarray, seed: int, augment: Augment = Augment(),
                 voices: Cache | None = None, voice_split: str = "train"):
        self.cache, self.clips, self.seed, self.augment = cache, np.asarray(clips), seed, augment
        lengths = cache.lengths[self.clips].astype(np.float64)
        self.weights = lengths / lengths.sum()
        self.voices = voices
        if voices is not None:
            self.voice_clips = voices.indices(voice_split)
            if len(self.voice_clips) == 0:
                raise ValueError(f"the voice cache has no clips in its {voice_split} split")
            voice_lengths = voices.lengths[self.voice_clips].astype(np.float64)
            self.voice_weights = voice_lengths / voice_lengths.sum()  # every second of speech equally likely

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(size, 59049) float32 student crops at 22050 Hz and (size, 47680) float32 teacher windows at 16 kHz."""
        student = np.empty((size, SEGMENT_SAMPLES), dtype=np.float32)
        teacher = np.empty((size, TEACHER_WINDOW), dtype=np.float32)
        for row in range(size):
            rng = np.random.default_rng([self.seed, step, row])
            window = self.view(rng)
            student[row] = window[CROP_AT:CROP_AT + SEGMENT_SAMPLES]
            teacher[row] = soxr.resample(window, SAMPLE_RATE, TEACHER_RATE, "HQ")[
                TEACHER_PAD:TEACHER_PAD + TEACHER_WINDOW]
        return student, teacher

    def view(self, rng: np.random.Generator) -> np.ndarray:
        """One augmented window with PAD samples of context on each side, float32 at 22050 Hz."""
        a = self.augment
        speed = draw_speed(rng, a)
        x = self._read(rng, speed)
        if rng.random() < a.p_mix:
            x = x + self._read(rng, 1.0) * np.float32(10 ** (rng.uniform(*a.mix_db) / 20))
        if self.voices is not None and rng.random() < a.p_voice:
            x = x + self._voice(rng, x, rng.uniform(*a.voice_snr_db))
        return filter_and_gain(x, rng, a)

    def _read(self, rng: np.random.Generator, speed: float) -> np.ndarray:
        """A padded window from a random place in a random clip, played `speed` times faster (resampled)."""
        n_out = WINDOW + 2 * PAD
        n_in = samples_for(n_out, speed)
        i = int(self.clips[rng.choice(len(self.clips), p=self.weights)])
        length = int(self.cache.lengths[i])
        start = int(rng.integers(0, max(1, length - n_in + 1)))
        x = self.cache.clip_float(i, start, n_in)
        if speed != 1.0:
            x = soxr.resample(x, SAMPLE_RATE * speed, SAMPLE_RATE, "HQ")
            x = np.pad(x, (0, max(0, n_out - len(x))))[:n_out]
        return x


    def _voice(self, rng: np.random.Generator, music: np.ndarray, snr_db: float) -> np.ndarray:
        """Voices laid end to end from random places of random recordings (utterances are often shorter than a
        window), scaled to `snr_db` above the music's RMS (a quiet window gets the voice at a fixed level)."""
        out = np.zeros_like(music)
        at = int(rng.integers(0, len(out) // 2))  # the voice may start late in the window
        while at < len(out):
            i = int(self.voice_clips[rng.choice(len(self.voice_clips), p=self.voice_weights)])
            length = int(self.voices.lengths[i])
            start = int(rng.integers(0, max(1, length - (len(out) - at) + 1)))
            piece = self.voices.clip_float(i, start, min(length - start, len(out) - at))
            out[at:at + len(piece)] = piece
            at += len(piece) + int(rng.integers(SAMPLE_RATE // 10, SAMPLE_RATE // 2))  # a pause between utterances
        voice_rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
        if voice_rms < 1e-6:
            return out
        music_rms = max(float(np.sqrt(np.mean(music.astype(np.float64) ** 2))), 0.01)
        return out * np.float32(music_rms * 10 ** (snr_db / 20) / voice_rms)


class LabelledCrops:
    """Batches of (student crops, teacher labels) from a cache that `samplecnn teach` labelled: the plain views of
    ViewSampler with the teacher's work done ahead of training, so a step costs the student's alone.

    A row of the teacher-label grid is drawn uniformly among all rows of the training clips (so every second of music
    is equally likely, as with ViewSampler), and the crop is its segment moved by up to the cache's `crop_slack`
    either way: still inside the window the teacher heard. A denser grid (`teach --labels-per-segment 3`) gives
    three times as many distinct windows. Deterministic from (seed, step, row), as views are.
    """

    def __init__(self, cache: Cache, clips: np.ndarray, seed: int, stream: int = 0):
        if not cache.has_segment_labels:
            raise ValueError("the cache has no teacher labels (samplecnn teach)")
        self.cache, self.seed = cache, seed
        self.key = [seed] if stream == 0 else [seed, stream]  # a second source draws from a stream of its own
        self.clips = np.array([i for i in np.asarray(clips) if len(cache.segment_labels(int(i)))], dtype=np.int64)
        if len(self.clips) == 0:
            raise ValueError("no training clip has teacher labels")
        self.rows_before = np.concatenate([[0], np.cumsum([len(cache.segment_labels(int(i))) for i in self.clips])])
        self.hop, self.slack = cache.segment_hop, cache.crop_slack

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(size, 59049) float32 crops at 22050 Hz and their (size, T) float32 teacher labels."""
        return _stack([self.crop(step, row) for row in range(size)])

    def crop(self, step: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `row` of step `step`'s batch: a (59049,) crop, zero-padded past a clip's end, and its label."""
        rng = np.random.default_rng([*self.key, step, row])
        r = int(rng.integers(0, self.rows_before[-1]))
        c = int(np.searchsorted(self.rows_before, r, side="right")) - 1
        i, k = int(self.clips[c]), r - int(self.rows_before[c])
        length = int(self.cache.lengths[i])
        start = k * self.hop + int(rng.integers(-self.slack, self.slack + 1))
        start = min(max(0, start), max(0, length - SEGMENT_SAMPLES))
        student = np.zeros(SEGMENT_SAMPLES, dtype=np.float32)
        piece = self.cache.clip_float(i, start, min(SEGMENT_SAMPLES, length - start))
        student[:len(piece)] = piece
        return student, self.cache.segment_labels(i)[k].astype(np.float32)


class MixedCrops:
    """LabelledCrops from several taught caches: each row of a batch comes from `extras[j]` with probability
    `shares[j]` (one uniform draw per row from a generator of its own), else from `main`, so the rows from `main` are
    the very crops a run without the extras would have drawn, and a first extra draws the rows it drew alone. For
    smaller corpora of other kinds (solo renders, ensemble renders) beside the main music."""

    def __init__(self, main: LabelledCrops, extras: list[LabelledCrops], shares: tuple[float, ...], seed: int):
        if len(extras) != len(shares) or not extras:
            raise ValueError("one share per extra cache")
        if any(list(e.cache.tags) != list(main.cache.tags) for e in extras):
            raise ValueError("an extra cache has other tags than the main one (or another order)")
        self.main, self.extras, self.seed = main, list(extras), seed
        self.bounds = np.cumsum(shares)
        self.cache = main.cache

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """As LabelledCrops.batch."""
        draws = np.random.default_rng([self.seed, step, 1]).random(size)
        picks = np.searchsorted(self.bounds, draws, side="right")  # len(extras): the main cache
        sources = [*self.extras, self.main]
        return _stack([sources[pick].crop(step, row) for row, pick in enumerate(picks)])


def _stack(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([x for x, _ in rows]), np.stack([y for _, y in rows])


def draw_speed(rng: np.random.Generator, a: Augment) -> float:
    """A view's playback speed (1: unchanged)."""
    return 1.0 + rng.uniform(-a.max_speed, a.max_speed) if rng.random() < a.p_speed else 1.0


def samples_for(n_out: int, speed: float) -> int:
    """Samples to read for `n_out` samples played at `speed` (a few more, for the resampler's edge)."""
    return int(np.ceil(n_out * speed)) + 64 if speed != 1.0 else n_out


def filter_and_gain(x: np.ndarray, rng: np.random.Generator, a: Augment) -> np.ndarray:
    """The last augmentations of a view: maybe a filter, then a random gain (peaks kept under 1), float32."""
    if rng.random() < a.p_filter:
        x = random_filter(x, rng)
    x = x * np.float32(10 ** (rng.uniform(*a.gain_db) / 20))
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x / peak if peak > 1.0 else x).astype(np.float32, copy=False)


def random_filter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A second-order Butterworth low-pass (2-8 kHz), high-pass (80-600 Hz) or band-stop, at random: the spectral
    tilts of cheap speakers, old recordings and mixes (log-uniform cut-offs)."""
    kind = rng.integers(0, 3)
    if kind == 0:
        sos = signal.butter(2, np.exp(rng.uniform(np.log(2000), np.log(8000))), "lowpass", fs=SAMPLE_RATE,
                            output="sos")
    elif kind == 1:
        sos = signal.butter(2, np.exp(rng.uniform(np.log(80), np.log(600))), "highpass", fs=SAMPLE_RATE,
                            output="sos")
    else:
        centre = np.exp(rng.uniform(np.log(300), np.log(5000)))
        sos = signal.butter(1, (centre / 1.4, centre * 1.4), "bandstop", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)
