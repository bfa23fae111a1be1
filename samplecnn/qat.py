"""Quantisation-aware fine-tuning for the int8 path: weights whose int8 model gives the fp32 model's scores.

Why: with 8-bit activations this model's song scores move by up to 0.07 after calibration alone (README,
Benchmarks), more than the precision rule allows. So a copy of the BatchNorm-folded model is fine-tuned with the
int8 model's rounding simulated in its forward pass (fake quantisation with straight-through gradients; Jacob et al.
2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"), to give the
fp32 model's own probabilities on real music (self-distillation: no labels needed). ReLU is positively homogeneous,
so the copy can move each block's activations into the range its 8 bits cover without changing its fp32 function.

The simulation is ONNX Runtime's QDQ graph of this model (`int8.quantize`): the stem stays fp32 and its ReLU output
is quantised to uint8; each block's convolution has per-output-channel symmetric int8 weights and an int32 bias at
the input scale times the weight scale; its ReLU output is uint8 with zero point 0, on a grid that max-pooling keeps;
the head and the classifier stay fp32. The activation ranges are measured once on the calibration music and kept
fixed, and `int8.quantize` hands exactly these ranges to ONNX Runtime.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .errors import SampleCNNError

BATCH = 8
LR = 1e-5


def stem_and_block_outputs(model: nn.Module) -> list[str]:
    """The ONNX tensor names of the ReLU outputs that the simulation quantises, stem first (the names
    `torch.onnx.export` gives the folded model's ReLUs)."""
    return ["/stem/stem.2/Relu_output_0", *(f"/blocks.{i}/Relu_output_0" for i in range(len(model.blocks)))]


def check_supported(folded: nn.Module) -> None:
    """Only the plain SampleCNN (strided stem, basic blocks without SE, conv head) has this simulation."""
    blocks = getattr(folded, "blocks", [])
    if (getattr(folded, "head_kind", None) != "conv" or len(getattr(folded, "stem", [])) != 3
            or not blocks or any(getattr(b, "se", None) is not None or not hasattr(b, "conv") for b in blocks)):
        raise SampleCNNError("quantisation-aware fine-tuning supports the samplecnn architecture only")


@torch.no_grad()
def activation_maxes(folded: nn.Module, segments: Sequence[np.ndarray]) -> torch.Tensor:
    """The largest stem and block ReLU outputs of the fp32 model over `segments`: the uint8 ranges' tops."""
    maxes = torch.zeros(1 + len(folded.blocks))
    for start in range(0, len(segments), BATCH):
        h = folded.stem(torch.from_numpy(np.stack(segments[start:start + BATCH]))[:, None, :])
        maxes[0] = torch.maximum(maxes[0], h.max())
        for i, block in enumerate(folded.blocks):
            h = F.relu(block.conv(h))
            maxes[i + 1] = torch.maximum(maxes[i + 1], h.max())
            h = block.pool(h)
    return maxes


def _weight_scales(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scales, as ONNX Runtime computes them (|w| max over 127)."""
    return (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / 127).clamp_min(1e-12)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def simulated_logits(folded: nn.Module, x: torch.Tensor, maxes: torch.Tensor) -> torch.Tensor:
    """The int8 model's logits for (batch, 1, samples) audio, computed in float32 with its roundings."""
    h = folded.stem(x)
    scale_in = float(maxes[0]) / 255
    h = torch.fake_quantize_per_tensor_affine(h, scale_in, 0, 0, 255)
    for i, block in enumerate(folded.blocks):
        conv = block.conv
        w_scale = _weight_scales(conv.weight)
        w = torch.fake_quantize_per_channel_affine(conv.weight, w_scale, torch.zeros_like(w_scale, dtype=torch.int32),
                                                   0, -127, 127)
        b_scale = scale_in * w_scale
        b = _round_ste(conv.bias / b_scale) * b_scale
        h = F.relu(F.conv1d(h, w, b, stride=conv.stride, padding=conv.padding))
        scale_in = float(maxes[i + 1]) / 255
        h = block.pool(torch.fake_quantize_per_tensor_affine(h, scale_in, 0, 0, 255))
    return folded.classifier(folded.head(h).flatten(1))


def _crop(songs: Sequence[np.ndarray], rng: np.random.Generator, samples: int) -> np.ndarray:
    """A random crop of a random song (every second of music equally likely), at a random gain of -6..+6 dB with
    its peak kept under 1: the levels a library holds, louder than the calibration music included."""
    lengths = np.array([len(s) for s in songs], dtype=np.float64)
    song = songs[int(rng.choice(len(songs), p=lengths / lengths.sum()))]
    start = int(rng.integers(0, max(1, len(song) - samples + 1)))
    x = np.zeros(samples, np.float32)
    piece = song[start:start + samples]
    x[:len(piece)] = piece
    x *= np.float32(10 ** (rng.uniform(-6, 6) / 20))
    peak = float(np.abs(x).max())
    return x / peak if peak > 1 else x


def finetune(folded: nn.Module, songs: Sequence[np.ndarray], segments: Sequence[np.ndarray], steps: int,
             samples: int, seed: int = 0) -> tuple[nn.Module, dict[str, tuple[float, float]]]:
    """A fine-tuned copy of the folded model and the ONNX ranges {tensor: (0, max)} its int8 model must use.

    `segments` (the calibration music's segments) set the ranges; crops of `songs` train the copy for `steps` Adam
    steps of BCE between its simulated int8 logits and the fp32 model's probabilities."""
    check_supported(folded)
    if steps < 1 or not songs:
        raise SampleCNNError("quantisation-aware fine-tuning needs music and at least one step")
    teacher = copy.deepcopy(folded).eval()
    student = copy.deepcopy(folded).eval()  # eval: the head's dropout stays off, as in the int8 model
    for p in student.parameters():
        p.requires_grad_(True)
    maxes = activation_maxes(folded, segments)
    optimizer = torch.optim.Adam(student.parameters(), lr=LR)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(steps), desc="int8 fine-tuning", unit="step", dynamic_ncols=True):
        x = torch.from_numpy(np.stack([_crop(songs, rng, samples) for _ in range(BATCH)]))[:, None, :]
        with torch.no_grad():
            target = torch.sigmoid(teacher(x))
        loss = F.binary_cross_entropy_with_logits(simulated_logits(student, x, maxes), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in student.parameters():
        p.requires_grad_(False)
    ranges = {name: (0.0, float(m)) for name, m in zip(stem_and_block_outputs(student), maxes)}
    return student, ranges
