"""The inference copy of a model: BatchNorm folded into the convolutions, optionally with its bulk in bf16.

Why:
- Folding an eval-mode BatchNorm into the conv/linear before it is exact algebra (float64 arithmetic, one rounding to
  float32), removes a full pass over every activation, and is what makes bf16 usable at all: bf16 on the unfolded
  model loses too much precision in the first layer.
- The copy keeps the SampleCNN API (`forward`, `embed`, `classifier`, `embed_dim`), takes float32 input and returns
  float32: the tagger, the library indexer and the ONNX export use it unchanged.

When bf16 may be used is `samplecnn.precision`'s rule, not this module's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# ----------------------------------------------------------------------------------------------------------------
# BatchNorm folding


def _fold_into(layer: nn.Module, bn: nn.BatchNorm1d) -> None:
    """Rewrite `layer` (Conv1d or Linear, output channels first) so that layer(x) == bn(old_layer(x)) in eval mode."""
    w = layer.weight.detach().double()
    b = (layer.bias.detach().double() if layer.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device))
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(bn.running_var.double())
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(bn.running_var.double())
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = beta - bn.running_mean.double() * scale
    dtype = layer.weight.dtype
    layer.weight = nn.Parameter((w * scale.view(-1, *([1] * (w.dim() - 1)))).to(dtype), requires_grad=False)
    layer.bias = nn.Parameter((b * scale + shift).to(dtype), requires_grad=False)


def _fold_module(module: nn.Module) -> None:
    """Fold every BatchNorm1d that directly follows a Conv1d/Linear: consecutive entries of a Sequential, and the
    named pairs of the SampleCNN blocks (conv/bn, conv1/bn1, conv2/bn2)."""
    if isinstance(module, nn.Sequential):
        items = list(module)
        for i in range(1, len(items)):
            if isinstance(items[i], nn.BatchNorm1d) and isinstance(items[i - 1], (nn.Conv1d, nn.Linear)):
                _fold_into(items[i - 1], items[i])
                module[i] = nn.Identity()
    for layer_name, bn_name in (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2")):
        layer, bn = getattr(module, layer_name, None), getattr(module, bn_name, None)
        if isinstance(bn, nn.BatchNorm1d) and isinstance(layer, (nn.Conv1d, nn.Linear)):
            _fold_into(layer, bn)
            setattr(module, bn_name, nn.Identity())
    for child in module.children():
        _fold_module(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm folded into the layer before it (the original is untouched).

    Raises ValueError if a BatchNorm is left that does not follow a conv/linear: folding it would be wrong, and
    leaving it would silently make bf16 inaccurate."""
    folded = copy.deepcopy(model).eval()
    _fold_module(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm layer(s) {', '.join(left)}: not directly after a conv/linear")
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


# ----------------------------------------------------------------------------------------------------------------
# bf16


class _Cast(nn.Module):
    """Casts floating tensors to `dtype` (the entry and exit of the bf16 region)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def extra_repr(self) -> str:
        return str(self.dtype)


def to_bf16(folded: nn.Module) -> nn.Module:
    """A copy of a *folded* SampleCNN whose stem and blocks run in bf16; the head and classifier stay fp32 (a tiny
    share of the work, and it keeps the embeddings and logits in float32 for every consumer)."""
    if not all(hasattr(folded, a) for a in ("stem", "blocks", "head", "classifier")):
        raise ValueError("to_bf16 expects a SampleCNN (stem, blocks, head, classifier)")
    model = copy.deepcopy(folded)
    model.stem = nn.Sequential(_Cast(torch.bfloat16), *model.stem).to(torch.bfloat16)
    model.blocks = model.blocks.to(torch.bfloat16)
    model.head = nn.Sequential(_Cast(torch.float32), *model.head)
    return model


def inference_copy(model: nn.Module, precision: str = "fp32", device_type: str = "cpu") -> nn.Module:
    """The model to run for a resolved precision ("fp32" or "bf16") on a device type: always BatchNorm-folded
    (exact in fp32). bf16 on a CPU runs planar (height-1 Conv2d, channels-last; models.py): the layout that reaches
    oneDNN's bf16/AMX convolution kernels, 4-5x the Conv1d path's bf16 speed on an AMX CPU (README, Benchmarks);
    fp32 gains nothing from it, and GPUs keep the Conv1d layout cuDNN is measured with."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' here, not {precision!r}")
    folded = fold_batchnorm(model)
    if precision != "bf16":
        return folded
    fast = to_bf16(folded)
    fast.planar = device_type == "cpu" and hasattr(fast, "planar")
    return fast
