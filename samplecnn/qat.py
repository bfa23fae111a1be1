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
the head and the classifier stay fp32. The activation ranges are those `int8.quantize` measures on the calibration
music before fine-tuning; they stay fixed, and the quantiser is handed exactly these.
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
from .models import BasicBlock
from .views import Augment, filter_and_gain

BATCH = 8
LR = 1e-5
GAIN_ONLY = Augment(p_filter=0.0, gain_db=(-6.0, 6.0))


def quantised_relus(model: nn.Module) -> list[str]:
    """The ONNX tensor names of the ReLU outputs that the simulation quantises, stem first (the names
    `torch.onnx.export` gives the folded model's ReLUs)."""
    return ["/stem/stem.2/Relu_output_0", *(f"/blocks.{i}/Relu_output_0" for i in range(len(model.blocks)))]


def check_supported(folded: nn.Module) -> None:
    """Only the plain SampleCNN (strided stem, basic blocks without SE, conv head) has this simulation."""
    if (folded.head_kind != "conv" or len(folded.stem) != 3
            or not all(isinstance(b, BasicBlock) and b.se is None for b in folded.blocks)):
        raise SampleCNNError("quantisation-aware fine-tuning supports the samplecnn architecture only")


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


def _crop(songs: Sequence[np.ndarray], weights: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """A random crop of a song drawn with `weights` (by length: every second of music equally likely), at a random
    gain of -6..+6 dB with its peak kept under 1: the levels a library holds, louder than the calibration music."""
    song = songs[int(rng.choice(len(songs), p=weights))]
    start = int(rng.integers(0, max(1, len(song) - samples + 1)))
    x = np.zeros(samples, np.float32)
    piece = song[start:start + samples]
    x[:len(piece)] = piece
    return filter_and_gain(x, rng, GAIN_ONLY)


def finetune(folded: nn.Module, songs: Sequence[np.ndarray], maxes: torch.Tensor, steps: int, samples: int,
             seed: int = 0) -> nn.Module:
    """A copy of the folded model fine-tuned for `steps` Adam steps of BCE between its simulated int8 logits (with
    the ReLU ranges' tops `maxes`, in `quantised_relus` order) and the fp32 model's probabilities, on crops of
    `songs`."""
    check_supported(folded)
    if steps < 1 or not songs:
        raise SampleCNNError("quantisation-aware fine-tuning needs music and at least one step")
    teacher = copy.deepcopy(folded).eval()
    student = copy.deepcopy(folded).eval()  # eval: the head's dropout stays off, as in the int8 model
    for p in student.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=LR)
    rng = np.random.default_rng(seed)
    lengths = np.array([len(s) for s in songs], dtype=np.float64)
    weights = lengths / lengths.sum()
    for _ in tqdm(range(steps), desc="int8 fine-tuning", unit="step", dynamic_ncols=True):
        x = torch.from_numpy(np.stack([_crop(songs, weights, rng, samples) for _ in range(BATCH)]))[:, None, :]
        with torch.no_grad():
            target = torch.sigmoid(teacher(x))
        loss = F.binary_cross_entropy_with_logits(simulated_logits(student, x, maxes), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in student.parameters():
        p.requires_grad_(False)
    return student
