"""Library tagging as a user runs it: `samplecnn index/search/similar/export/write-tags` on real files and a real
SQLite database, including a real indexing run killed with SIGKILL.

The checkpoint is untrained, so nothing here asserts what the tags mean; the assertions hold for any model: the
stored scores are exactly Tagger.tag's, search ranks by the stored scores, an exact duplicate is the nearest
neighbour with similarity 1, and a re-encoded copy is closer than unrelated sounds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import samplecnn
from samplecnn import audio
from samplecnn.cli import main
from samplecnn.library import store, tagwrite

from conftest import SR, encode_audio, music_like

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def encode(path, x, codec, fmt=None, sr=SR, options=None):
    """Encode mono `x` as stereo (ffmpeg's vorbis encoder wants two channels)."""
    return encode_audio(path, np.stack([x, x]), sr, codec, fmt=fmt, options=options)


def unrelated(kind: str, seconds: float = 5.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "noise":
        return (0.3 * np.random.default_rng(5).standard_normal(len(t))).astype(np.float32)
    if kind == "sweep":
        return (0.4 * np.sin(2 * np.pi * (50 * t + 200 * t * t))).astype(np.float32)
    return (0.5 * np.sin(2 * np.pi * 55 * t)).astype(np.float32)  # a bass hum


def rows(db) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        return {r[1]: r for r in con.execute("SELECT * FROM tracks ORDER BY path").fetchall()
                } if _has_tracks(con) else {}


def _has_tracks(con) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE name = 'tracks'").fetchone() is not None


# ------------------------------------------------------------------------------------------------------------------
# a shared library: a song, an exact duplicate, re-encoded copies, unrelated sounds, a short jingle, bad files


@pytest.fixture(scope="module")
def library(tmp_path_factory, ckpt_path):
    root = tmp_path_factory.mktemp("lib")
    music = root / "music"
    (music / "copies").mkdir(parents=True)
    song = music_like(5.5, seed=1)
    sf.write(music / "song.wav", song, SR)
    shutil.copyfile(music / "song.wav", music / "copies" / "duplicate.wav")
    encode(music / "copies" / "song.mp3", song, "libmp3lame", options={"b": "128k"})
    for kind in ("noise", "sweep", "hum"):
        sf.write(music / f"{kind}.wav", unrelated(kind), SR)
    sf.write(music / "jingle.flac", music_like(1.0, seed=3), SR)  # shorter than a segment: zero-padded
    (music / "notes.mp3").write_text("these are my notes, not a song\n" * 40)
    sf.write(music / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    db = root / "library.sqlite"
    code = main(["index", str(music), "--db", str(db), "--model", str(ckpt_path), "--workers", "2", "--taggrams"])
    return {"root": root, "music": music, "db": db, "code": code, "ckpt": ckpt_path}


def test_index_stores_complete_rows_equal_to_tagging_each_file(library):
    assert library["code"] == 1  # two bad files: listed, recorded, and the run went on
    tagger = samplecnn.load(library["ckpt"])
    with store.Library(library["db"]) as lib:
        model = lib.model()
        assert model.tags == tagger.tags and model.embed_dim == 512
        tracks = {Path(t.path).name: t for t in lib.tracks(model.model_id, taggram=True)}
        assert sorted(tracks) == ["duplicate.wav", "hum.wav", "jingle.flac", "noise.wav", "song.mp3", "song.wav",
                                  "sweep.wav"]
        for t in tracks.values():
            result = tagger.tag(t.path)
            np.testing.assert_allclose(t.scores, result.scores, atol=1e-6)
            np.testing.assert_allclose(t.embedding, tagger.embed(t.path), atol=1e-5)
            assert t.decisions == result.decisions
            assert t.segments == len(result.segment_starts) and t.padded == result.padded
            assert t.duration == pytest.approx(result.duration, abs=1e-3)
            np.testing.assert_allclose(t.taggram, result.taggram, atol=1e-3)  # stored as float16
            st = os.stat(t.path)
            assert (t.size, t.mtime_ns) == (st.st_size, st.st_mtime_ns)
            assert t.hash == __import__("hashlib").blake2b(Path(t.path).read_bytes(), digest_size=16).hexdigest()
        assert tracks["jingle.flac"].padded and tracks["jingle.flac"].segments == 1
        failures = dict(lib.failures(model.model_id))
    assert set(map(lambda p: Path(p).name, failures)) == {"notes.mp3", "silent.wav"}
    assert any("not an audio file" in e for e in failures.values())
    assert any("is silent" in e for e in failures.values())


def test_search_ranks_by_the_stored_scores(library, capsys):
    db = library["db"]
    code, out, err = run(capsys, "search", "--db", db, "--tag", "piano", "--tag", "no vocals", "--not", "vocal",
                         "--limit", "0", "--format", "jsonl")
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    with store.Library(db) as lib:
        model = lib.model()
        scores = {t.path: t.scores for t in lib.tracks(model.model_id)}
    i = {t: model.tags.index(t) for t in ("piano", "no vocals", "vocal")}
    expected = {p: (s[i["piano"]] + s[i["no vocals"]] + 1 - s[i["vocal"]]) / 3 for p, s in scores.items()}
    assert [h["path"] for h in hits] == sorted(expected, key=lambda p: -expected[p])
    for h in hits:
        assert h["score"] == pytest.approx(expected[h["path"]], abs=1e-5)
        assert h["piano"] == pytest.approx(scores[h["path"]][i["piano"]], abs=1e-5)
        assert h["not vocal"] == pytest.approx(1 - scores[h["path"]][i["vocal"]], abs=1e-5)

    code, out, _ = run(capsys, "search", "--db", db, "--tag", "guitar", "--limit", "2", "--format", "csv")
    ranked = list(csv.DictReader(io.StringIO(out)))
    best = sorted(scores, key=lambda p: -scores[p][model.tags.index("guitar")])[:2]
    assert [r["path"] for r in ranked] == best and list(ranked[0]) == ["rank", "path", "score", "guitar"]
    code, out, _ = run(capsys, "search", "--db", db, "--tag", "guitar")
    assert code == 0 and out.splitlines()[1].split()[0] == "1" and best[0] in out  # the table


def test_search_errors_are_one_line(library, capsys, tmp_path):
    code, _, err = run(capsys, "search", "--db", library["db"], "--tag", "pianoo")
    assert code == 1 and "unknown tag 'pianoo'" in err and "did you mean 'piano'" in err
    code, _, err = run(capsys, "search", "--db", library["db"])
    assert code == 1 and "give at least one --tag or --not" in err
    code, _, err = run(capsys, "search", "--db", tmp_path / "nope.sqlite", "--tag", "piano")
    assert code == 1 and "no such library database" in err
    (tmp_path / "text.sqlite").write_text("not a database at all " * 100)
    code, _, err = run(capsys, "search", "--db", tmp_path / "text.sqlite", "--tag", "piano")
    assert code == 1 and "library database" in err and len(err.strip().splitlines()) == 1


def test_similar_finds_the_duplicate_then_the_reencoded_copy(library, capsys):
    music = library["music"]
    code, out, err = run(capsys, "similar", music / "song.wav", "--db", library["db"], "--limit", "0",
                         "--format", "jsonl")
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    names = [Path(h["path"]).name for h in hits]
    assert "song.wav" not in names  # the query itself is left out
    assert names[0] == "duplicate.wav" and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert names[1] == "song.mp3"
    rank = {n: i for i, n in enumerate(names)}
    assert all(rank["song.mp3"] < rank[k] for k in ("noise.wav", "sweep.wav", "hum.wav"))
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)


def test_similar_embeds_a_file_that_is_not_indexed(library, capsys, tmp_path):
    outside = shutil.copyfile(library["music"] / "song.wav", tmp_path / "query.wav")
    code, out, err = run(capsys, "similar", outside, "--db", library["db"], "--limit", "3", "--format", "json")
    assert code == 0, err
    hits = json.loads(out)
    assert {Path(h["path"]).name for h in hits[:2]} == {"song.wav", "duplicate.wav"}
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5) and len(hits) == 3
    code, _, err = run(capsys, "similar", tmp_path / "missing.wav", "--db", library["db"])
    assert code == 1 and "neither an indexed track nor an existing file" in err


def test_export_csv_jsonl_and_parquet_hold_the_stored_values(library, capsys, tmp_path):
    db = library["db"]
    with store.Library(db) as lib:
        model = lib.model()
        stored = {t.path: t for t in lib.tracks(model.model_id)}

    code, out, err = run(capsys, "export", "--db", db, "--format", "csv")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in table] == sorted(stored)
    for r in table:
        t = stored[r["path"]]
        assert [float(r[f"score:{tag}"]) for tag in model.tags] == pytest.approx(t.scores.tolist(), abs=1e-5)
        assert r["decisions"] == "; ".join(t.decisions) and r["hash"] == t.hash and int(r["size"]) == t.size

    code, _, err = run(capsys, "export", "--db", db, "--format", "jsonl", "--out", tmp_path / "lib.jsonl")
    assert code == 0 and "wrote 7 track(s)" in err
    records = [json.loads(line) for line in (tmp_path / "lib.jsonl").read_text().splitlines()]
    for rec in records:
        t = stored[rec["path"]]
        assert rec["embedding"] == pytest.approx(t.embedding.tolist(), abs=1e-6)
        assert rec["scores"]["piano"] == pytest.approx(float(t.scores[model.tags.index("piano")]), abs=1e-5)
    code, _, err = run(capsys, "export", "--db", db, "--format", "jsonl", "--out", tmp_path / "lib.jsonl")
    assert code == 1 and "already exists" in err

    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    code, _, err = run(capsys, "export", "--db", db, "--format", "parquet", "--out", tmp_path / "lib.parquet")
    assert code == 0, err
    table = pq.read_table(tmp_path / "lib.parquet").to_pylist()
    assert [r["path"] for r in table] == sorted(stored)
    for r in table:
        t = stored[r["path"]]
        assert r["embedding"] == pytest.approx(t.embedding.tolist(), abs=1e-6)
        assert r["score:guitar"] == pytest.approx(float(t.scores[0]), abs=1e-6)
        assert r["decisions"] == t.decisions and r["padded"] == t.padded
    code, _, err = run(capsys, "export", "--db", db, "--format", "parquet")
    assert code == 1 and "give --out FILE" in err


# ------------------------------------------------------------------------------------------------------------------
# reruns


def test_rerun_skips_unchanged_retags_changed_and_reports_deleted(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        sf.write(music / name, music_like(3.0, seed=10 + i), SR)
    (music / "bad.ogg").write_bytes(b"OggS" + bytes(300))
    db = tmp_path / "lib.sqlite"
    index = ["index", music, "--db", db, "--model", ckpt_path, "--workers", "1"]

    code, out, err = run(capsys, *index)
    assert code == 1 and "3 track(s) tagged (3 new, 0 changed)" in out and "bad.ogg" in err
    first = rows(db)

    code, out, err = run(capsys, *index)  # nothing changed: nothing is read again
    assert "0 track(s) tagged (0 new, 0 changed), 3 unchanged, 1 failed" in out
    assert rows(db) == first

    sf.write(music / "b.wav", music_like(3.0, seed=99), SR)          # new content
    st = os.stat(music / "c.wav")
    os.utime(music / "c.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    (music / "a.wav").unlink()                                          # deleted
    sf.write(music / "bad.ogg", music_like(2.0, seed=4), SR, format="OGG", subtype="VORBIS")  # repaired
    code, out, err = run(capsys, *index)
    assert code == 0, err
    assert "2 track(s) tagged (1 new, 1 changed), 1 unchanged, 0 failed" in out
    assert "1 indexed file(s) are gone from disk" in err and str(music / "a.wav") in err and "--prune" in err
    after = rows(db)
    b, c = str(music / "b.wav"), str(music / "c.wav")
    assert after[b][5] != first[b][5] and after[b][9] != first[b][9]       # hash and scores follow the new content
    assert after[c][4] == st.st_mtime_ns + 5_000_000_000                  # the stat was updated...
    assert after[c][5:] == first[c][5:]                                     # ...and nothing else
    assert str(music / "a.wav") in after                                    # kept until pruned
    with store.Library(db) as lib:
        assert lib.failures(lib.model().model_id) == []

    code, out, err = run(capsys, *index, "--prune")
    assert code == 0 and "were removed from the library" in err
    assert str(music / "a.wav") not in rows(db) and len(rows(db)) == 3


def test_a_file_that_turns_bad_loses_its_old_row(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", music_like(3.0, seed=1), SR)
    db = tmp_path / "lib.sqlite"
    assert run(capsys, "index", music, "--db", db, "--model", ckpt_path, "--workers", "1")[0] == 0
    (music / "a.wav").write_text("overwritten with text\n" * 50)
    code, _, err = run(capsys, "index", music, "--db", db, "--model", ckpt_path, "--workers", "1")
    assert code == 1 and "a.wav: not an audio file" in err
    assert rows(db) == {}


# ------------------------------------------------------------------------------------------------------------------
# SIGKILL


def _committed(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute("SELECT count(*) FROM tracks").fetchone()[0] if _has_tracks(con) else 0
    except sqlite3.OperationalError:
        return 0


def _kill_when(proc, condition) -> None:
    """SIGKILL the index process as soon as `condition()` holds (polled; no sleeps decide the outcome)."""
    while not condition():
        assert proc.poll() is None, f"the index run ended before the kill point: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_gone(pgid: int, within: float = 60.0) -> bool:
    """The killed run's decoder processes exit by themselves once their parent is gone."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _check_consistent(db, n_tags: int, embed_dim: int) -> None:
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not _has_tracks(con):
            return
        for path, size, h, duration, segments, scores, decisions, emb in con.execute(
                "SELECT path, size, hash, duration, segments, scores, decisions, embedding FROM tracks"):
            assert size == os.path.getsize(path) and len(h) == 32 and duration > 0 and segments >= 1
            assert len(scores) == 4 * n_tags and len(emb) == 4 * embed_dim
            assert np.isfinite(np.frombuffer(scores, "<f4")).all() and isinstance(json.loads(decisions), list)


def test_sigkill_leaves_a_consistent_library_and_the_rerun_finishes(tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    n = 16
    for i in range(n):
        sf.write(music / f"{i:02d}.wav", music_like(3.0, seed=i), SR)
    db = tmp_path / "lib.sqlite"
    cmd = [sys.executable, "-m", "samplecnn", "index", str(music), "--db", str(db), "--model", str(ckpt_path),
           "--workers", "2"]

    def start():
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    # 1: killed as soon as the database file appears (schema creation or the first decode)
    proc = start()
    _kill_when(proc, db.exists)
    assert _group_gone(proc.pid)
    _check_consistent(db, 50, 512)

    # 2: killed mid-run, after a few tracks were committed
    proc = start()
    _kill_when(proc, lambda: _committed(db) >= 3)
    assert _group_gone(proc.pid), "decoder processes outlived the killed run"
    _check_consistent(db, 50, 512)
    survivors = rows(db)
    assert 3 <= len(survivors) < n

    # the rerun keeps every committed row as it was and tags only the rest
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{n - len(survivors)} track(s) tagged" in done.stdout and f"{len(survivors)} unchanged" in done.stdout
    final = rows(db)
    assert len(final) == n and all(final[p] == row for p, row in survivors.items())
    _check_consistent(db, 50, 512)


# ------------------------------------------------------------------------------------------------------------------
# metadata


def _tagged_copies(folder: Path) -> dict[str, Path]:
    """mp3, ogg, flac and m4a files, each with a title tag the user set (which must survive)."""
    import mutagen

    folder.mkdir()
    x = music_like(4.0, seed=21)
    files = {
        "mp3": encode(folder / "a.mp3", x, "libmp3lame", options={"b": "128k"}),
        "ogg": encode(folder / "b.ogg", x, "vorbis", options={"strict": "-2"}),
        "flac": encode(folder / "c.flac", x, "flac"),
        "m4a": encode(folder / "d.m4a", x, "aac", fmt="ipod", options={"b": "128k"}),
    }
    for kind, path in files.items():
        f = mutagen.File(path, easy=True)
        if f.tags is None:
            f.add_tags()
        f["title"] = f"my {kind} song"
        f.save()
    return files


def _mpeg_frames(path: Path) -> bytes:
    """An mp3's bytes after its ID3v2 tag: the audio frames (and any ID3v1 tag at the end)."""
    data = path.read_bytes()
    if data[:3] != b"ID3":
        return data
    size = 0
    for b in data[6:10]:
        size = (size << 7) | b
    return data[10 + size:]


def test_write_tags_dry_run_write_and_undo_on_mp3_ogg_flac_m4a(capsys, tmp_path, ckpt_path):
    import mutagen

    files = _tagged_copies(tmp_path / "music")
    originals = {k: p.read_bytes() for k, p in files.items()}
    decoded = {k: audio.decode_mono(p) for k, p in files.items()}
    titles = {k: mutagen.File(p, easy=True)["title"] for k, p in files.items()}
    user_tags = {k: dict(mutagen.File(p, easy=True).tags) for k, p in files.items()}
    db = tmp_path / "lib.sqlite"
    index = ["index", tmp_path / "music", "--db", db, "--model", ckpt_path, "--workers", "1"]

    code, out, err = run(capsys, *index, "--write-tags", "--dry-run")
    assert code == 0, err
    assert "would change the SAMPLECNN_TAGS field of 4 file(s)" in out
    assert all(p.read_bytes() == originals[k] for k, p in files.items())  # a dry run touches nothing

    with store.Library(db) as lib:
        decisions = {Path(t.path).suffix[1:]: t.decisions for t in lib.tracks(lib.model().model_id)}
    assert all(decisions.values()), "the test checkpoint should decide some tags for these files"

    code, out, err = run(capsys, "write-tags", "--db", db)
    assert code == 0, err
    assert "changed the SAMPLECNN_TAGS field of 4 file(s)" in out and "undo with: samplecnn write-tags --db" in out
    for kind, path in files.items():
        assert tagwrite.read_field(path) == decisions[kind]
        assert mutagen.File(path, easy=True)["title"] == titles[kind]       # the user's tags are kept
        np.testing.assert_array_equal(audio.decode_mono(path), decoded[kind])       # the audio is untouched
    assert _mpeg_frames(files["mp3"]) == _mpeg_frames_of(originals["mp3"], tmp_path)

    code, out, _ = run(capsys, *index)  # the library follows the rewritten headers: nothing to re-tag
    assert "0 track(s) tagged (0 new, 0 changed), 4 unchanged" in out
    code, out, _ = run(capsys, "write-tags", "--db", db)  # idempotent
    assert "changed the SAMPLECNN_TAGS field of 0 file(s)" in out

    code, out, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 0, err
    for kind, path in files.items():
        assert tagwrite.read_field(path) is None
        assert dict(mutagen.File(path, easy=True).tags) == user_tags[kind]
        np.testing.assert_array_equal(audio.decode_mono(path), decoded[kind])
    assert _mpeg_frames(files["mp3"]) == _mpeg_frames_of(originals["mp3"], tmp_path)
    with store.Library(db) as lib:
        assert lib.tag_writes() == []
    code, out, _ = run(capsys, *index)
    assert "4 unchanged" in out


def _mpeg_frames_of(data: bytes, tmp_path: Path) -> bytes:
    p = tmp_path / "original.mp3"
    p.write_bytes(data)
    return _mpeg_frames(p)


def test_write_tags_keeps_an_existing_field_value_for_undo_and_skips_changed_files(capsys, tmp_path, ckpt_path):
    files = _tagged_copies(tmp_path / "music")
    flac = files["flac"]
    tagwrite.write_field(flac, ["hand-made"])
    db = tmp_path / "lib.sqlite"
    assert run(capsys, "index", tmp_path / "music", "--db", db, "--model", ckpt_path, "--workers", "1")[0] == 0
    sf_mtime = os.stat(files["ogg"]).st_mtime_ns
    os.utime(files["ogg"], ns=(sf_mtime, sf_mtime + 10**9))  # changed since indexing: must not be written

    code, out, err = run(capsys, "write-tags", "--db", db, tmp_path / "music")
    assert code == 1 and "b.ogg: changed since it was indexed" in err
    assert "SAMPLECNN_TAGS: hand-made -> " in out and tagwrite.read_field(files["ogg"]) is None
    code, _, _ = run(capsys, "write-tags", "--db", db)
    run(capsys, "write-tags", "--db", db, "--undo")
    assert tagwrite.read_field(flac) == ["hand-made"]  # back to the user's own value, not removed

    wav = tmp_path / "x.txt"
    wav.write_text("text")
    with pytest.raises(samplecnn.SampleCNNError, match="not supported"):
        tagwrite.read_field(wav)


def test_default_decoder_count_leaves_a_core_and_grows_with_a_gpu(monkeypatch):
    from samplecnn.library import index as index_module

    monkeypatch.setattr(index_module, "usable_cpus", lambda: 16)
    assert index_module.default_workers("cpu") == 4  # the model is the bottleneck on a CPU
    assert index_module.default_workers("cuda") == 15  # decoding is, beside a GPU
    monkeypatch.setattr(index_module, "usable_cpus", lambda: 2)
    assert index_module.default_workers("cpu") == index_module.default_workers("cuda") == 1


def test_model_id_picks_the_library_model_and_the_old_model_spelling_still_works(library, capsys):
    db = library["db"]
    with store.Library(db) as lib:
        model_id = lib.model().model_id
    want = ["--db", db, "--tag", "piano", "--limit", "0", "--format", "jsonl"]
    code, plain, _ = run(capsys, "search", *want)
    assert code == 0
    for option in ("--model-id", "--model"):  # --model: deprecated, same meaning
        code, out, err = run(capsys, "search", *want, option, model_id)
        assert code == 0 and out == plain, err
        code, _, err = run(capsys, "search", *want, option, "no-such-model")
        assert code == 1 and "no tracks of model 'no-such-model'" in err
    code, out, err = run(capsys, "export", "--db", db, "--model-id", library["ckpt"], "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 7, err  # a checkpoint path picks its model too
    # similar: --model is a checkpoint, as in tag/index/serve; --model-id picks the tracks
    code, out, err = run(capsys, "similar", library["music"] / "song.wav", "--db", db, "--model-id", model_id,
                         "--model", library["ckpt"], "--limit", "1", "--format", "jsonl")
    assert code == 0 and Path(json.loads(out)["path"]).name == "duplicate.wav", err
