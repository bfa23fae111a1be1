"""The library database: one SQLite file in WAL mode, one transaction per track.

Why this shape:
- WAL + one commit per track: a run killed at any moment (SIGKILL included) leaves every committed track whole and
  loses only the tracks in flight; readers (search, export, the index's own progress checks) never block the writer.
- A track row is keyed by (path, model_id): the same file tagged by two models is two rows, and a rerun with the
  same model finds its previous work by key.
- Scores, embeddings and taggrams are little-endian float blobs (float32, float32, float16): a 100k-track library's
  embeddings load into one numpy matrix in well under a second, with no per-tag table to join.
- A path is stored as TEXT when it is valid UTF-8 (nearly always) and otherwise as the BLOB of its raw bytes
  (os.fsencode): a file name in another encoding is kept exactly, instead of stopping the run (SQLite text must be
  UTF-8). Every path goes in through `_key` and comes out through `_path`, so callers only ever see `str` paths.
- Tag packs (samplecnn.packs) are stored whole, per model, with their tags' scores and decisions for every track of
  that model (computed from the stored embedding): a track committed later is scored with every pack of its model in
  its own transaction, and a row that goes (pruned, failed) takes its pack scores with it (ON DELETE CASCADE). A
  library written before packs existed gets the two tables the first time it is opened for writing.
- An existing SQLite file that is not a samplecnn library is refused before anything is written to it (not even
  the switch to WAL, which would persist).
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import SampleCNNError

SCHEMA_VERSION = 1
_SCORE_CHUNK = 4096  # tracks scored at a time when a tag pack is added

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,            -- checkpoint path or registered name it was loaded from
    tags TEXT NOT NULL,              -- JSON list, the order of every scores blob
    thresholds TEXT NOT NULL,        -- JSON list
    embed_dim INTEGER NOT NULL,
    sample_rate INTEGER NOT NULL,
    segment_samples INTEGER NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    model_id TEXT NOT NULL REFERENCES models (model_id),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,              -- blake2b-128 of the file's bytes
    duration REAL NOT NULL,          -- seconds decoded
    segments INTEGER NOT NULL,
    padded INTEGER NOT NULL,
    scores BLOB NOT NULL,            -- float32 x n_tags, song level
    decisions TEXT NOT NULL,         -- JSON list, best first
    embedding BLOB NOT NULL,         -- float32 x embed_dim, song level
    taggram BLOB,                    -- float16 x segments x n_tags, only with --taggram
    indexed_at TEXT NOT NULL,
    UNIQUE (path, model_id)
);
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models (model_id),
    name TEXT NOT NULL,              -- the pack file's stem: how outputs name it
    source TEXT NOT NULL,            -- the file it was last read from
    pack TEXT NOT NULL,              -- the pack itself (samplecnn.packs.pack_text): new tracks are scored with it
    added_at TEXT NOT NULL,
    UNIQUE (model_id, name)
);
CREATE TABLE IF NOT EXISTS pack_scores (
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    pack_id INTEGER NOT NULL REFERENCES packs (id) ON DELETE CASCADE,
    scores BLOB NOT NULL,            -- float32 x the pack's tags, from the track's embedding
    decisions TEXT NOT NULL,         -- JSON list, best first
    PRIMARY KEY (track_id, pack_id)
);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT NOT NULL,
    model_id TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (path, model_id)
);
CREATE TABLE IF NOT EXISTS tag_writes (
    path TEXT PRIMARY KEY,
    original TEXT,                   -- JSON list of the field's values before samplecnn first wrote it; NULL: absent
    written TEXT NOT NULL,           -- JSON list written last
    model_id TEXT NOT NULL,
    written_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tag_undo (
    path TEXT PRIMARY KEY,
    original_hash TEXT,              -- blake2b-128 of the file before samplecnn first wrote it; NULL: unknown
    written_hash TEXT NOT NULL,      -- blake2b-128 of the file right after samplecnn last wrote it
    patch BLOB                       -- rebuilds the original bytes from the written ones; NULL: not possible
);
"""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Model:
    model_id: str
    name: str
    source: str
    tags: list[str]
    thresholds: list[float]
    embed_dim: int
    sample_rate: int
    segment_samples: int


@dataclass
class Track:
    """One indexed track, as committed."""

    path: str
    model_id: str
    size: int
    mtime_ns: int
    hash: str
    duration: float
    segments: int
    padded: bool
    scores: np.ndarray       # float32 (n_tags,)
    decisions: list[str]
    embedding: np.ndarray    # float32 (embed_dim,)
    taggram: np.ndarray | None = None  # (segments, n_tags)
    indexed_at: str = ""


class Library:
    """An open library database. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise SampleCNNError("no such library database (create one with `samplecnn index DIR --db ...`)",
                                 self.path)
        if self.path.is_dir():
            raise SampleCNNError("is a folder, not a library database", self.path)
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True, timeout=30,
                                          isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                self._refuse_foreign()
                self.db.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a committed transaction survives any process crash; only a power cut may lose
                # the last few, never corrupt the file.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute("PRAGMA foreign_keys = ON")
                self._create_schema()
            else:
                self._check_version()
        except sqlite3.DatabaseError as e:
            raise SampleCNNError(f"not a usable library database ({e})", self.path) from None

    def _refuse_foreign(self) -> None:
        """A file with tables of its own but no samplecnn schema belongs to someone else: leave it untouched."""
        names = sorted(r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"))
        if not names:
            return  # a new or empty database: ours to set up
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is None:
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise SampleCNNError(f"not a samplecnn library database (it holds other tables: {shown}); "
                                 "left untouched: choose another --db", self.path)

    def _create_schema(self) -> None:
        self.db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}; INSERT OR IGNORE INTO meta VALUES "
                              f"('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
        self._check_version()

    def _check_version(self) -> None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            raise SampleCNNError("not a samplecnn library database", self.path) from None
        if row is None or int(row[0]) > SCHEMA_VERSION:
            raise SampleCNNError("written by a newer samplecnn (library schema "
                                 f"{row[0] if row else '?'}); upgrade samplecnn", self.path)

    # -- plumbing --

    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models --

    def add_model(self, m: Model) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET "
                "source = excluded.source",
                (m.model_id, m.name, m.source, json.dumps(m.tags), json.dumps(m.thresholds), m.embed_dim,
                 m.sample_rate, m.segment_samples, now()))

    def models(self) -> list[Model]:
        rows = self.db.execute("SELECT model_id, name, source, tags, thresholds, embed_dim, sample_rate, "
                               "segment_samples FROM models ORDER BY added_at, model_id").fetchall()
        return [Model(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def model(self, wanted: str | None = None) -> Model:
        """The library's model: the only one, or the one whose id or name is `wanted`."""
        models = self.models()
        if not models:
            raise SampleCNNError("the library is empty (no track has been indexed yet)", self.path)
        if wanted is None:
            if len(models) > 1:
                raise SampleCNNError("the library holds tracks of several models; choose one with --model "
                                     f"({', '.join(m.model_id for m in models)})", self.path)
            return models[0]
        for m in models:
            if wanted in (m.model_id, m.name, m.source) or os.path.abspath(wanted) == m.source:
                return m
        if os.path.isfile(wanted):  # a checkpoint given by another path: its bytes decide
            from ..fileio import file_hash

            digest = file_hash(wanted)[0][:16]
            for m in models:
                if m.model_id.endswith("-" + digest):
                    return m
        raise SampleCNNError(f"no tracks of model {wanted!r} in this library (it has "
                             f"{', '.join(m.model_id for m in models)})", self.path)

    # -- tracks --

    def states(self, model_id: str) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, hash) of every track indexed with `model_id`: what a rerun compares against."""
        rows = self.db.execute("SELECT path, size, mtime_ns, hash FROM tracks WHERE model_id = ?", (model_id,))
        return {_path(p): (s, m, h) for p, s, m, h in rows}

    def put_track(self, t: Track, own: list | None = None) -> None:
        """Insert or replace one track (and clear a failure it had) in one transaction, with its scores of the tag
        packs in `own`: (pack, scores) per stored pack of its model."""
        with self.transaction():
            self._upsert(t)
            if own:
                track_id = self._track_id(t.path, t.model_id)
                ids = self._pack_ids(t.model_id)
                for pack, scores in own:
                    self._put_pack_score(track_id, ids[pack.name], pack, scores)

    def put_tracks(self, tracks: Iterable[Track]) -> None:
        """Insert or replace many tracks in one transaction (imports, benchmarks)."""
        with self.transaction():
            for t in tracks:
                self._upsert(t)

    def _upsert(self, t: Track) -> None:
        taggram = None if t.taggram is None else np.ascontiguousarray(t.taggram, dtype="<f2").tobytes()
        self.db.execute(
            "INSERT INTO tracks (path, model_id, size, mtime_ns, hash, duration, segments, padded, scores, "
            "decisions, embedding, taggram, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path, model_id) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "hash = excluded.hash, duration = excluded.duration, segments = excluded.segments, "
            "padded = excluded.padded, scores = excluded.scores, decisions = excluded.decisions, "
            "embedding = excluded.embedding, taggram = excluded.taggram, indexed_at = excluded.indexed_at",
            (_key(t.path), t.model_id, t.size, t.mtime_ns, t.hash, t.duration, t.segments, int(t.padded),
             _blob(t.scores), json.dumps(t.decisions), _blob(t.embedding), taggram, t.indexed_at or now()))
        self.db.execute("DELETE FROM failures WHERE path = ? AND model_id = ?", (_key(t.path), t.model_id))

    def touch_track(self, path: str, model_id: str, size: int, mtime_ns: int, digest: str) -> None:
        """Record a new stat for a file whose bytes did not change (copied, touched): no re-tagging needed."""
        with self.transaction():
            self.db.execute("UPDATE tracks SET size = ?, mtime_ns = ?, hash = ? WHERE path = ? AND model_id = ?",
                            (size, mtime_ns, digest, _key(path), model_id))

    def restat(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        """After samplecnn itself rewrote a file's metadata: every model's row follows the new bytes."""
        with self.transaction():
            self.db.execute("UPDATE tracks SET size = ?, mtime_ns = ?, hash = ? WHERE path = ?",
                            (size, mtime_ns, digest, _key(path)))

    def put_failure(self, path: str, model_id: str, size: int | None, mtime_ns: int | None, error: str) -> None:
        """Record why a file failed; a row of its previous content goes (its tags describe bytes that are gone)."""
        with self.transaction():
            self.db.execute("DELETE FROM tracks WHERE path = ? AND model_id = ?", (_key(path), model_id))
            self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                            (_key(path), model_id, size, mtime_ns, error, now()))

    def failures(self, model_id: str) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT path, error FROM failures WHERE model_id = ? ORDER BY path", (model_id,))
        return [(_path(p), e) for p, e in rows]

    def paths_under(self, roots: Iterable[str], model_id: str) -> list[str]:
        """Indexed paths (tracks and failures) equal to a root or inside a root folder."""
        out = []
        rows = self.db.execute("SELECT path FROM tracks WHERE model_id = ? UNION "
                               "SELECT path FROM failures WHERE model_id = ?", (model_id, model_id)).fetchall()
        prefixes = [r.rstrip(os.sep) + os.sep for r in roots]
        for p in (_path(r[0]) for r in rows):
            if p in roots or any(p.startswith(pre) for pre in prefixes):
                out.append(p)
        return sorted(out)

    def prune(self, paths: Iterable[str], model_id: str) -> int:
        paths = list(paths)
        with self.transaction():
            for p in paths:
                self.db.execute("DELETE FROM tracks WHERE path = ? AND model_id = ?", (_key(p), model_id))
                self.db.execute("DELETE FROM failures WHERE path = ? AND model_id = ?", (_key(p), model_id))
        return len(paths)

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self.db.execute("SELECT count(*) FROM tracks").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM tracks WHERE model_id = ?", (model_id,)).fetchone()[0]

    def track(self, path: str, model_id: str) -> Track | None:
        rows = list(self._tracks("WHERE model_id = ? AND path = ?", (model_id, _key(path)), taggram=True))
        return rows[0] if rows else None

    def tracks(self, model_id: str, taggram: bool = False, under: list[str] | None = None) -> Iterator[Track]:
        """Every track of `model_id` in path order (optionally only those inside `under`)."""
        for t in self._tracks("WHERE model_id = ? ORDER BY path", (model_id,), taggram=taggram):
            if under is None or _inside(t.path, under):
                yield t

    def _tracks(self, where: str, params: tuple, taggram: bool) -> Iterator[Track]:
        cols = ("path, model_id, size, mtime_ns, hash, duration, segments, padded, scores, decisions, embedding, "
                f"{'taggram' if taggram else 'NULL'}, indexed_at")
        for r in self.db.execute(f"SELECT {cols} FROM tracks {where}", params):
            tg = None
            if r[11] is not None:
                tg = np.frombuffer(r[11], dtype="<f2").astype(np.float32).reshape(r[6], -1)
            yield Track(_path(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), np.frombuffer(r[8], "<f4"),
                        json.loads(r[9]), np.frombuffer(r[10], "<f4"), tg, r[12])

    def matrix(self, model_id: str, column: str) -> tuple[list[str], np.ndarray]:
        """(paths, float32 matrix with one row per track) of the `scores` or `embedding` column, in path order."""
        if column not in ("scores", "embedding"):
            raise ValueError(column)
        rows = self.db.execute(f"SELECT path, {column} FROM tracks WHERE model_id = ? ORDER BY path",
                               (model_id,)).fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        paths = [_path(r[0]) for r in rows]
        return paths, np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), -1)

    # -- tag packs --

    def packs(self, model_id: str) -> list:
        """The tag packs stored for `model_id`, in the order they were first added (samplecnn.packs.TagPack)."""
        from ..packs import pack_from_text

        if not self._has_table("packs"):  # a library from before packs, opened read-only
            return []
        rows = self.db.execute("SELECT source, pack FROM packs WHERE model_id = ? ORDER BY id", (model_id,))
        return [pack_from_text(text, source) for source, text in rows]

    def add_pack(self, pack, model_id: str) -> str:
        """Store `pack` for `model_id`, replacing a stored pack of the same name; its scores of every track (from
        their embeddings, by pack.scores) are written in the same transaction. Returns "added", "replaced" or
        "unchanged" (the same pack: nothing is computed)."""
        from ..packs import pack_text

        text = pack_text(pack)
        row = self.db.execute("SELECT id, pack FROM packs WHERE model_id = ? AND name = ?",
                              (model_id, pack.name)).fetchone()
        if row is not None and row[1] == text:
            with self.transaction():
                self.db.execute("UPDATE packs SET source = ? WHERE id = ?", (pack.path or "", row[0]))
            return "unchanged"
        with self.transaction():
            if row is None:
                pack_id = self.db.execute("INSERT INTO packs (model_id, name, source, pack, added_at) VALUES "
                                          "(?, ?, ?, ?, ?)", (model_id, pack.name, pack.path or "", text,
                                                              now())).lastrowid
            else:
                pack_id = row[0]
                self.db.execute("UPDATE packs SET source = ?, pack = ? WHERE id = ?", (pack.path or "", text,
                                                                                      pack_id))
                self.db.execute("DELETE FROM pack_scores WHERE pack_id = ?", (pack_id,))
            rows = self.db.execute("SELECT id, embedding FROM tracks WHERE model_id = ? ORDER BY id", (model_id,))
            while chunk := rows.fetchmany(_SCORE_CHUNK):  # bounded memory, whatever the library's size
                embeddings = np.frombuffer(b"".join(r[1] for r in chunk), "<f4").reshape(len(chunk), -1)
                for (track_id, _), scores in zip(chunk, pack.scores(embeddings)):
                    self._put_pack_score(track_id, pack_id, pack, scores)
        return "added" if row is None else "replaced"

    def own_tags(self, model_id: str) -> dict[str, tuple[dict[str, float], list[str]]]:
        """path -> (tag -> score, decided tags) over every stored pack of `model_id`, packs in the order added."""
        out: dict[str, tuple[dict[str, float], list[str]]] = {}
        if not self._has_table("packs"):
            return out
        tags = {pid: json.loads(text)["tags"] for pid, text in
                self.db.execute("SELECT id, pack FROM packs WHERE model_id = ?", (model_id,))}
        rows = self.db.execute(
            "SELECT t.path, s.pack_id, s.scores, s.decisions FROM pack_scores s JOIN tracks t ON t.id = s.track_id "
            "WHERE t.model_id = ? ORDER BY s.pack_id", (model_id,))
        for path, pack_id, blob, decisions in rows:
            scores, decided = out.setdefault(_path(path), ({}, []))
            scores.update(zip(tags[pack_id], np.frombuffer(blob, "<f4").tolist()))
            decided.extend(json.loads(decisions))
        return out

    def pack_matrix(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """(the stored packs' tags, float32 matrix of their scores with one row per track in path order, as
        `matrix` gives them; NaN where a track has no score of that pack)."""
        tags, columns = [], []
        n = self.count(model_id)
        if self._has_table("packs"):
            for pack_id, text in self.db.execute("SELECT id, pack FROM packs WHERE model_id = ? ORDER BY id",
                                                 (model_id,)).fetchall():
                pack_tags = json.loads(text)["tags"]
                rows = self.db.execute("SELECT s.scores FROM tracks t LEFT JOIN pack_scores s ON s.track_id = t.id "
                                       "AND s.pack_id = ? WHERE t.model_id = ? ORDER BY t.path",
                                       (pack_id, model_id)).fetchall()
                block = np.full((n, len(pack_tags)), np.nan, np.float32)
                for i, (blob,) in enumerate(rows):
                    if blob is not None:
                        block[i] = np.frombuffer(blob, "<f4")
                tags += pack_tags
                columns.append(block)
        return tags, np.hstack(columns) if columns else np.zeros((n, 0), np.float32)

    def _put_pack_score(self, track_id: int, pack_id: int, pack, scores: np.ndarray) -> None:
        self.db.execute("INSERT OR REPLACE INTO pack_scores VALUES (?, ?, ?, ?)",
                        (track_id, pack_id, _blob(scores), json.dumps(pack.decided(np.asarray(scores)))))

    def _pack_ids(self, model_id: str) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, id FROM packs WHERE model_id = ?", (model_id,)).fetchall())

    def _track_id(self, path: str, model_id: str) -> int:
        return self.db.execute("SELECT id FROM tracks WHERE path = ? AND model_id = ?",
                               (_key(path), model_id)).fetchone()[0]

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (name,)).fetchone() is not None

    # -- metadata writes --

    def tag_write(self, path: str) -> tuple[list[str] | None, list[str]] | None:
        """(original, written) for a file samplecnn wrote tags into, else None."""
        row = self.db.execute("SELECT original, written FROM tag_writes WHERE path = ?", (_key(path),)).fetchone()
        if row is None:
            return None
        return (None if row[0] is None else json.loads(row[0])), json.loads(row[1])

    def record_tag_write(self, path: str, original: list[str] | None, written: list[str], model_id: str,
                         size: int, mtime_ns: int, digest: str, original_hash: str | None = None,
                         patch: bytes | None = None) -> None:
        """Remember the field's first original value (the undo), the patch back to the original bytes (None: not
        possible) and the file's new bytes, atomically: a patch never outlives the bytes it applies to."""
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO tag_undo VALUES (?, ?, ?, ?)",
                            (_key(path), original_hash, digest, patch))
            self.db.execute(
                "INSERT INTO tag_writes VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                "written = excluded.written, model_id = excluded.model_id, written_at = excluded.written_at",
                (_key(path), None if original is None else json.dumps(original), json.dumps(written), model_id,
                 now()))
            self.db.execute("UPDATE tracks SET size = ?, mtime_ns = ?, hash = ? WHERE path = ?",
                            (size, mtime_ns, digest, _key(path)))

    def tag_writes(self, under: list[str] | None = None) -> list[tuple[str, list[str] | None]]:
        rows = self.db.execute("SELECT path, original FROM tag_writes ORDER BY path").fetchall()
        rows = [(_path(p), o) for p, o in rows]
        return [(p, None if o is None else json.loads(o)) for p, o in rows if under is None or _inside(p, under)]

    def tag_undo(self, path: str) -> tuple[str | None, str, bytes | None] | None:
        """(original_hash, written_hash, patch) of a file samplecnn wrote tags into, else None."""
        row = self.db.execute("SELECT original_hash, written_hash, patch FROM tag_undo WHERE path = ?",
                              (_key(path),)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def forget_tag_write(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM tag_writes WHERE path = ?", (_key(path),))
            self.db.execute("DELETE FROM tag_undo WHERE path = ?", (_key(path),))
            self.db.execute("UPDATE tracks SET size = ?, mtime_ns = ?, hash = ? WHERE path = ?",
                            (size, mtime_ns, digest, _key(path)))


def _key(path: str) -> str | bytes:
    """A path as stored: the text itself when it is valid UTF-8, else its raw bytes (see the module's docstring)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:  # undecodable bytes of the file name, carried by Python as lone surrogates
        return os.fsencode(path)


def _path(stored: str | bytes) -> str:
    """The inverse of `_key`: the same str os.walk or os.listdir gives for that file."""
    return os.fsdecode(stored) if isinstance(stored, bytes) else stored


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _blob(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:  # busy for longer than busy_timeout, read-only file...
            raise SampleCNNError(f"cannot write the library database ({e})") from None

    def __exit__(self, exc_type, *exc) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
