"""One self-describing file per model: safetensors weights plus JSON metadata in the safetensors header.

The metadata says everything needed to use the weights without guessing: the architecture and its config, the tag
vocabulary in order, the sample rate and segment length, per-tag decision thresholds, and where the weights came from.

A checkpoint is a file users pass around, so reading one trusts nothing in it: the header is read by hand with a size
cap, checked against the safetensors layout and a schema of our metadata, and the model it describes is built on the
meta device and compared with the listed tensors before any memory is spent on it. Whatever is off is refused with one
line (a CheckpointError) naming the file and the reason; save() applies the same rules, so what it writes reads back.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import models
from .errors import CheckpointError
from .fileio import atomic_path, file_hash

FORMAT = "samplecnn-checkpoint"
FORMAT_VERSION = 1
_KEY = "samplecnn"  # key of our JSON inside the safetensors __metadata__ map

MAX_HEADER_BYTES = 16 << 20  # a real header is about 10 kB; the cap bounds what a crafted one makes us parse
MAX_NESTING = 32  # depth of the provenance JSON; deeper values only serve to exhaust the recursion limit
MAX_TAGS = 100_000
MAX_WIDTH = 4.0  # width 4 is already 16x the papers' compute
MAX_AMPLIFYING_RATIO = 64

# safetensors dtype -> bytes per element
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                 torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                 torch.bool: "BOOL"}
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # a float parameter may be stored in any of these (half=True: F16)

# option -> (test, what it must be); options not listed are only type-checked, then built on the meta device
_BOUNDS = {
    "n_tags": (lambda v: 1 <= v <= MAX_TAGS, f"an integer in [1, {MAX_TAGS}]"),
    "width": (lambda v: 0 < v <= MAX_WIDTH, f"a number in (0, {MAX_WIDTH:g}]"),
    "dropout": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "bn_eps": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "amplifying_ratio": (lambda v: 0 <= v <= MAX_AMPLIFYING_RATIO, f"an integer in [0, {MAX_AMPLIFYING_RATIO}]"),
}


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
    """Write `model` and `info` atomically. `half` stores float weights as fp16 (they load back as fp32).
    Raises ValueError for what read() would refuse: a file nobody can read is worse than no file."""
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        tensors[name] = (t.half() if half and t.is_floating_point() else t).contiguous()
    try:
        _check_info(info)
        _check_fit(info, {name: (_TORCH_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape))
                          for name, t in tensors.items()})
    except _Refused as e:
        raise ValueError(f"not saved: {e}") from None
    info.provenance.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    info.provenance.setdefault("samplecnn_version", _version())
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, tmp, metadata={_KEY: json.dumps(info.to_json())})
    return Path(path)


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read and check the metadata (cheap: the header, not the weights). Everything read() can know without the
    weights is checked here, tensors included, so `info --json` refuses exactly the files that read() refuses."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint file" if not path.exists() else "not a file", path)
    try:
        header, data_start, size = _read_header(path)
        tensors = _tensor_specs(header, data_start, size)
        info = _model_info(_metadata(header))
        _check_fit(info, tensors)
    except _Refused as e:
        raise CheckpointError(str(e), path) from None
    return info


def read(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[models.SampleCNN, ModelInfo]:
    """(eval-mode model in fp32, its ModelInfo) from a checkpoint file; every failure is a CheckpointError."""
    info = read_info(path)  # the model below is known to fit the file's tensors before it is built
    model = models.build(info.arch, **info.config)
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"unreadable weights ({str(e).splitlines()[0]})", path) from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"weights contain NaN or inf ({name})", path)
    expected = model.state_dict()
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), info


def stored_half(path: str | os.PathLike) -> bool:
    """Whether a checkpoint stores its float weights as fp16 (`save(half=True)`): what a rewrite of its metadata
    keeps, so that the weights come back bit for bit."""
    try:
        header, _, _ = _read_header(Path(path))
    except _Refused as e:
        raise CheckpointError(str(e), path) from None
    return any(isinstance(v, dict) and v.get("dtype") == "F16" for k, v in header.items() if k != "__metadata__")


def model_id(path: str | os.PathLike, name: str | None = None) -> str:
    """`name-<16 hex of the checkpoint file's hash>`: readable, and changes whenever the weights or metadata change;
    what a library stores with each track and what `serve` reports (default name: the file's stem)."""
    digest, _, _ = file_hash(path)
    return f"{name or Path(path).stem}-{digest[:16]}"


class _Refused(ValueError):
    """Why a header or a ModelInfo is unusable; read_info() names the file, save() raises it as a ValueError."""


# -- the safetensors framing


def _read_header(path: Path) -> tuple[dict, int, int]:
    """(header, offset of the tensor data, file size), read by hand: the 8-byte length is checked against the file
    and a cap before anything is parsed, since safetensors itself would parse whatever length the file claims."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or length > size - 8:
                raise _Refused("not a samplecnn checkpoint (no safetensors header; truncated or foreign)")
            if length > MAX_HEADER_BYTES:
                raise _Refused(f"safetensors header of {length} bytes, over the {MAX_HEADER_BYTES >> 20} MiB limit")
            raw = f.read(length)
    except OSError as e:
        raise _Refused(f"cannot read the file ({e.strerror or e})") from None
    header = _parse_json(raw, "safetensors header", "not a samplecnn checkpoint (unreadable safetensors header)",
                         allow_nan=False)
    if not isinstance(header, dict):
        raise _Refused("not a samplecnn checkpoint (the safetensors header is not a JSON object)")
    return header, 8 + length, size


def _parse_json(raw: bytes | str, what: str, unreadable: str, allow_nan: bool):
    """json.loads that turns every failure into a _Refused: hostile nesting raises RecursionError, not ValueError,
    and safetensors headers are UTF-8 JSON without NaN (json alone would guess UTF-16 and accept NaN)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _Refused(f"{what} is nested too deeply") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Refused(unreadable) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _tensor_specs(header: dict, data_start: int, size: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of each tensor, after the checks safetensors makes when it loads: known dtypes, byte
    spans that match the shapes, and spans that tile the data exactly (no overlap, gap or byte past the end)."""
    specs, spans = {}, []
    for name, entry in header.items():
        if name != "__metadata__":
            dtype, shape, span = _tensor_entry(name, entry)
            specs[name] = dtype, shape
            spans.append((*span, name))
    needed = data_start + max((end for _, end, _ in spans), default=0)
    if needed > size:
        raise _Refused(f"truncated: {size} bytes, needs {needed}")
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise _Refused(f"bad safetensors header: tensor {_show(name)} overlaps another one or leaves a gap")
        position = end
    if data_start + position != size:
        raise _Refused(f"{size - data_start - position} stray bytes after the tensor data")
    return specs


def _tensor_entry(name: str, entry) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, (begin, end)) of one header entry, which must be exactly what safetensors writes."""
    where = f"bad safetensors header: tensor {_show(name)}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _Refused(f"{where} is {_show(entry)}, not a {{dtype, shape, data_offsets}} object")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        raise _Refused(f"{where} has an unknown dtype {_show(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _Refused(f"{where} has shape {_show(shape)}, not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _Refused(f"{where} has data_offsets {_show(offsets)}, not [begin, end] with 0 <= begin <= end")
    needed = math.prod(shape) * _DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != needed:
        raise _Refused(f"{where}: data_offsets span {offsets[1] - offsets[0]} bytes, its dtype and shape need {needed}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _metadata(header: dict) -> dict:
    """Our JSON document from the header's __metadata__ map (which safetensors requires to map strings to strings)."""
    meta = header.get("__metadata__")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Refused("bad safetensors header: __metadata__ must map names to strings")
    if _KEY not in meta:
        raise _Refused("a safetensors file without samplecnn metadata (foreign checkpoint?)")
    doc = _parse_json(meta[_KEY], "samplecnn metadata", "samplecnn metadata is malformed (not JSON)", allow_nan=True)
    if not isinstance(doc, dict):
        raise _Refused("samplecnn metadata is malformed (not a JSON object)")
    return doc


# -- the samplecnn metadata


def _model_info(doc: dict) -> ModelInfo:
    """The ModelInfo a metadata document describes: our format and version, the ModelInfo fields and no others,
    each as save() would have written it."""
    if doc.get("format") != FORMAT:
        raise _Refused(f"samplecnn metadata is malformed (format {_show(doc.get('format'))}, not {FORMAT!r})")
    version = doc.get("format_version")
    if not _is_int(version) or version < 1:
        raise _Refused(f"samplecnn metadata is malformed (format_version {_show(version)})")
    if version > FORMAT_VERSION:
        raise _Refused(f"written by a newer samplecnn (format {version}); upgrade samplecnn")
    fields = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
    known = dataclasses.fields(ModelInfo)
    unknown = sorted(set(fields) - {f.name for f in known})
    if unknown:
        raise _Refused(f"unknown metadata field(s): {', '.join(_show(k) for k in unknown[:5])}")
    required = [f.name for f in known if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in fields]
    if missing:
        raise _Refused(f"missing metadata field(s): {', '.join(missing)}")
    info = ModelInfo(**fields)
    _check_info(info)
    return info


def _check_info(info: ModelInfo) -> None:
    """Raise _Refused if `info` cannot describe a usable model; the one set of rules for save() and read_info()."""
    if not isinstance(info.arch, str) or info.arch not in models.ARCHITECTURES:
        raise _Refused(f"unknown architecture {_show(info.arch)} (this samplecnn knows "
                       f"{', '.join(models.ARCHITECTURES)})")
    _check_config(info.config)
    _check_tags(info.tags)
    _check_thresholds(info.thresholds)
    if info.config["n_tags"] != len(info.tags) or len(info.thresholds) != len(info.tags):
        raise _Refused(f"metadata mismatch: {len(info.tags)} tags, {len(info.thresholds)} thresholds, "
                       f"n_tags={info.config['n_tags']}")
    for name, wanted in (("sample_rate", models.SAMPLE_RATE), ("segment_samples", models.SEGMENT_SAMPLES)):
        value = getattr(info, name)
        if not _is_int(value) or value != wanted:
            raise _Refused(f"{name} is {_show(value)}; the models take {wanted}")
    if not isinstance(info.provenance, dict):
        raise _Refused(f"provenance is {_show(info.provenance)}, not a JSON object")
    if _depth(info.provenance) > MAX_NESTING:
        raise _Refused(f"provenance is nested too deeply (over {MAX_NESTING} levels)")


def _config_options() -> dict[str, type | None]:
    """Option name -> the type of its default, from SampleCNN's signature (the options config_for accepts), so
    options added there are accepted here; None where there is no default to learn a type from."""
    params = list(inspect.signature(models.SampleCNN.__init__).parameters.values())[1:]
    return {p.name: None if p.default is p.empty or p.default is None else type(p.default) for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_config(config) -> None:
    """Known options of the right types, the numeric ones within sane bounds (a crafted width could ask for
    terabytes), and n_tags present."""
    if not isinstance(config, dict):
        raise _Refused(f"config is {_show(config)}, not a JSON object of options")
    options = _config_options()
    unknown = sorted(set(config) - set(options))
    if unknown:
        raise _Refused(f"config has unknown option(s): {', '.join(_show(k) for k in unknown[:5])}")
    if "n_tags" not in config:
        raise _Refused("config lacks n_tags")
    for name, value in config.items():
        kind = options[name]
        if not _has_type(value, kind):
            raise _Refused(f"config option {name} is {_show(value)}, not a{'n' if kind is int else ''} "
                           f"{kind.__name__ if kind else 'JSON scalar'}")
        test, wanted = _BOUNDS.get(name, (None, None))
        if test is not None and not test(value):
            raise _Refused(f"config option {name} is {_show(value)}, not {wanted}")


def _check_tags(tags) -> None:
    """Unique, non-blank, printable names: tags are printed one per line and looked up by name."""
    if not isinstance(tags, list):
        raise _Refused(f"tags is {_show(tags)}, not a list of names")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip() or not tag.isprintable():
            raise _Refused(f"tags[{i}] is {_show(tag)}; tags must be non-blank printable strings")
    if len(set(tags)) != len(tags):
        seen = set()
        duplicate = next(t for t in tags if t in seen or seen.add(t))
        raise _Refused(f"duplicate tag {_show(duplicate)}")


def _check_thresholds(thresholds) -> None:
    """Decision thresholds compare with sigmoid scores (a tag is decided where score >= threshold): finite numbers
    from 0 (always decided) up; one above 1 is how a tag is switched off, as no score reaches it."""
    if not isinstance(thresholds, list):
        raise _Refused(f"thresholds is {_show(thresholds)}, not a list of numbers")
    for i, t in enumerate(thresholds):
        if not (_is_number(t) and t >= 0):
            raise _Refused(f"thresholds[{i}] is {_show(t)}, not a finite number >= 0")


# -- the tensors against the model


def _check_fit(info: ModelInfo, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """The tensors (name -> (safetensors dtype, shape)) must be exactly the model's: the same names and shapes, a
    float dtype where the model has floats and its own dtype elsewhere."""
    expected = _expected_tensors(info)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _Refused(f"weights do not fit {info.arch}: {len(missing)} missing (e.g. {missing[:1]}), "
                       f"{len(unexpected)} unexpected (e.g. {_show(unexpected[:1])})")
    for name, (dtype, shape) in tensors.items():
        want_dtype, want_shape = expected[name]
        if shape != want_shape:
            raise _Refused(f"weights do not fit {info.arch}: {name} has shape {_show(shape)}, expected {want_shape}")
        if want_dtype.is_floating_point and dtype not in _FLOAT_DTYPES:
            raise _Refused(f"weights do not fit {info.arch}: {name} is stored as {dtype}, the model needs floats")
        if not want_dtype.is_floating_point and dtype != _TORCH_DTYPES.get(want_dtype):
            raise _Refused(f"weights do not fit {info.arch}: {name} is stored as {dtype}, the model needs "
                           f"{_TORCH_DTYPES.get(want_dtype, want_dtype)}")


def _expected_tensors(info: ModelInfo) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """name -> (dtype, shape) of the model `info` describes, built on the meta device: shapes without memory."""
    try:
        with torch.device("meta"):
            model = models.build(info.arch, **info.config)
    except (ValueError, TypeError, KeyError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise _Refused(f"bad architecture config: {'unknown value ' if isinstance(e, KeyError) else ''}{reason}"
                       ) from None
    return {name: (t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()}


# -- small helpers


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (bool is an int to Python, not a number to us)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_type(value, kind: type | None) -> bool:
    """Whether a JSON value fits an option whose default has type `kind` (an int is fine for a float option)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return _is_int(value)
    if kind is float:
        return _is_number(value)
    if kind is str:
        return isinstance(value, str)
    return value is None or isinstance(value, (str, bool)) or _is_number(value)


def _depth(value) -> int:
    """Nesting depth of a JSON value (a scalar is 1), level by level: recursion is what deep values attack."""
    depth, level = 0, [value]
    while level and depth <= MAX_NESTING:
        depth += 1
        level = [v for item in level if isinstance(item, (dict, list, tuple))
                 for v in (item.values() if isinstance(item, dict) else item)]
    return depth


def _show(value) -> str:
    """A short one-line rendering of a value from a file, for an error message (repr of a crafted value can be
    huge, multi-line once printed, or recurse too deeply)."""
    if isinstance(value, dict):
        return f"an object of {len(value)} key(s)"
    if isinstance(value, list) and not all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
        return f"a list of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _version() -> str:
    from . import __version__
    return __version__
