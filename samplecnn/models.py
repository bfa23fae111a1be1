"""The SampleCNN family: one configurable network, four named presets.

Every model takes (batch, 1, 59049) mono audio at 22050 Hz (3^10 samples, 2.678 s) and returns tag logits;
`embed()` returns the penultimate features. Facts are from Lee et al. 2017 ("Sample-level Deep CNNs for Music
Auto-tagging Using Raw Waveforms") and Kim, Lee, Nam 2018 ("Sample-level CNN architectures for music auto-tagging
using raw waveforms"); the `seed` preset is the original Keras notebook's layer list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import segments

SAMPLE_RATE, SEGMENT_SAMPLES = segments.SAMPLE_RATE, segments.SEGMENT_SAMPLES  # the input every model takes
BLOCK_CHANNELS = (128, 128, 256, 256, 256, 256, 256, 256, 512)

# name -> the config that defines it; `build(name, **overrides)` merges overrides on top.
ARCHITECTURES: dict[str, dict] = {
    # The Keras notebook: 'same' conv + max-pool as the first layer, Keras' BatchNorm epsilon and Glorot init.
    "seed": dict(stem="conv_pool", block="basic", head="conv", dropout=0.1, bn_eps=1e-3, init="glorot_uniform"),
    # Lee et al. 2017, the 3^9 model: a strided first conv without pooling, He-uniform init.
    "samplecnn": dict(stem="strided", block="basic", head="conv", dropout=0.5, bn_eps=1e-3, init="he_uniform"),
    # Kim et al. 2018: basic blocks + squeeze-and-excitation (amplifying ratio 16).
    "se": dict(stem="strided", block="se", head="dense", dropout=0.5, bn_eps=1e-3, init="he_uniform",
               amplifying_ratio=16, multi_level=False),
    # Kim et al. 2018: residual blocks with two convs and SE (ReSE-2).
    "rese2": dict(stem="strided", block="rese2", head="dense", dropout=0.5, bn_eps=1e-3, init="he_uniform",
                  amplifying_ratio=16, multi_level=False),
}


# -- layers that run in either layout ------------------------------------------------------------------------------
# A model computes on (batch, channels, time) by default. With `model.planar = True` the same weights run on
# (batch, channels, 1, time) tensors in channels-last memory: height-1 Conv2d, which is what oneDNN's fastest CPU
# kernels (AMX, and bf16 generally) take; the Conv1d path does not reach them. Parameters keep their Conv1d shapes,
# so checkpoints, BatchNorm folding and ONNX export see one model either way.


class Conv(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and self.in_channels == 1:
            return self._waveform_frames(x)
        if x.dim() == 4:
            return F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), (0, self.padding[0]))
        return super().forward(x)

    def _waveform_frames(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer on the waveform as (frames of k samples) @ kernels: the result comes out channels-last,
        where a conv would give NCHW (one input channel makes the layouts ambiguous) and converting that costs more
        than the layer itself."""
        wave = x.reshape(x.shape[0], -1)
        if self.padding[0]:
            wave = F.pad(wave, (self.padding[0], self.padding[0]))
        frames = wave.unfold(1, self.kernel_size[0], self.stride[0])             # (B, L_out, k)
        y = torch.addmm(self.bias, frames.reshape(-1, frames.shape[-1]), self.weight.view(self.out_channels, -1).t())
        return y.view(x.shape[0], -1, self.out_channels).transpose(1, 2).unsqueeze(2)  # (B, C, 1, L_out)


class BatchNorm(nn.BatchNorm1d):
    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2-, 3- or 4-D input, got {x.dim()}-D")


class MaxPool(nn.MaxPool1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.max_pool2d(x, (1, self.kernel_size), (1, self.stride))
        return super().forward(x)


def _over_time(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ..., T) -> (B, C, T'): the time axis alone, whichever layout."""
    return x.flatten(2)


class SqueezeExcitation(nn.Module):
    """Channel gates from the global average: Dense(C*ratio, ReLU) -> Dense(C, sigmoid). Ratio 16 *expands*."""

    def __init__(self, channels: int, ratio: int):
        super().__init__()
        self.excite = nn.Sequential(
            nn.Linear(channels, channels * ratio), nn.ReLU(inplace=True),
            nn.Linear(channels * ratio, channels), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.excite(_over_time(x).mean(dim=-1))
        return x * gates.view(*gates.shape, *([1] * (x.dim() - 2)))


class BasicBlock(nn.Module):
    """conv3 ('same') -> BN -> ReLU -> MaxPool3; with `ratio`, SE gates after the pooling (Kim et al.'s SE block)."""

    def __init__(self, c_in: int, c_out: int, bn_eps: float, ratio: int = 0):
        super().__init__()
        self.conv = Conv(c_in, c_out, 3, padding=1)
        self.bn = BatchNorm(c_out, eps=bn_eps)
        self.pool = MaxPool(3)
        self.se = SqueezeExcitation(c_out, ratio) if ratio else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x)), inplace=True))  # in place: one activation less to write
        return self.se(x) if self.se is not None else x


class ReSEBlock(nn.Module):
    """ReSE-2: conv3-BN-ReLU-Dropout(0.2)-conv3-BN-SE, plus the shortcut (1x1 conv + BN if channels change),
    then ReLU and MaxPool3."""

    def __init__(self, c_in: int, c_out: int, bn_eps: float, ratio: int):
        super().__init__()
        self.conv1 = Conv(c_in, c_out, 3, padding=1)
        self.bn1 = BatchNorm(c_out, eps=bn_eps)
        self.drop = nn.Dropout(0.2)
        self.conv2 = Conv(c_out, c_out, 3, padding=1)
        self.bn2 = BatchNorm(c_out, eps=bn_eps)
        self.se = SqueezeExcitation(c_out, ratio) if ratio else None
        self.shortcut = (nn.Identity() if c_in == c_out else
                         nn.Sequential(Conv(c_in, c_out, 1), BatchNorm(c_out, eps=bn_eps)))
        self.pool = MaxPool(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.drop(torch.relu(self.bn1(self.conv1(x))))))
        if self.se is not None:
            y = self.se(y)
        return self.pool(torch.relu(y + self.shortcut(x)))


class SampleCNN(nn.Module):
    """Stem + nine sample-level blocks + head. See ARCHITECTURES for the named presets."""

    def __init__(self, n_tags: int = 50, stem: str = "strided", block: str = "basic", head: str = "conv",
                 dropout: float = 0.5, bn_eps: float = 1e-3, init: str = "he_uniform",
                 amplifying_ratio: int = 16, multi_level: bool = False, width: float = 1.0):
        super().__init__()
        # `width` scales every channel count: 1.0 is the papers' model; a narrow model (e.g. 0.25, 1/16 of the
        # compute) is for quick experiments and tests.
        channels = tuple(max(1, round(c * width)) for c in (128, *BLOCK_CHANNELS))
        top = channels[-1]
        if stem == "strided":  # 59049 -> 19683 samples, no pooling
            self.stem = nn.Sequential(Conv(1, channels[0], 3, stride=3), BatchNorm(channels[0], eps=bn_eps),
                                      nn.ReLU(inplace=True))
        elif stem == "conv_pool":  # the notebook's first layer: 'same' conv at full rate, then pool
            self.stem = nn.Sequential(Conv(1, channels[0], 3, padding=1), BatchNorm(channels[0], eps=bn_eps),
                                      nn.ReLU(inplace=True), MaxPool(3))
        else:
            raise ValueError(f"unknown stem {stem!r}")

        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            if block == "basic":
                blocks.append(BasicBlock(c_in, c_out, bn_eps))
            elif block == "se":
                blocks.append(BasicBlock(c_in, c_out, bn_eps, ratio=amplifying_ratio))
            elif block == "rese2":
                blocks.append(ReSEBlock(c_in, c_out, bn_eps, ratio=amplifying_ratio))
            else:
                raise ValueError(f"unknown block {block!r}")
        self.blocks = nn.ModuleList(blocks)

        self.multi_level = multi_level
        if multi_level and head != "dense":
            raise ValueError("multi-level aggregation needs head='dense'")
        self.head_kind = head
        if head == "conv":  # Conv1d(512, k1) + BN + ReLU on the single remaining time step
            self.head = nn.Sequential(Conv(top, top, 1), BatchNorm(top, eps=bn_eps), nn.ReLU())
            self.embed_dim = top
        elif head == "dense":  # global max pool (of the last three blocks if multi-level) -> Dense -> BN -> ReLU
            self.embed_dim = sum(channels[-3:]) if multi_level else top
            self.head = nn.Sequential(nn.Linear(self.embed_dim, self.embed_dim),
                                      BatchNorm(self.embed_dim, eps=bn_eps), nn.ReLU())
        else:
            raise ValueError(f"unknown head {head!r}")
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embed_dim, n_tags)
        self._init_weights(init)
        self.planar = False  # see the layer classes above; a run-time choice, not part of the checkpoint

    def _init_weights(self, init: str) -> None:
        fill = {"he_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
                "glorot_uniform": nn.init.xavier_uniform_}[init]
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                fill(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: 512-d, or 1024-d with multi-level aggregation."""
        if self.planar and x.dim() == 3:
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        if self.head_kind == "conv":
            return self.head(x).flatten(1)
        pooled = [_over_time(h).amax(dim=-1) for h in (levels[-3:] if self.multi_level else levels[-1:])]
        return self.head(torch.cat(pooled, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits (apply a sigmoid for probabilities)."""
        return self.classifier(self.dropout(self.embed(x)))


def config_for(name: str, **overrides) -> dict:
    """The full config of a named architecture with `overrides` applied (what a checkpoint stores)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    config = {"n_tags": 50, **ARCHITECTURES[name], **overrides}
    unknown = set(config) - set(SampleCNN.__init__.__code__.co_varnames[1:SampleCNN.__init__.__code__.co_argcount])
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))}")
    return config


def build(name: str, n_tags: int = 50, **overrides) -> SampleCNN:
    """Build a named architecture: build('samplecnn'), build('rese2', multi_level=True), build('seed', n_tags=10)."""
    return SampleCNN(**config_for(name, n_tags=n_tags, **overrides))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running statistics), as Keras' summary counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable, running


def segment_gflop(model: nn.Module) -> float:
    """GFLOP (2 x multiply-adds) of one segment's forward pass, counted from the conv and linear layers' output
    shapes: the unit in which the benchmarks report achieved speed (3.46 for the 3^9 model)."""
    flops = 0

    def count(module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.Conv1d):
            flops += 2 * output.numel() * module.in_channels * module.kernel_size[0] // module.groups
        else:
            flops += 2 * module.in_features * module.out_features * output.shape[0]

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, SEGMENT_SAMPLES, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return flops / 1e9
