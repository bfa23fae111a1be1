"""Queries over a library: rank tracks by tag scores, or by how close their embedding is to a query's.

Both load one column of the library as a numpy matrix and rank with a vectorised pass (no per-row Python): for
100k tracks the similarity ranking is a 100k x 512 matrix-vector product (timings: README, bench_similar.py).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import SampleCNNError
from . import store


@dataclass
class Hit:
    """One ranked track: its path, the ranking score, and what the score was made of."""

    path: str
    score: float
    detail: dict[str, float] = field(default_factory=dict)


def search(lib: store.Library, model: store.Model, tags: list[str], without: list[str] = (),
           limit: int = 20) -> list[Hit]:
    """Tracks ranked by the mean of their `tags` scores and of (1 - score) for each tag in `without`; a tag may be
    one of the model's or of a tag pack stored in the library (`index --tags PACK`)."""
    if not tags and not without:
        raise SampleCNNError("give at least one --tag or --not")
    pack_tags, pack_scores = lib.pack_matrix(model.model_id)
    names = list(model.tags) + pack_tags
    wanted = [_tag_index(model, names, t) for t in tags]
    unwanted = [_tag_index(model, names, t) for t in without]
    paths, scores = lib.matrix(model.model_id, "scores")
    if not paths:
        return []
    if pack_tags:
        scores = np.hstack([scores, pack_scores])
    terms = [scores[:, i] for i in wanted] + [1.0 - scores[:, i] for i in unwanted]
    combined = np.nan_to_num(np.mean(terms, axis=0), nan=-np.inf)  # a track without a pack's scores: last
    hits = []
    for i in _top(combined, limit):
        detail = {names[j]: float(scores[i, j]) for j in wanted}
        detail.update({f"not {names[j]}": float(1.0 - scores[i, j]) for j in unwanted})
        hits.append(Hit(paths[i], float(combined[i]), detail))
    return hits


def similar(lib: store.Library, model: store.Model, query: np.ndarray, limit: int = 20,
            exclude: str | None = None) -> list[Hit]:
    """Tracks ranked by the cosine similarity of their embedding to `query` (the track at `exclude` left out)."""
    paths, embeddings = lib.matrix(model.model_id, "embedding")
    if not paths:
        return []
    sims = cosine(embeddings, query)
    if exclude is not None:
        sims[np.asarray(paths) == exclude] = -np.inf
    return [Hit(paths[i], float(sims[i])) for i in _top(sims, limit) if np.isfinite(sims[i])]


def cosine(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `matrix` to `query` (an all-zero row scores 0)."""
    query = np.asarray(query, np.float32)
    q_norm = float(np.linalg.norm(query))
    if q_norm == 0:
        raise SampleCNNError("the query's embedding is all zeros: nothing can be compared with it")
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    dots = matrix @ (query / q_norm)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def query_embedding(lib: store.Library, model: store.Model, query: str, checkpoint: str | None = None,
                    device: str | None = None) -> tuple[np.ndarray, str | None]:
    """(embedding, indexed path or None) of an indexed track's path, or of any audio file (tagged on the fly)."""
    path = os.path.abspath(query)
    track = lib.track(path, model.model_id)
    if track is not None:
        return track.embedding, path
    if not os.path.exists(path):
        raise SampleCNNError("neither an indexed track nor an existing file", query)
    from .index import tagger_and_record

    source = checkpoint or model.source
    try:
        tagger, record = tagger_and_record(source, device=device)
    except SampleCNNError as e:
        raise SampleCNNError(f"{query} is not indexed, and the library's model cannot be loaded to embed it "
                             f"({e}); pass --model CHECKPOINT") from None
    if record.model_id != model.model_id:
        raise SampleCNNError(f"--model {source} is {record.model_id}, but the library's tracks were indexed with "
                             f"{model.model_id}: their embeddings cannot be compared")
    return tagger.embed(path), None


def _tag_index(model: store.Model, names: list[str], tag: str) -> int:
    if tag in names:
        return names.index(tag)
    lowered = {t.lower(): i for i, t in enumerate(names)}
    if tag.lower() in lowered:
        return lowered[tag.lower()]
    close = difflib.get_close_matches(tag, names, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    packs = len(names) - len(model.tags)
    where = f" (or the library's {packs} tag-pack tag(s))" if packs else ""
    raise SampleCNNError(f"unknown tag {tag!r} for model {model.model_id}{where}{hint}")


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first; ties keep the library's path order."""
    if k <= 0 or k >= len(values):
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    threshold = values[part].min()
    candidates = np.flatnonzero(values >= threshold)  # every tie of the k-th value, so order stays stable
    return candidates[np.argsort(-values[candidates], kind="stable")][:k]
