"""Export a checkpoint to ONNX: the BatchNorm-folded fp32 model, a dynamic batch axis, and the checkpoint's metadata.

Why: ONNX Runtime is a second CPU engine (its timings vary less than PyTorch's when another process takes a
core) and the way into other runtimes. The file is self-describing like our checkpoints:
its metadata_props carry the tag list, thresholds, sample rate and segment length, so nothing has to be guessed.

Graph: input "audio" (batch, 1, segment_samples) float32 mono at `sample_rate`; outputs "probabilities"
(batch, n_tags), the sigmoid of the logits, and "embedding" (batch, embed_dim), the penultimate features. Song-level
scores are the mean of the probabilities over a song's segments, as in `samplecnn tag`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, folding
from .fileio import atomic_path

OPSET = 17
INPUT = "audio"
OUTPUTS = ("probabilities", "embedding")


class _Exported(nn.Module):
    """What the ONNX graph computes: (probabilities, embedding) of a batch of segments."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.embed(audio)
        return torch.sigmoid(self.model.classifier(embedding)), embedding


def metadata(info: checkpoint.ModelInfo) -> dict[str, str]:
    """The metadata_props written into the ONNX file (all values are strings; lists and dicts as JSON)."""
    from . import __version__

    return {
        "samplecnn_format": "samplecnn-onnx/1",
        "arch": info.arch,
        "config": json.dumps(info.config),
        "tags": json.dumps(list(info.tags)),
        "thresholds": json.dumps([float(t) for t in info.thresholds]),
        "sample_rate": str(info.sample_rate),
        "segment_samples": str(info.segment_samples),
        "provenance": json.dumps(info.provenance, default=str),
        "samplecnn_version": __version__,
    }


def export(checkpoint_path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the ONNX model of `checkpoint_path` to `out` (atomically); returns `out`."""
    model, info = checkpoint.read(checkpoint_path)
    return export_model(model, info, out, overwrite)


def export_model(model: nn.Module, info: checkpoint.ModelInfo, out: str | os.PathLike, overwrite: bool = False
                 ) -> Path:
    """Write `model` (folded here if it is not yet) with `info`'s metadata to `out` (atomically); returns `out`."""
    import onnx  # the optional extra `onnx`; the CLI turns its absence into a one-line error

    wrapped = _Exported(folding.fold_batchnorm(model)).eval()
    example = torch.zeros(1, 1, info.segment_samples)
    with atomic_path(out, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs the extra
        # `onnxscript` package; for this plain conv net both give the same graph, and this one needs nothing more.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapped, (example,), tmp, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=list(OUTPUTS),
                          dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}})
        graph = onnx.load(tmp)
        for key, value in metadata(info).items():
            prop = graph.metadata_props.add()
            prop.key, prop.value = key, value
        graph.doc_string = f"samplecnn {info.arch}: {len(info.tags)} tags from {info.segment_samples}-sample segments"
        onnx.save(graph, tmp)
    return Path(out)


def read_metadata(path: str | os.PathLike) -> dict:
    """The samplecnn metadata of an exported file, with the JSON values decoded (via onnxruntime, no onnx needed)."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    out = dict(props)
    for key in ("config", "tags", "thresholds", "provenance"):
        if key in out:
            out[key] = json.loads(out[key])
    for key in ("sample_rate", "segment_samples"):
        if key in out:
            out[key] = int(out[key])
    return out
