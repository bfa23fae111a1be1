"""Tag packs: a user's own tags, learned from examples on a model's song embeddings (`samplecnn learn`).

A pack is one small JSON file (format "samplecnn-tag-pack", version 1):

    {"format": "samplecnn-tag-pack", "format_version": 1,
     "model_id": "default-0123456789abcdef",   # the checkpoint whose song embeddings it scores (checkpoint.model_id)
     "embedding_dim": 512,
     "tags": ["my tag", ...],                  # n tags
     "weights": [[...512 numbers...], ...],    # n x embedding_dim, applied to the raw song embedding
     "biases": [...],                          # n
     "thresholds": [...],                      # n, in [0, 1]: F1-best cut of cross-validated predictions
     "training": [{"tag": ..., "positives": ..., "negatives": ..., "cv_folds": ..., "cv_roc_auc": ...}, ...],
     "created": "...", "samplecnn_version": "..."}

The score of tag j for a song embedding e is sigmoid(weights[j] . e + biases[j]): one logistic regression per tag,
with its input standardisation folded into the weights. Loading a pack is plain JSON and numpy: nothing is
unpickled, no scikit-learn is needed, and no torch is imported (the beets plugin reads packs on every `beet`
command). Numbers are written as Python's shortest round-trip repr, so a pack read back scores exactly as written.

A pack belongs to one model: its embeddings are meaningless to another. `check_model` refuses a pack made for
another checkpoint (the 16 hex of the checkpoint's hash decide; the name before them may differ).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SampleCNNError

FORMAT = "samplecnn-tag-pack"
FORMAT_VERSION = 1
MAX_PACK_BYTES = 64 << 20   # 1000 tags x 1024 dims is about 20 MB of JSON
MAX_TAG_CHARS = 100


class PackError(SampleCNNError):
    """The file is not a usable tag pack, or not for this model."""


@dataclass
class TagPack:
    """Logistic-regression tags over one model's song embeddings."""

    tags: list[str]
    weights: np.ndarray        # float64 (n_tags, embedding_dim)
    biases: np.ndarray         # float64 (n_tags,)
    thresholds: np.ndarray     # float64 (n_tags,)
    model_id: str
    training: list[dict] = field(default_factory=list)
    path: str | None = None
    created: str = ""
    samplecnn_version: str = ""

    @property
    def embedding_dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def name(self) -> str:
        """How outputs name the pack: its file's stem."""
        return Path(self.path).stem if self.path else "pack"

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Sigmoid scores: (n, n_tags) for (n, embedding_dim) embeddings, (n_tags,) for one (embedding_dim,)."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.shape[-1] != self.embedding_dim or e.ndim not in (1, 2):
            raise PackError(f"expects {self.embedding_dim}-d song embeddings, got shape {e.shape}", self.path)
        z = e @ self.weights.T + self.biases
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow warnings

    def decisions(self, embeddings: np.ndarray) -> np.ndarray:
        """Booleans of the same shape as scores(): score >= the tag's threshold."""
        return self.scores(embeddings) >= self.thresholds

    def decided(self, scores: np.ndarray) -> list[str]:
        """One song's decided tags from its scores() row, best first (like TagResult.decisions)."""
        order = np.argsort(-scores, kind="stable")
        return [self.tags[i] for i in order if scores[i] >= self.thresholds[i]]

    def check_model(self, model_id: str) -> None:
        """Refuse (one line) when the pack was learned on another model's embeddings."""
        if _digest(model_id) != _digest(self.model_id):
            raise PackError(f"this tag pack is for model {self.model_id}, not {model_id}: its tags mean nothing on "
                            "another model's embeddings (learn them again with that --model)", self.path)

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "model_id": self.model_id, "embedding_dim": self.embedding_dim,
            "tags": list(self.tags),
            "weights": [[float(v) for v in row] for row in self.weights],
            "biases": [float(v) for v in self.biases],
            "thresholds": [float(v) for v in self.thresholds],
            "training": self.training,
            "created": self.created, "samplecnn_version": self.samplecnn_version,
        }


def write_pack(pack: TagPack, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write atomically (a reader never sees half a pack); an existing file only with `overwrite`."""
    from .fileio import atomic_path

    _check(pack.to_json(), path)  # what read_pack would refuse is never written
    text = pack_text(pack) + "\n"
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    pack.path = os.fspath(path)
    return Path(path)


def pack_text(pack: TagPack) -> str:
    """The pack as compact JSON: its file's content, and what a library stores of it."""
    return json.dumps(pack.to_json(), allow_nan=False, separators=(",", ":"))


def pack_from_text(text: str, path: str | os.PathLike | None = None) -> TagPack:
    """The inverse of pack_text, checked like a file (a library's stored copy of a pack)."""
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise PackError("not a tag pack (not JSON)", path) from None
    return _check(doc, path)


def read_packs(paths: list[str | os.PathLike], model_id: str, hint: str = "") -> list[TagPack]:
    """The packs of a `--tags` option, each read and checked against the model (by id) before any audio is
    decoded. `hint` is added to the refusal of a file that is not a pack (e.g. an audio file taken for one)."""
    out = []
    for path in paths:
        try:
            pack = read_pack(path)
        except PackError as e:
            if hint and (not Path(path).exists() or "not a tag pack" in e.reason):
                raise PackError(f"{e.reason} ({hint})", path) from None
            raise
        pack.check_model(model_id)
        out.append(pack)
    return out


def own_json(own: list[tuple[TagPack, np.ndarray]], digits: int = 4) -> dict:
    """The packs' part of a JSON result (`tag --format json`, the server's /v1/tag): their tags' scores, the decided
    ones (best first, pack by pack) and the packs themselves. `own`: (pack, scores) per pack."""
    return {"pack_scores": {t: round(float(v), digits) for pack, scores in own for t, v in zip(pack.tags, scores)},
            "pack_decisions": [t for pack, scores in own for t in pack.decided(scores)],
            "packs": [{"path": pack.path, "model_id": pack.model_id, "tags": pack.tags} for pack, _ in own]}


def read_pack(path: str | os.PathLike) -> TagPack:
    """Read and check a pack; anything off is one PackError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PackError("no such tag pack file" if not path.exists() else "not a file", path)
    try:
        if path.stat().st_size > MAX_PACK_BYTES:
            raise PackError(f"not a tag pack (over {MAX_PACK_BYTES >> 20} MiB)", path)
        raw = path.read_bytes()
    except OSError as e:
        raise PackError(f"cannot read the file ({e.strerror or e})", path) from None
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise PackError("not a tag pack (not JSON; a tag pack is written by `samplecnn learn`)", path) from None
    return _check(doc, path)


def _check(doc, path) -> TagPack:
    def bad(why: str):
        return PackError(f"not a usable tag pack: {why}", path)

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PackError("not a tag pack (a tag pack is written by `samplecnn learn`)", path)
    if doc.get("format_version") != FORMAT_VERSION:
        raise PackError(f"tag pack format version {doc.get('format_version')!r}; this samplecnn reads version "
                        f"{FORMAT_VERSION} (upgrade samplecnn)", path)
    model_id, dim = doc.get("model_id"), doc.get("embedding_dim")
    if not isinstance(model_id, str) or not re.fullmatch(r".*-[0-9a-f]{16}", model_id):
        raise bad("model_id must be a samplecnn model id (name-<16 hex>)")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 65536:
        raise bad("embedding_dim must be a positive integer")
    tags = doc.get("tags")
    if not isinstance(tags, list) or not tags:
        raise bad("tags must be a non-empty list")
    for t in tags:
        problem = tag_name_problem(t)
        if problem:
            raise bad(problem)
    if len(set(tags)) != len(tags):
        raise bad("a tag is listed twice")
    n = len(tags)
    weights = _numbers(doc.get("weights"), (n, dim), "weights", bad)
    biases = _numbers(doc.get("biases"), (n,), "biases", bad)
    thresholds = _numbers(doc.get("thresholds"), (n,), "thresholds", bad)
    if ((thresholds < 0) | (thresholds > 1)).any():
        raise bad("thresholds must be in [0, 1]")
    training = doc.get("training", [])
    if not isinstance(training, list) or not all(isinstance(r, dict) for r in training):
        raise bad("training must be a list of objects")
    return TagPack(tags=list(tags), weights=weights, biases=biases, thresholds=thresholds, model_id=model_id,
                   training=training, path=os.fspath(path), created=str(doc.get("created", "")),
                   samplecnn_version=str(doc.get("samplecnn_version", "")))


def _numbers(value, shape: tuple[int, ...], name: str, bad) -> np.ndarray:
    def ok(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if len(shape) == 1:
        valid = isinstance(value, list) and len(value) == shape[0] and all(ok(v) for v in value)
    else:
        valid = (isinstance(value, list) and len(value) == shape[0]
                 and all(isinstance(r, list) and len(r) == shape[1] and all(ok(v) for v in r) for r in value))
    if not valid:
        raise bad(f"{name} must be {' x '.join(map(str, shape))} finite numbers")
    return np.asarray(value, dtype=np.float64).reshape(shape)


def _no_constant(name: str):
    raise ValueError(name)  # NaN, Infinity: never in a pack


def tag_name_problem(tag) -> str | None:
    """Why `tag` cannot be a tag name, or None: a non-empty one-line string without surrounding spaces."""
    if not isinstance(tag, str) or not tag.strip():
        return "a tag name must be a non-empty string"
    if tag != tag.strip() or not tag.isprintable() or len(tag) > MAX_TAG_CHARS:
        return (f"tag name {tag!r}: no leading or trailing spaces, no control characters, at most "
                f"{MAX_TAG_CHARS} characters")
    return None


def check_tag_names(model_tags: list[str], packs: list[TagPack]) -> None:
    """Every tag name must be unique across the model and the packs: outputs (and beets fields) name tags alone."""
    owner = {t: "the model" for t in model_tags}
    for pack in packs:
        for t in pack.tags:
            if t in owner:
                raise PackError(f"tag {t!r} is in both {owner[t]} and this pack; tag names must be unique "
                                "(learn it under another name)", pack.path)
            owner[t] = pack.path
    check_field_names(list(owner))


def check_field_names(tags: list[str]) -> None:
    """Refuse two tags whose field names (field_name) would be the same."""
    seen: dict[str, str] = {}
    for t in tags:
        s = field_name(t)
        if s in seen:
            raise PackError(f"tags {seen[s]!r} and {t!r} would share the field name {s!r}; rename one")
        seen[s] = t


def field_name(tag: str) -> str:
    """A tag as an identifier (beets flexible attributes): lowercase, runs of other characters as one '_'."""
    return re.sub(r"[^0-9a-z]+", "_", tag.lower()).strip("_") or "tag"


# -- the model a pack belongs to, without importing torch


def model_id_of(name_or_path: str | os.PathLike) -> str:
    """The model id (checkpoint.model_id) of a registered name or checkpoint path, as `samplecnn.load` names it
    and the library stores it: `<name>-<16 hex of the checkpoint file's hash>`."""
    from . import pretrained
    from .fileio import file_hash

    path = pretrained.checkpoint_path(name_or_path)
    key = os.fspath(name_or_path)
    name = key if key in pretrained.MODELS else Path(path).stem
    try:
        digest = file_hash(path)[0]
    except OSError as e:
        raise SampleCNNError(f"cannot read the checkpoint ({e.strerror or e})", path) from None
    return f"{name}-{digest[:16]}"


def checkpoint_tags(name_or_path: str | os.PathLike) -> list[str]:
    """A checkpoint's tag vocabulary from its safetensors header alone, without torch (about 0.1 ms instead of the
    2 s torch takes to import): for the beets plugin's field types. checkpoint.read checks the file in full when
    the model is loaded for tagging; here an unreadable header only means "no tags known"."""
    from . import pretrained

    try:
        with open(pretrained.checkpoint_path(name_or_path), "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= 16 << 20:
                return []
            header = json.loads(f.read(length))
        tags = json.loads(header["__metadata__"]["samplecnn"])["tags"]
        return [t for t in tags if isinstance(t, str)]
    except (OSError, ValueError, KeyError, TypeError, SampleCNNError, RecursionError):
        return []


def _digest(model_id: str) -> str:
    return model_id.rsplit("-", 1)[-1]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
