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
             overwrite: bool = False) -> Path:
    """Write the int8 model of `checkpoint_path` to `out` (atomically), its activation ranges calibrated on
    `calibration`: segments of real music, (segment_samples,) float32 each."""
    import logging

    _ort()
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise SampleCNNError(_MISSING) from None
    from .onnx_export import INPUT, export

    class Segments(CalibrationDataReader):
        def __init__(self):
            self.items = ({INPUT: np.asarray(s, np.float32)[None, None, :]} for s in calibration)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export(checkpoint_path, Path(tmp) / "fp32.onnx")
        layers = [n.name for n in onnx.load(fp32).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        keep_fp32 = layers[:1] + layers[-2:]  # the first conv; the head conv and the classifier
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model, per call
        try:
            with atomic_path(out, overwrite=overwrite) as dest:
                quantize_static(str(fp32), str(dest), Segments(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=keep_fp32,
                                extra_options={"CalibMaxIntermediateOutputs": 16})  # bounds its memory
        finally:
            logging.getLogger().setLevel(level)
    return Path(out)


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
