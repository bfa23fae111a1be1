"""The musicnn taggers (Pons & Serra, PyPI `musicnn` 0.1.0, MTT_musicnn and MTT_vgg) in PyTorch, with their input
pipeline, loaded straight from the TF1 checkpoints that the `musicnn` wheel ships.

Why: they are the teachers for distillation and the reference our own models are compared with, and TensorFlow 1
no longer installs. The port reproduces the original graphs, not just their spirit; every detail below was read
from musicnn's source and graphs and is checked against outputs of the original TensorFlow models
(tests/test_teacher_musicnn.py):

- Input: 16 kHz mono (soxr 'HQ', as `samplecnn.audio` does); STFT n_fft 512, hop 256, periodic Hann, centred
  with 256 *zeros* on each side; power 2; 96-band Slaney mel filterbank with area normalisation, 0-8 kHz. Then
  float16 rounding, kept on purpose, and log10(10000 x + 1) in float32 (the stock package multiplies in float16 and
  overflows). Patches of 187 frames (2.992 s) without overlap; the tail is dropped. Song score = mean of the
  patch sigmoids.
- Both networks: BatchNorm eps 1e-3 (TF's default), one scalar BN on the whole input, and conv -> ReLU -> BN ->
  pool in every block.
- musicnn: timbral 7x38 and 7x67 convolutions (time padded 3+3, mel 'valid', max over mel), temporal 128/64/32 x 1
  convolutions with TF's asymmetric 'same' padding for even kernels (one frame more at the end), three residual 1-D
  convolutions, max and mean over time *interleaved*, BN, dense 200 + ReLU + BN, dense 50.
- vgg: five 3x3 'same' convolutions with 128 filters; max-pools 4x1/2x2 (which subsamples mel), 2x2, 2x2, 2x2, 4x4;
  flatten in TF's (time, mel, channel) order; dense 50.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import audio
from ..errors import SampleCNNError
from ..inference import TagResult
from ..tags import MTAT_TOP50
from .tf_checkpoint import TFCheckpointError, read_checkpoint

__all__ = [
    "SAMPLE_RATE", "N_FFT", "HOP", "N_MELS", "PATCH_FRAMES", "TEACHERS",
    "mel_filterbank", "melpower", "log_compress", "to_patches",
    "MusicnnNet", "VggNet", "MusicnnTeacher", "load_teacher", "checkpoint_dir",
]

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187                      # librosa.time_to_frames(3 s) + 1
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP  # 47,616 samples (2.976 s) give exactly one patch
BN_EPS = 1e-3                           # TF1 layers.batch_normalization default
TEACHERS = ("MTT_musicnn", "MTT_vgg")
INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"
_FRAME_CHUNK = 4096                     # STFT frames per chunk: bounds memory on long songs (~8 MB in float64)


# ----------------------------------------------------------------------------------------------------------------
# input pipeline


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (ln(6.4)/27 per mel)."""
    f = np.asarray(f, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    linear = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / logstep, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) float32 triangles equally spaced on the Slaney mel scale from 0 to sr/2, each scaled by
    2 / (upper - lower edge in Hz) (area normalisation): librosa's default filterbank, from its formula."""
    freqs = np.arange(n_fft // 2 + 1) * (sr / n_fft)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # the triangles are rounded to float32 before the scaling, as in the reference implementation
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


_MEL = mel_filterbank().astype(np.float64)
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic


def melpower(wave: np.ndarray) -> np.ndarray:
    """(T, 96) float32 mel power spectrogram of a 16-kHz mono signal, T = 1 + len // 256 (centred frames, zero
    padding). Computed in float64: the reference's own float32 FFT is then matched to ~4e-7 relative."""
    wave = np.asarray(wave, dtype=np.float64).ravel()
    padded = np.pad(wave, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    out = np.empty((len(frames), N_MELS), dtype=np.float32)
    for start in range(0, len(frames), _FRAME_CHUNK):
        spec = np.fft.rfft(frames[start:start + _FRAME_CHUNK] * _HANN, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        out[start:start + _FRAME_CHUNK] = power @ _MEL.T
    return out


def log_compress(power: np.ndarray) -> np.ndarray:
    """musicnn's compression of the mel power: float16 rounding (as its training data was stored), then
    log10(10000 x + 1) in float32, which the stock package wrongly computes in float16."""
    x = np.asarray(power, dtype=np.float32).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * x + np.float32(1))


def to_patches(features: np.ndarray, frames: int = PATCH_FRAMES) -> np.ndarray:
    """(P, frames, 96) non-overlapping patches of a (T, 96) spectrogram; the tail shorter than a patch is dropped."""
    n = len(features) // frames
    return np.ascontiguousarray(features[: n * frames].reshape(n, frames, features.shape[1]))


# ----------------------------------------------------------------------------------------------------------------
# networks


def _bn(channels: int, dims: int) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, eps=BN_EPS)


def _conv_bn_relu_max_over_mel(conv: nn.Conv2d, x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """bn(relu(conv(x))).amax(dim=3) for (B, 1, T, M) inputs, reducing first.

    ReLU and an eval-mode BatchNorm are monotonic per channel (increasing where gamma >= 0, decreasing where it is
    negative), so the maximum over mel of bn(relu(y)) is bn(relu(max y)) or bn(relu(min y)): the same numbers, with
    the ReLU and BatchNorm run on 1/M of the data. The minimum is taken as minus the maximum of the convolution with
    negated weights (exact: negation only flips the sign bit), so one max pass serves every channel. Most of the
    teacher's time is otherwise spent there."""
    if bn.training:
        return bn(F.relu(conv(x))).amax(dim=3)
    sign = torch.where(bn.weight >= 0, 1.0, -1.0).to(conv.weight.dtype)
    y = F.conv2d(x, conv.weight * sign.view(-1, 1, 1, 1), conv.bias * sign, conv.stride, conv.padding)
    picked = y.amax(dim=3) * sign.view(1, -1, 1)
    return F.batch_norm(F.relu(picked), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class _TimbralBlock(nn.Module):
    """Conv over (time x mel) with the time axis padded (k-1)/2 each side, mel 'valid'; ReLU, BN, max over mel."""

    def __init__(self, kernel: tuple[int, int], filters: int):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel, padding=(kernel[0] // 2, 0))
        self.bn = _bn(filters, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # (B, 1, T, 96) -> (B, filters, T)
        return _conv_bn_relu_max_over_mel(self.conv, x, self.bn)


class _TemporalBlock(nn.Module):
    """Conv over time only, TF 'same' padding: k-1 frames in total, floor((k-1)/2) before and the rest after."""

    def __init__(self, length: int, filters: int):
        super().__init__()
        self.pad = ((length - 1) // 2, length - 1 - (length - 1) // 2)
        self.conv = nn.Conv2d(1, filters, (length, 1))
        self.bn = _bn(filters, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # (B, 1, T, 96) -> (B, filters, T)
        return _conv_bn_relu_max_over_mel(self.conv, F.pad(x, (0, 0, *self.pad)), self.bn)


class _MidBlock(nn.Module):
    """1-D conv over time (kernel 7, padded 3 each side), ReLU, BN."""

    def __init__(self, channels_in: int, filters: int):
        super().__init__()
        self.conv = nn.Conv1d(channels_in, filters, 7, padding=3)
        self.bn = _bn(filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusicnnNet(nn.Module):
    """MTT_musicnn: log-mel patch (B, T, 96) -> logits (B, 50). Any T works (all pooling is global)."""

    def __init__(self, n_tags: int = 50, n_mels: int = N_MELS):
        super().__init__()
        self.input_bn = _bn(1, 2)
        timbral_filters, temporal_filters = int(1.6 * 128), int(1.6 * 32)   # 204, 51
        self.timbral = nn.ModuleList([_TimbralBlock((7, int(share * n_mels)), timbral_filters)
                                      for share in (0.4, 0.7)])                # 7x38, 7x67
        self.temporal = nn.ModuleList([_TemporalBlock(k, temporal_filters) for k in (128, 64, 32)])
        front = 2 * timbral_filters + 3 * temporal_filters                    # 561
        self.mid = nn.ModuleList([_MidBlock(front, 64), _MidBlock(64, 64), _MidBlock(64, 64)])
        features = front + 3 * 64                                             # 753
        self.pool_bn = _bn(2 * features, 1)
        self.dense = nn.Linear(2 * features, 200)
        self.dense_bn = _bn(200, 1)
        self.out = nn.Linear(200, n_tags)

    def forward(self, x: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """`taps`, if given, receives the intermediate layers under the names of musicnn's feature outputs."""
        x = self.input_bn(x.unsqueeze(1))
        timbral = torch.cat([b(x) for b in self.timbral], dim=1)             # (B, 408, T)
        temporal = torch.cat([b(x) for b in self.temporal], dim=1)           # (B, 153, T)
        front = torch.cat([timbral, temporal], dim=1)
        m1 = self.mid[0](front)
        m2 = self.mid[1](m1) + m1
        m3 = self.mid[2](m2) + m2
        features = torch.cat([front, m1, m2, m3], dim=1)                     # (B, 753, T)
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)        # max0, mean0, max1, ...
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        logits = self.out(penultimate)
        if taps is not None:
            taps.update(timbral=timbral.transpose(1, 2), temporal=temporal.transpose(1, 2),
                        cnn1=m1.transpose(1, 2), cnn2=m2.transpose(1, 2), cnn3=m3.transpose(1, 2),
                        max_pool=max_pool, mean_pool=mean_pool, penultimate=penultimate, logits=logits)
        return logits

    def load_tf(self, w: _Weights) -> None:
        """Copy the weights of musicnn's TF graph (names as in its checkpoint)."""
        _copy_bn(self.input_bn, w, "batch_normalization")
        for i, block in enumerate((*self.timbral, *self.temporal)):
            _copy_conv2d(block.conv, w, "conv2d" + _suffix(i))
            _copy_bn(block.bn, w, f"batch_normalization_{i + 1}")
        for i, block in enumerate(self.mid):
            name = f"conv2d_{i + 5}"
            _copy(block.conv.weight, w, name + "/kernel", lambda k: k[:, :, 0, :].transpose(2, 1, 0))
            _copy(block.conv.bias, w, name + "/bias")
            _copy_bn(block.bn, w, f"batch_normalization_{i + 6}")
        _copy_bn(self.pool_bn, w, "batch_normalization_9")
        _copy_dense(self.dense, w, "dense")
        _copy_bn(self.dense_bn, w, "batch_normalization_10")
        _copy_dense(self.out, w, "dense_1")


class VggNet(nn.Module):
    """MTT_vgg: log-mel patch (B, 187, 96) -> logits (B, 50); only 187-frame patches fit its dense layer."""

    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, n_tags: int = 50, filters: int = 128):
        super().__init__()
        self.input_bn = _bn(1, 2)
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
        self.bns = nn.ModuleList([_bn(filters, 2) for _ in range(5)])
        self.out = nn.Linear(2 * 1 * filters, n_tags)

    def forward(self, x: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        x = self.input_bn(x.unsqueeze(1))
        for i, (conv, bn, (window, stride)) in enumerate(zip(self.convs, self.bns, self.POOLS)):
            x = F.max_pool2d(bn(F.relu(conv(x))), window, stride)
            if taps is not None:
                taps[f"pool{i + 1}"] = x.permute(0, 2, 3, 1)
        logits = self.out(x.permute(0, 2, 3, 1).flatten(1))                 # TF's NHWC flatten order
        if taps is not None:
            taps["logits"] = logits
        return logits

    def load_tf(self, w: _Weights) -> None:
        _copy_bn(self.input_bn, w, "batch_normalization")
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            _copy_conv2d(conv, w, f"{i + 1}CNN")
            _copy_bn(bn, w, f"batch_normalization_{i + 1}")
        _copy_dense(self.out, w, "dense")


def _suffix(i: int) -> str:
    return "" if i == 0 else f"_{i}"


class _Weights:
    """Checkpoint arrays handed out by name, remembering which were taken: every weight must find a place."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str | os.PathLike | None = None):
        self.arrays, self.source, self.used = arrays, source, set()

    def take(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise TFCheckpointError(f"checkpoint has no tensor {name!r}: not a musicnn checkpoint of this model",
                                    self.source)
        self.used.add(name)
        return self.arrays[name]

    def check_all_used(self) -> None:
        unused = sorted(set(self.arrays) - self.used)
        if unused:
            raise TFCheckpointError(f"checkpoint has {len(unused)} weights this graph does not use ({unused[0]!r}, "
                                    "...): not a musicnn checkpoint of this model", self.source)


def _copy(param: torch.Tensor, w: _Weights, name: str, convert=None) -> None:
    """Copy checkpoint tensor `name` (after `convert`) into `param`, checking the shape."""
    raw = w.take(name)
    value = raw if convert is None else convert(raw)
    if tuple(value.shape) != tuple(param.shape):
        raise TFCheckpointError(f"tensor {name!r} has shape {raw.shape}, which does not fit {tuple(param.shape)}: "
                                "not a musicnn checkpoint of this model", w.source)
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _copy_bn(bn: nn.Module, w: _Weights, name: str) -> None:
    _copy(bn.weight, w, name + "/gamma")
    _copy(bn.bias, w, name + "/beta")
    _copy(bn.running_mean, w, name + "/moving_mean")
    _copy(bn.running_var, w, name + "/moving_variance")


def _copy_conv2d(conv: nn.Conv2d, w: _Weights, name: str) -> None:
    # TF (kh, kw, in, out) -> torch (out, in, kh, kw)
    _copy(conv.weight, w, name + "/kernel", lambda k: k.transpose(3, 2, 0, 1))
    _copy(conv.bias, w, name + "/bias")


def _copy_dense(linear: nn.Linear, w: _Weights, name: str) -> None:
    _copy(linear.weight, w, name + "/kernel", lambda k: k.T)    # (in, out) -> (out, in)
    _copy(linear.bias, w, name + "/bias")


# ----------------------------------------------------------------------------------------------------------------
# the teacher


def checkpoint_dir(name: str) -> Path:
    """Where the installed `musicnn` wheel keeps the TF checkpoint `name` (without importing musicnn, which would
    import TensorFlow); a one-line SampleCNNError naming the install command when it is not there."""
    if name not in TEACHERS:
        raise SampleCNNError(f"unknown musicnn teacher {name!r}: choose one of {', '.join(TEACHERS)}")
    spec = importlib.util.find_spec("musicnn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / name
        if (path / ".index").is_file():
            return path
    raise SampleCNNError(f"musicnn's {name} checkpoint is not installed: {INSTALL_HINT}")


class MusicnnTeacher:
    """A musicnn model with its input pipeline: waveform or file -> patches -> taggram -> song scores."""

    def __init__(self, net: nn.Module, name: str, batch_size: int = 1):
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.name = name
        self.tags = list(MTAT_TOP50)
        # batch 1 is fastest on a CPU (2.5x faster than batch 8 with 2 threads: the activations stay in cache)
        self.batch_size = batch_size
        self.sample_rate = SAMPLE_RATE
        self.patch_seconds = PATCH_FRAMES * HOP / SAMPLE_RATE  # 2.992 s between patch starts

    def logmel(self, wave16k: np.ndarray) -> np.ndarray:
        """(P, 187, 96) float32 network input for a 16-kHz mono signal (P = 0 under 47,616 samples)."""
        return to_patches(log_compress(melpower(wave16k)))

    @torch.inference_mode()
    def patch_outputs(self, patches: np.ndarray, layers: dict | None = None) -> np.ndarray:
        """(P, 50) float32 sigmoid outputs for (P, 187, 96) log-mel patches, computed `batch_size` at a time.
        `layers`, if a dict, receives the intermediate layers of the *first* patch (for debugging)."""
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[2] != N_MELS:
            raise ValueError(f"patches must be (P, frames, {N_MELS}), not {patches.shape}")
        out = np.empty((len(patches), len(self.tags)), dtype=np.float32)
        for start in range(0, len(patches), self.batch_size):
            x = torch.from_numpy(patches[start:start + self.batch_size])
            taps = {} if layers is not None and start == 0 else None
            out[start:start + len(x)] = torch.sigmoid(self.net(x, taps)).numpy()
            if taps:
                layers.update({k: v[0].numpy() for k, v in taps.items()})
        return out

    def tag(self, audio_in: str | os.PathLike | np.ndarray, sr: int | None = None) -> TagResult:
        """Tag a file or an in-memory signal (give its `sr`): taggram of 2.992-s patches, song scores = their mean.
        A signal shorter than one patch is zero-padded to one (`padded`), where musicnn itself would crash."""
        if isinstance(audio_in, (np.ndarray, torch.Tensor)):
            if sr is None:
                raise SampleCNNError("an in-memory signal needs its sample rate: tag(array, sr=...)")
            samples = audio_in.detach().cpu().numpy() if isinstance(audio_in, torch.Tensor) else audio_in
            wave = audio.to_mono_resampled(samples, sr, SAMPLE_RATE)
            n_in = max(np.shape(samples))
            wave = _fit(wave, math.ceil(n_in * SAMPLE_RATE / int(sr)))   # librosa's length rule
            path = None
        else:
            wave = audio.decode_mono(audio_in, sr=SAMPLE_RATE)
            path = os.fspath(audio_in)
        padded = len(wave) < MIN_SAMPLES
        patches = self.logmel(_fit(wave, MIN_SAMPLES) if padded else wave)
        taggram = self.patch_outputs(patches)
        return TagResult(
            tags=list(self.tags), taggram=taggram,
            segment_starts=np.arange(len(taggram)) * self.patch_seconds, segment_seconds=self.patch_seconds,
            duration=len(wave) / SAMPLE_RATE,
            # musicnn has no calibrated per-tag thresholds: 0.5 on the sigmoid is the plain decision
            thresholds=np.full(len(self.tags), 0.5, dtype=np.float32),
            padded=padded, path=path, model=self.name)


def _fit(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` trimmed or zero-padded at the end to `n` samples."""
    return wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))


def load_teacher(name: str = "MTT_musicnn", path: str | os.PathLike | None = None,
                 batch_size: int = 1) -> MusicnnTeacher:
    """Load MTT_musicnn or MTT_vgg from the installed `musicnn` wheel (or from the checkpoint folder `path`)."""
    if name not in TEACHERS:
        raise SampleCNNError(f"unknown musicnn teacher {name!r}: choose one of {', '.join(TEACHERS)}")
    folder = Path(path) if path is not None else checkpoint_dir(name)
    weights = _Weights(read_checkpoint(folder, weights_only=True), folder)
    net = MusicnnNet() if name == "MTT_musicnn" else VggNet()
    net.load_tf(weights)
    weights.check_all_used()
    return MusicnnTeacher(net, name, batch_size=batch_size)
