"""`samplecnn export`: every track of a library as CSV, JSON lines or Parquet.

CSV has one `score:<tag>` column per tag and no embedding (512 columns of floats help nobody in a spreadsheet);
JSON lines and Parquet carry the embedding as a list. Parquet needs pyarrow, an optional extra
(`pip install 'samplecnn[parquet]'`): it is ~40 MB and only this one command uses it.

Tag packs stored in the library (`index --tags PACK`) come beside the model's tags: their `score:<tag>` columns after
the model's (tag names are unique across both) and a `pack_decisions` column; in JSON lines `pack_scores` and
`pack_decisions`, the keys `samplecnn tag --tags` writes.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from typing import Iterator, TextIO

from ..errors import SampleCNNError
from . import store

FORMATS = ("csv", "jsonl", "parquet")
_ROW_GROUP = 5000  # Parquet rows buffered at a time: bounded memory for any library size


def pack_tags(lib: store.Library, model: store.Model) -> list[str]:
    """The tags of the library's packs for `model`, in the order outputs list them."""
    return [t for pack in lib.packs(model.model_id) for t in pack.tags]


def records(lib: store.Library, model: store.Model, embeddings: bool = True) -> Iterator[dict]:
    """One flat dict per track, in path order (with `pack_scores` and `pack_decisions` when the library holds packs
    for the model)."""
    own = lib.own_tags(model.model_id) if pack_tags(lib, model) else None
    for t in lib.tracks(model.model_id):
        rec = {
            "path": t.path, "model_id": t.model_id, "size": t.size,
            "mtime": datetime.datetime.fromtimestamp(t.mtime_ns / 1e9, datetime.timezone.utc).isoformat(),
            "hash": t.hash, "duration": round(t.duration, 3), "segments": t.segments, "padded": t.padded,
            "indexed_at": t.indexed_at, "decisions": t.decisions,
            "scores": {tag: round(float(s), 6) for tag, s in zip(model.tags, t.scores)},
        }
        if own is not None:
            scores, decided = own.get(t.path, ({}, []))
            rec["pack_scores"] = {tag: round(float(v), 6) for tag, v in scores.items()}
            rec["pack_decisions"] = decided
        if embeddings:
            rec["embedding"] = [float(x) for x in t.embedding]
        yield rec


def write_csv(lib: store.Library, model: store.Model, out: TextIO) -> int:
    fixed = ["path", "model_id", "size", "mtime", "hash", "duration", "segments", "padded", "indexed_at",
             "decisions"]
    own = pack_tags(lib, model)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fixed + [f"score:{t}" for t in model.tags + own] + (["pack_decisions"] if own else []))
    n = 0
    for rec in records(lib, model, embeddings=False):
        rec["decisions"] = "; ".join(rec["decisions"])
        rec["padded"] = int(rec["padded"])
        extra = []
        if own:
            extra = [rec["pack_scores"].get(t, "") for t in own] + ["; ".join(rec["pack_decisions"])]
        writer.writerow([rec[k] for k in fixed] + list(rec["scores"].values()) + extra)
        n += 1
    return n


def write_jsonl(lib: store.Library, model: store.Model, out: TextIO, embeddings: bool = True) -> int:
    n = 0
    for rec in records(lib, model, embeddings=embeddings):
        out.write(json.dumps(rec) + "\n")
        n += 1
    return n


def write_parquet(lib: store.Library, model: store.Model, path: str | os.PathLike, embeddings: bool = True) -> int:
    """Columns as in CSV, with `decisions` a list of strings and `embedding` a fixed-size list of float32."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SampleCNNError("Parquet export needs pyarrow: pip install 'samplecnn[parquet]' "
                             "(or use --format csv or jsonl)") from None
    fields = [("path", pa.string()), ("model_id", pa.string()), ("size", pa.int64()), ("mtime", pa.string()),
              ("hash", pa.string()), ("duration", pa.float64()), ("segments", pa.int32()), ("padded", pa.bool_()),
              ("indexed_at", pa.string()), ("decisions", pa.list_(pa.string()))]
    own = pack_tags(lib, model)
    fields += [(f"score:{t}", pa.float32()) for t in model.tags + own]
    if own:
        fields.append(("pack_decisions", pa.list_(pa.string())))
    if embeddings:
        fields.append(("embedding", pa.list_(pa.float32(), model.embed_dim)))
    schema = pa.schema(fields, metadata={"samplecnn.tags": json.dumps(model.tags),
                                            "samplecnn.pack_tags": json.dumps(own)})
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for rec in records(lib, model, embeddings=embeddings):
            scores = rec.pop("scores")
            scores.update(rec.pop("pack_scores", {}))
            rec.update({f"score:{t}": s for t, s in scores.items()})
            batch.append(rec)
            if len(batch) == _ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n
