"""int8 inference in ONNX Runtime: the BatchNorm-folded model statically quantised, beside its checkpoint.

Why ONNX Runtime: its CPU kernels run int8 convolutions on VNNI and AMX, and static quantisation (per-channel int8
weights, uint8 activations whose ranges are calibrated on real music) is one call. Calibration needs real music,
which a user's machine may not have, so the quantised model is made once, by `samplecnn check-precision`, and kept as
a file next to the checkpoint (`int8_path`); the checkpoint's int8 check records that file's hash, so a stale or
foreign file is never used by "auto". The first convolution (one input channel: nothing to gain) and the head and
classifier (a tiny share of the work, and where every error lands in the scores) stay fp32.

ONNX Runtime (and onnx, to write the file) are the optional extra `onnx`; without them only this path is missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import SampleCNNError
from .fileio import atomic_path, file_hash

ENGINE = "onnxruntime QDQ (per-channel int8 weights, uint8 activations)"
_MISSING = "int8 runs in ONNX Runtime, which is not installed: pip install 'samplecnn[onnx]'"


def int8_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where the int8 model of a checkpoint lives: beside it, `NAME.int8.onnx`."""
    return Path(checkpoint_path).with_suffix(".int8.onnx")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise SampleCNNError(_MISSING) from None
    return onnxruntime


def version() -> str:
    return _ort().__version__


def quantize(checkpoint_path: str | os.PathLike, calibration: Iterable[np.ndarray], out: str | os.PathLike,
             overwrite: bool = False, finetune_steps: int = 0) -> Path:
    """Write the int8 model of `checkpoint_path` to `out` (atomically), its activation ranges calibrated on
    `calibration`: real music, one float32 array per song at the model's rate, each at least a segment long.
    With `finetune_steps`, the weights are first fine-tuned for int8 on that music (`samplecnn.qat`)."""
    import logging

    _ort()
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise SampleCNNError(_MISSING) from None
    import torch

    from . import checkpoint, folding, qat
    from .onnx_export import INPUT, export_model

    model, info = checkpoint.read(checkpoint_path)
    songs = [np.asarray(s, np.float32) for s in calibration]
    seg = info.segment_samples
    calibration = [s[i:i + seg] for s in songs for i in range(0, len(s) - seg + 1, seg)]
    if not calibration:
        raise SampleCNNError("no calibration music: int8 needs real music, at least one segment of it")
    model = folding.fold_batchnorm(model)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_model(model, info, Path(tmp) / "fp32.onnx")
        ranges = tensor_ranges(fp32, calibration)  # every float tensor: the quantiser measures none itself
        if finetune_steps:  # the weights change, the ranges they are tuned to do not
            names = qat.quantised_relus(model)
            missing = set(names) - set(ranges)
            if missing:
                raise SampleCNNError(f"int8: the exported graph lacks the tensors {', '.join(sorted(missing))}")
            fixed = {name: ranges[name] for name in names}
            model = qat.finetune(model, songs, torch.tensor([hi for _, hi in fixed.values()]), finetune_steps, seg)
            info.provenance = {**info.provenance, "int8_finetune_steps": finetune_steps}
            fp32 = export_model(model, info, Path(tmp) / "tuned.onnx")
            ranges = {**tensor_ranges(fp32, calibration), **fixed}
        graph = onnx.load(fp32).graph
        layers = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        # fp32: the first conv (one input channel: nothing to gain), the head conv and the classifier (a tiny share
        # of the work, and where every error lands in the scores), and the sigmoid after it, or the logits and
        # the probabilities themselves would be rounded to 8 bits and clipped to the calibration music's range
        keep_fp32 = layers[:1] + layers[-2:] + [n.name for n in graph.node if n.op_type == "Sigmoid"]

        class OneSegment(CalibrationDataReader):
            """The quantiser wants a data reader; the ranges it would measure are all overridden below."""

            def __init__(self):
                self.items = iter([{INPUT: calibration[0][None, None, :]}])

            def get_next(self):
                return next(self.items, None)

        overrides = {name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name, (lo, hi) in ranges.items()}
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model, per call
        try:
            with atomic_path(out, overwrite=overwrite) as dest:
                quantize_static(str(fp32), str(dest), OneSegment(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=keep_fp32, extra_options={"TensorQuantOverrides": overrides})
        finally:
            logging.getLogger().setLevel(level)
    return Path(out)


def tensor_ranges(onnx_path: str | os.PathLike, calibration: Iterable[np.ndarray], batch: int = 8
                  ) -> dict[str, tuple[float, float]]:
    """(min, max) of every float tensor the model computes, over all of `calibration`, a batch at a time.

    Why not ONNX Runtime's own calibrator: it either holds every tensor of every segment in memory (gigabytes for a
    few hundred segments of this model) or, when told to bound that, discards each full chunk without measuring it
    (onnxruntime 1.32), so the ranges came from the last few segments alone and louder music clipped."""
    import onnx
    from onnx import helper

    from .onnx_export import INPUT

    model = onnx.load(onnx_path)
    known = {o.name for o in model.graph.output}
    names = [o for n in model.graph.node for o in n.output if o]
    model.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in names if o not in known)
    session = _ort().InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, tuple[float, float]] = {}
    rows = []

    def measure():
        values = session.run(names, {INPUT: np.stack(rows)[:, None, :]})
        for name, v in zip(names, values):
            if v.dtype.kind == "f" and v.size:
                lo, hi = float(v.min()), float(v.max())
                old = ranges.get(name)
                ranges[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        rows.clear()

    for segment in calibration:
        rows.append(np.asarray(segment, np.float32))
        if len(rows) == batch:
            measure()
    if rows:
        measure()
    return ranges


def file_digest(path: str | os.PathLike) -> str:
    """The hash the checkpoint's int8 record keeps of its int8 file."""
    return file_hash(path)[0]


class Int8Model:
    """An int8 ONNX model run on batches of segments: `(n, segment_samples)` float32 -> (probabilities,
    embeddings), the two outputs of the exported graph."""

    def __init__(self, path: str | os.PathLike, threads: int):
        path = Path(path)
        if not path.is_file():
            raise SampleCNNError("no int8 model for this checkpoint here: `samplecnn check-precision --calibrate` "
                                 "makes it", path)
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own exception types for a damaged file
            raise SampleCNNError(f"not a usable ONNX model ({str(e).splitlines()[0]})", path) from None
        self.path = path

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, embeddings = self.session.run(["probabilities", "embedding"],
                                                     {"audio": np.ascontiguousarray(batch[:, None, :])})
        return probabilities, embeddings
