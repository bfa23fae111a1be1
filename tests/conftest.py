"""Shared fixtures: small real signals and untrained checkpoints written the way users write them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from samplecnn import checkpoint, models
from samplecnn.tags import MTAT_TOP50

SR = models.SAMPLE_RATE
SEG = models.SEGMENT_SAMPLES


def music_like(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A few seconds of something music-like: a chord with vibrato, a decaying percussive click every 0.5 s, noise.
    Shape (n,) for mono, (n, channels) otherwise; peak about 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.12 * np.sin(2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 5 * t)) for f in (220.0, 277.2, 329.6))
    clicks = np.exp(-40 * (t % 0.5)) * rng.standard_normal(len(t)) * 0.2
    x = (x + clicks + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)


LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def encode_audio(path, x, sr, codec, fmt=None, sample_fmt=None, bit_rate=None, options=None):
    """Encode `x` (n,) mono or (channels, n) float in [-1, 1] with PyAV (ffmpeg's encoders: libmp3lame, vorbis,
    libopus, aac, flac, pcm_*...); PyAV converts to the codec's sample format itself. Returns the path."""
    x = np.atleast_2d(np.asarray(x, np.float32))
    layout = LAYOUTS[x.shape[0]]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=sr, layout=layout, options=options or {})
        if sample_fmt:
            s.format = sample_fmt
        if bit_rate:
            s.bit_rate = bit_rate
        for i in range(0, x.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 4096]), format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return Path(path)


def write_checkpoint(path, arch: str = "samplecnn", seed: int = 0, thresholds=None, **overrides):
    torch.manual_seed(seed)
    config = models.config_for(arch, **overrides)
    model = models.SampleCNN(**config)
    # Non-trivial BatchNorm statistics, so that eval-mode outputs depend on them (as in a trained model).
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    n = config["n_tags"]
    tags = list(MTAT_TOP50) if n == 50 else [f"tag{i}" for i in range(n)]
    info = checkpoint.ModelInfo(arch=arch, config=config, tags=tags,
                                thresholds=list(thresholds) if thresholds is not None else [0.5] * n,
                                provenance={"source": "test"})
    checkpoint.save(path, model, info)
    return path


@pytest.fixture(scope="session")
def ckpt_path(tmp_path_factory):
    """An untrained 3^9 SampleCNN checkpoint with the MTAT top-50 tags."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "samplecnn.safetensors")


def write_pack(path, model_path, tags=("my sound", "my silence"), thresholds=(0.0, 1.0), seed: int = 0):
    """A tag pack for the checkpoint at `model_path` (or a registered name), as `samplecnn learn` writes one but with
    random weights over 512-d embeddings (these checkpoints' width): with the default thresholds its first tag is
    always decided and its second never."""
    from samplecnn import packs

    rng = np.random.default_rng(seed)
    pack = packs.TagPack(tags=list(tags), weights=rng.normal(0, 0.05, (len(tags), 512)),
                         biases=np.zeros(len(tags)), thresholds=np.asarray(thresholds, float),
                         model_id=packs.model_id_of(model_path), created=packs.now(), samplecnn_version="test")
    packs.write_pack(pack, path)
    return packs.read_pack(path)
