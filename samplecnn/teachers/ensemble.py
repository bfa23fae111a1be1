"""The musicnn teachers as one labeller of batches of 16-kHz windows, in torch: the teacher inside a training step.

Labelling online (rather than ahead of training, as `samplecnn teach` does for fixed crops) is what lets the teacher
hear exactly the augmented audio the student hears (samplecnn.views). The log-mel front end is musicnn's
(teachers/musicnn.py: centred periodic-Hann STFT, 512/256, power, 96 Slaney mels, float16 rounding, log10(10000 x + 1))
computed with torch.stft in float32 instead of NumPy float64: the difference in the teacher's outputs is ~1e-5, far
below what distillation can notice, and the whole batch is labelled in one pass.
"""

from __future__ import annotations

import numpy as np
import torch

from . import musicnn as M

__all__ = ["TeacherEnsemble", "logmel"]


_WINDOW = torch.hann_window(M.N_FFT, periodic=True, dtype=torch.float32)
_MEL_T = torch.from_numpy(np.ascontiguousarray(M.mel_filterbank().T))  # (257, 96)


def logmel(wave16k: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N // 256, 96) musicnn network input for (B, N) 16-kHz mono signals."""
    spec = torch.stft(wave16k.float(), M.N_FFT, M.HOP, window=_WINDOW.to(wave16k.device), center=True,
                      pad_mode="constant", return_complex=True)
    power = (spec.real.square() + spec.imag.square()).transpose(1, 2)      # (B, frames, 257)
    mel = power @ _MEL_T.to(wave16k.device)
    return torch.log10(mel.half().float() * 10000.0 + 1.0)


# How each network runs fastest on a CPU (measured with 2 threads): a few windows at a time, so that the large
# activations stay in cache; MTT_vgg in channels-last memory with bf16 autocast (3.8x its fp32 speed, outputs within
# 0.007), MTT_musicnn in fp32 (its 1-channel timbral convolutions gain nothing from bf16 or channels-last).
_CPU_CHUNK = 2
_CPU_BF16 = {"MTT_vgg"}


class TeacherEnsemble:
    """MTT_musicnn and/or MTT_vgg: (B, 47680) 16-kHz windows -> (B, T) mean sigmoid outputs for the given columns.

    `columns` maps the student's tags to the teachers' 50 outputs (teach.tag_columns)."""

    def __init__(self, names: tuple[str, ...], columns: list[int], device: torch.device | str = "cpu"):
        self.names = tuple(names)
        self.device = torch.device(device)
        self.nets = [M.load_teacher(name).net.to(self.device).eval() for name in self.names]
        self.bf16 = [self.device.type == "cpu" and name in _CPU_BF16 for name in self.names]
        for net, bf16 in zip(self.nets, self.bf16):
            if bf16:
                net.to(memory_format=torch.channels_last)
        self.columns = torch.as_tensor(columns, dtype=torch.long, device=self.device)

    @torch.no_grad()  # not inference_mode: the result is a training target that autograd sees
    def probabilities(self, wave16k: torch.Tensor) -> torch.Tensor:
        features = logmel(wave16k.to(self.device))[:, :M.PATCH_FRAMES]
        if features.shape[1] != M.PATCH_FRAMES:
            raise ValueError(f"a teacher window must give {M.PATCH_FRAMES} frames, not {features.shape[1]}")
        chunk = _CPU_CHUNK if self.device.type == "cpu" else len(features)
        probs = torch.zeros(len(features), len(M.MTAT_TOP50), device=self.device)
        for net, bf16 in zip(self.nets, self.bf16):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                for start in range(0, len(features), chunk):
                    probs[start:start + chunk] += torch.sigmoid(net(features[start:start + chunk]).float())
        return (probs / len(self.nets))[:, self.columns]
