"""One self-describing file per model: safetensors weights plus JSON metadata in the safetensors header.

The metadata says everything needed to use the weights without guessing: the architecture and its config, the tag
vocabulary in order, the sample rate and segment length, per-tag decision thresholds, and where the weights came from.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import models
from .errors import CheckpointError
from .fileio import atomic_path

FORMAT = "samplecnn-checkpoint"
FORMAT_VERSION = 1
_KEY = "samplecnn"  # key of our JSON inside the safetensors __metadata__ map


@dataclasses.dataclass
class ModelInfo:
    """What a checkpoint says about its model."""

    arch: str
    config: dict
    tags: list[str]
    thresholds: list[float]
    sample_rate: int = models.SAMPLE_RATE
    segment_samples: int = models.SEGMENT_SAMPLES
    provenance: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}


def save(path: str | os.PathLike, model: models.SampleCNN, info: ModelInfo, *, half: bool = False,
         overwrite: bool = False) -> Path:
    """Write `model` and `info` atomically. `half` stores float weights as fp16 (they load back as fp32)."""
    if len(info.tags) != info.config["n_tags"] or len(info.thresholds) != len(info.tags):
        raise ValueError("tags, thresholds and config['n_tags'] must have the same length")
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        tensors[name] = (t.half() if half and t.is_floating_point() else t).contiguous()
    info.provenance.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    info.provenance.setdefault("samplecnn_version", _version())
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, tmp, metadata={_KEY: json.dumps(info.to_json())})
    return Path(path)


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata (cheap: the header, not the weights)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint file" if not path.exists() else "not a file", path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
            if header_len <= 1 or header_len > min(size - 8, 100_000_000):
                raise CheckpointError("not a samplecnn checkpoint (no safetensors header; truncated or foreign)", path)
            header = json.loads(f.read(header_len))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError("not a samplecnn checkpoint (unreadable safetensors header)", path) from None
    raw = (header.get("__metadata__") or {}).get(_KEY) if isinstance(header, dict) else None
    if raw is None:
        raise CheckpointError("a safetensors file without samplecnn metadata (foreign checkpoint?)", path)
    try:
        meta = json.loads(raw)
        if meta.pop("format") != FORMAT:
            raise ValueError
        version = meta.pop("format_version")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"written by a newer samplecnn (format {version}); upgrade samplecnn", path)
        info = ModelInfo(**meta)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError):
        raise CheckpointError("samplecnn metadata is malformed", path) from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(f"truncated: {size} bytes, needs {8 + header_len + end}", path)
    return info


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[models.SampleCNN, ModelInfo]:
    """Load a checkpoint into an eval-mode model (fp32) and its ModelInfo; every failure is a CheckpointError."""
    info = read_info(path)
    if info.arch not in models.ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {info.arch!r} (this samplecnn knows "
                              f"{', '.join(models.ARCHITECTURES)})", path)
    if info.config.get("n_tags") != len(info.tags) or len(info.thresholds) != len(info.tags):
        raise CheckpointError(f"metadata mismatch: {len(info.tags)} tags, {len(info.thresholds)} thresholds, "
                              f"n_tags={info.config.get('n_tags')}", path)
    try:
        model = models.build(info.arch, **info.config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"bad architecture config: {e}", path) from None
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"unreadable weights ({str(e).splitlines()[0]})", path) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit {info.arch}: {len(missing)} missing (e.g. {missing[:1]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:1]})", path)
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"weights do not fit {info.arch}: {name} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[name].shape)}", path)
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"weights contain NaN or inf ({name})", path)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), info


def _version() -> str:
    from . import __version__
    return __version__
