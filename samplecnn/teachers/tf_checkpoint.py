"""Read a TensorFlow checkpoint (a "tensor bundle": `<prefix>.index` + `<prefix>.data-NNNNN-of-NNNNN`) with NumPy.

Why: the musicnn teacher's weights ship only as TF1 checkpoints, and TensorFlow is a heavy, often uninstallable
dependency for a few MB of floats. The format is small enough to read by hand:

- `.index` is an SSTable in LevelDB's table format: data blocks of key/value entries (each key stored as the number
  of bytes shared with the previous key, the unshared suffix and the value, with "restart points" where a full key is
  stored), an index block mapping the last key of each data block to its (offset, size) handle, and a 48-byte footer
  (metaindex handle, index handle, padding, magic 0xdb4775248b80fb57). Each block is followed by a 1-byte compression
  type and a masked CRC-32C of the block plus that byte.
- The entry with the empty key is a `BundleHeaderProto` (number of data shards, endianness); every other entry maps a
  tensor name to a `BundleEntryProto` (dtype, shape, shard_id, offset, size, masked CRC-32C of the raw bytes).
- The protobufs are decoded from their wire format here (varints, length-delimited fields), so neither protobuf nor
  TensorFlow is needed.

Every CRC is checked (blocks always, tensor bytes unless `verify=False`), so a damaged file fails loudly rather than
giving a teacher with silently wrong weights. Anything this reader does not handle (snappy blocks, partitioned
variables, string or bfloat16 tensors) is refused with a one-line TFCheckpointError.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import CheckpointError

__all__ = ["TFCheckpointError", "TensorEntry", "read_index", "read_checkpoint", "is_training_state", "crc32c"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48        # two block handles padded to 40 bytes, then the 8-byte magic
_TRAILER_SIZE = 5        # compression type byte + masked CRC-32C
_COMPRESSION = {0: None, 1: "snappy", 2: "zlib"}  # table::CompressionType values; only 0 is read here

# tensorflow/core/framework/types.proto DataType values whose bundle encoding is the raw little-endian array.
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 8: np.complex64,
    9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128, 19: np.float16, 22: np.uint32, 23: np.uint64,
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}

# Optimizer slots and step counters: saved next to the weights, never part of the model.
_TRAINING_STATE = re.compile(
    r"(^|/)(Adam(_\d+)?|Momentum|RMSProp(_\d+)?|Adagrad|Adadelta(_\d+)?|Ftrl(_\d+)?)$"
    r"|^(beta1_power|beta2_power|global_step)(_\d+)?$"
)


class TFCheckpointError(CheckpointError):
    """The TensorFlow checkpoint is missing, damaged, or uses a feature this reader does not handle."""


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data files, as its BundleEntryProto says."""

    name: str
    dtype: int                 # TF DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int                  # bytes
    crc32c: int | None         # masked, as stored
    sliced: bool = False       # a partitioned variable (not readable here)

    @property
    def numpy_dtype(self) -> np.dtype | None:
        return np.dtype(_DTYPES[self.dtype]) if self.dtype in _DTYPES else None


def is_training_state(name: str) -> bool:
    """True for optimizer slots (`x/Adam`, `x/Adam_1`, ...) and counters (`beta1_power`, `global_step`)."""
    return bool(_TRAINING_STATE.search(name))


# ----------------------------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), needed for the block trailers and the tensors' checksums


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_LANES = 1024            # bytes processed side by side by NumPy; below _SERIAL_MAX bytes a Python loop is faster
_SERIAL_MAX = 16 * _LANES


def _serial(state: int, data) -> int:
    """The raw (un-inverted) CRC register after feeding `data` byte by byte."""
    table = _TABLE_LIST
    for b in data:
        state = table[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


def _apply(images: list[int], v: int) -> int:
    """Apply the GF(2)-linear map given by the images of the 32 unit vectors to `v`."""
    out = 0
    i = 0
    while v:
        if v & 1:
            out ^= images[i]
        v >>= 1
        i += 1
    return out


@functools.lru_cache(maxsize=64)
def _zeros_operator(n: int) -> tuple[tuple[int, ...], ...]:
    """Byte lookup tables for the map "feed n zero bytes" on the CRC register (linear, so it is a 32x32 bit matrix),
    built by repeated squaring. It moves a lane's CRC past the bytes that follow the lane."""
    step = [_TABLE_LIST[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)]
    result = [1 << i for i in range(32)]  # identity
    while n:
        if n & 1:
            result = [_apply(step, r) for r in result]
        step = [_apply(step, s) for s in step]
        n >>= 1
    tables = []
    for j in range(4):
        imgs = result[8 * j: 8 * j + 8]
        tables.append(tuple(_apply(imgs, b) for b in range(256)))
    return tuple(tables)


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC-32C of `data` (the checksum TensorFlow and LevelDB use), fast enough for megabytes in pure NumPy.

    Large inputs are cut into `_LANES` equal lanes whose CRCs are computed side by side and then combined: the CRC
    register update is linear over GF(2), so running lane k from state s equals "s moved past the lane" XOR "lane k
    run from zero"."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else np.ascontiguousarray(data).view(np.uint8).ravel()
    state = 0xFFFFFFFF
    n = buf.size
    if n >= _SERIAL_MAX:
        lane_len = n // _LANES
        columns = np.ascontiguousarray(buf[: _LANES * lane_len].reshape(_LANES, lane_len).T)
        lanes = np.zeros(_LANES, dtype=np.uint32)
        table = _TABLE
        for col in columns:
            lanes = table[(lanes ^ col) & 0xFF] ^ (lanes >> 8)
        t0, t1, t2, t3 = _zeros_operator(lane_len)
        for lane in lanes.tolist():
            state = t0[state & 0xFF] ^ t1[(state >> 8) & 0xFF] ^ t2[(state >> 16) & 0xFF] ^ t3[state >> 24] ^ lane
        buf = buf[_LANES * lane_len:]
    return _serial(state, buf.tobytes()) ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    """LevelDB/TF store CRCs "masked" (rotated right by 15 bits plus a constant); undo that."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------------------
# protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of a serialized message: ints for varint fields, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos: pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos: pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos: pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, value


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim (field 2, with size in field 1); unknown_rank in field 3."""
    dims = []
    for number, value in _fields(buf):
        if number == 2:
            size = 0
            for n2, v2 in _fields(value):
                if n2 == 1:
                    size = _signed64(v2)
            dims.append(size)
        elif number == 3 and value:
            raise ValueError("unknown rank")
    if any(d < 0 for d in dims):
        raise ValueError(f"unknown dimension in shape {dims}")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> TensorEntry:
    """BundleEntryProto: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6 (fixed32), slices=7."""
    f = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for number, value in _fields(buf):
        if number == 1:
            f["dtype"] = value
        elif number == 2:
            f["shape"] = _shape(value)
        elif number == 3:
            f["shard_id"] = value
        elif number == 4:
            f["offset"] = _signed64(value)
        elif number == 5:
            f["size"] = _signed64(value)
        elif number == 6:
            f["crc32c"] = int.from_bytes(value, "little")
        elif number == 7:
            f["sliced"] = True
    return TensorEntry(name=name, **f)


def _header(buf: bytes) -> tuple[int, str]:
    """BundleHeaderProto: num_shards=1, endianness=2 (0 little, 1 big); returns (num_shards, '<' or '>')."""
    shards, endian = 1, 0
    for number, value in _fields(buf):
        if number == 1:
            shards = value
        elif number == 2:
            endian = value
    return shards, "<" if endian == 0 else ">"


# ----------------------------------------------------------------------------------------------------------------
# SSTable


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """A BlockHandle (varint offset, varint size); returns (offset, size, next position)."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _block(table: bytes, offset: int, size: int) -> bytes:
    """The contents of the block at (offset, size), after checking its trailer (compression type, CRC)."""
    end = offset + size
    if end + _TRAILER_SIZE > len(table):
        raise ValueError(f"block at {offset} (+{size}) runs past the end of the file")
    kind = table[end]
    if kind != 0:
        name = _COMPRESSION.get(kind, f"unknown type {kind}")
        raise ValueError(f"block at {offset} is {name}-compressed; only uncompressed tables can be read without "
                         "TensorFlow")
    stored = int.from_bytes(table[end + 1: end + 5], "little")
    if _unmask(stored) != crc32c(table[offset: end + 1]):
        raise ValueError(f"block at {offset} fails its CRC-32C check (damaged file)")
    return table[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block, undoing the shared-prefix key compression."""
    if len(block) < 4:
        raise ValueError("block too short")
    n_restarts = int.from_bytes(block[-4:], "little")
    data_end = len(block) - 4 - 4 * n_restarts
    if n_restarts == 0 or data_end < 0:
        raise ValueError(f"block has an impossible restart count ({n_restarts})")
    restarts = {int.from_bytes(block[data_end + 4 * i: data_end + 4 * i + 4], "little") for i in range(n_restarts)}
    key = b""
    pos = 0
    while pos < data_end:
        start = pos
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or (start in restarts and shared):
            raise ValueError(f"bad key prefix at block offset {start}")
        if pos + unshared + vlen > data_end:
            raise ValueError(f"entry at block offset {start} runs past the block")
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        yield key, block[pos: pos + vlen]
        pos += vlen


def _table_entries(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable, in key order."""
    if len(table) < _FOOTER_SIZE:
        raise ValueError("too short to be a TensorFlow checkpoint index")
    footer = table[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (wrong magic number)")
    _, _, pos = _handle(footer)                    # metaindex: unused by tensor bundles
    index_offset, index_size, _ = _handle(footer, pos)
    for _, value in _block_entries(_block(table, index_offset, index_size)):
        offset, size, _ = _handle(value)
        yield from _block_entries(_block(table, offset, size))


# ----------------------------------------------------------------------------------------------------------------
# public API


def _prefix(path: str | os.PathLike) -> str:
    """The bundle prefix for a prefix, a `.index` file, or a folder holding a bundle with an empty prefix (as in the
    musicnn wheel, whose files are named `.index` and `.data-00000-of-00001`)."""
    p = os.fspath(path)
    if p.endswith(".index"):
        return p[: -len(".index")]
    if os.path.isdir(p):
        return os.path.join(p, "")
    return p


def read_index(path: str | os.PathLike) -> tuple[dict[str, TensorEntry], int, str]:
    """Parse `<prefix>.index`: ({name: TensorEntry} in key order, number of data shards, byte order '<' or '>')."""
    prefix = _prefix(path)
    index = Path(prefix + ".index")
    try:
        table = index.read_bytes()
    except FileNotFoundError:
        raise TFCheckpointError("no such TensorFlow checkpoint index", index) from None
    except OSError as e:
        raise TFCheckpointError(f"cannot be read ({e.strerror or e})", index) from None
    entries: dict[str, TensorEntry] = {}
    header = None
    try:
        for key, value in _table_entries(table):
            if key == b"":
                header = _header(value)
                continue
            name = key.decode("utf-8")
            entries[name] = _entry(name, value)
    except (ValueError, UnicodeDecodeError) as e:
        raise TFCheckpointError(f"damaged or unsupported TensorFlow checkpoint index: {e}", index) from None
    if header is None:
        raise TFCheckpointError("TensorFlow checkpoint index has no bundle header", index)
    return entries, header[0], header[1]


def read_checkpoint(path: str | os.PathLike, names: Iterable[str] | None = None, *, weights_only: bool = False,
                    verify: bool = True) -> dict[str, np.ndarray]:
    """The tensors of a TF checkpoint as {name: array}, in name order.

    `path` is the bundle prefix, its `.index` file, or a folder with an empty-prefix bundle. `names` picks tensors
    (a missing one is an error); `weights_only` drops optimizer slots and counters (see `is_training_state`).
    `verify` checks each tensor's CRC-32C against the index."""
    prefix = _prefix(path)
    entries, n_shards, order = read_index(prefix)
    if names is not None:
        wanted = list(names)
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise TFCheckpointError(f"checkpoint has no tensor {missing[0]!r} ({len(entries)} tensors in it)",
                                    prefix + ".index")
        selected = [entries[n] for n in sorted(set(wanted))]
    else:
        selected = [e for e in entries.values() if not (weights_only and is_training_state(e.name))]
    out: dict[str, np.ndarray] = {}
    files: dict[int, object] = {}
    try:
        for e in selected:
            out[e.name] = _read_tensor(e, prefix, n_shards, order, files, verify)
    finally:
        for f in files.values():
            f.close()
    return out


def _read_tensor(e: TensorEntry, prefix: str, n_shards: int, order: str, files: dict, verify: bool) -> np.ndarray:
    """One tensor's bytes from its shard, checked (size, CRC) and shaped."""
    data_path = f"{prefix}.data-{e.shard_id:05d}-of-{n_shards:05d}"
    if e.sliced:
        raise TFCheckpointError(f"tensor {e.name!r} is a partitioned variable, which this reader does not handle",
                                data_path)
    if e.numpy_dtype is None:
        kind = _DTYPE_NAMES.get(e.dtype, f"DataType {e.dtype}")
        raise TFCheckpointError(f"tensor {e.name!r} has dtype {kind}, which this reader does not handle", data_path)
    dtype = e.numpy_dtype.newbyteorder(order)
    expected = math.prod(e.shape) * dtype.itemsize
    if e.size != expected:
        raise TFCheckpointError(f"tensor {e.name!r}: index says {e.size} bytes, shape {e.shape} needs {expected}",
                                data_path)
    if e.shard_id not in files:
        try:
            files[e.shard_id] = open(data_path, "rb")
        except FileNotFoundError:
            raise TFCheckpointError("TensorFlow checkpoint data file is missing", data_path) from None
        except OSError as err:
            raise TFCheckpointError(f"cannot be read ({err.strerror or err})", data_path) from None
    f = files[e.shard_id]
    f.seek(e.offset)
    raw = f.read(e.size)
    if len(raw) != e.size:
        raise TFCheckpointError(f"tensor {e.name!r} runs past the end of the file (truncated checkpoint)", data_path)
    if verify and e.crc32c is not None and _unmask(e.crc32c) != crc32c(raw):
        raise TFCheckpointError(f"tensor {e.name!r} fails its CRC-32C check (damaged checkpoint)", data_path)
    return np.frombuffer(raw, dtype=dtype).astype(e.numpy_dtype).reshape(e.shape)
