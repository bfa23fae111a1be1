"""`samplecnn index` when things go wrong: decoder processes killed mid-file, long tracks, file names that are not
UTF-8 or hold newlines, a folder that vanished under --prune, a database that is not a library, an edit that kept
size and mtime. Real files, real decoder processes, a real SQLite database; nothing is mocked.
"""

from __future__ import annotations

import os
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
from samplecnn.cli import main
from samplecnn.library import index as index_module
from samplecnn.library import store

from conftest import SR, music_like

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def failure_lines(err: str) -> list[str]:
    """The lines listed under "N of M input(s) failed:"."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if "input(s) failed:" in line)
    return [line for line in lines[start + 1:] if line.startswith("  ")]


def tracks(db) -> dict[str, store.Track]:
    with store.Library(db) as lib:
        return {t.path: t for t in lib.tracks(lib.model().model_id)}


def songs(folder: Path, n: int, seconds: float = 3.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:02d}.wav" for i in range(n)]
    for i, p in enumerate(paths):
        sf.write(p, music_like(seconds, seed=i), SR)
    return paths


# ------------------------------------------------------------------------------------------------------------------
# a decoder process killed in the middle of a file


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return kids


def _holder(pid: int, path: Path) -> int | None:
    """The child process of `pid` that has `path` open (the decoder working on it), if any."""
    for kid in _children(pid):
        try:
            fds = os.listdir(f"/proc/{kid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{kid}/fd/{fd}") == str(path):
                    return kid
            except OSError:
                continue
    return None


def _kill_holder(proc, path: Path, after: set[int], within: float = 120.0) -> int:
    """SIGKILL the first decoder not in `after` seen with `path` open; returns its pid."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before its decoder was killed: {proc.communicate()}"
        pid = _holder(proc.pid, path)
        if pid is not None and pid not in after:
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.005)
    raise AssertionError(f"no decoder opened {path}")


@pytest.fixture
def kill_setup(tmp_path, ckpt_path):
    music = tmp_path / "music"
    songs(music, 8)
    long = music / "00_long.wav"  # sorted first: the first file a decoder takes
    # long enough that its decoder holds it for a while: it may only run a window of segments ahead of the model
    sf.write(long, music_like(240.0, seed=40), SR)
    db = tmp_path / "lib.sqlite"
    cmd = [sys.executable, "-m", "samplecnn", "index", str(music), "--db", str(db), "--model", str(ckpt_path),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    yield proc, music, long, db
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _finish(proc, within: float = 180.0) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the index run hung after its decoder was killed") from None


def test_a_killed_decoder_costs_only_its_file_which_is_retried_in_a_fresh_process(kill_setup, ckpt_path):
    proc, music, long, db = kill_setup
    _kill_holder(proc, long, after=set())
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert "9 track(s) tagged (9 new, 0 changed), 0 unchanged, 0 failed" in out
    stored = tracks(db)
    assert sorted(Path(p).name for p in stored) == ["00.wav", "00_long.wav"] + [f"{i:02d}.wav" for i in range(1, 8)]
    # the retry started over: nothing the killed decoder had sent is mixed into the row
    result = samplecnn.load(ckpt_path).tag(long)
    t = stored[str(long)]
    assert t.segments == len(result.segment_starts) == 89
    np.testing.assert_allclose(t.scores, result.scores, atol=1e-6)
    assert t.duration == pytest.approx(result.duration, abs=1e-6)


def test_a_file_that_kills_its_decoder_twice_fails_alone_and_the_run_finishes(kill_setup):
    proc, music, long, db = kill_setup
    first = _kill_holder(proc, long, after=set())
    _kill_holder(proc, long, after={first})
    out, err = _finish(proc)
    assert proc.returncode == 1
    assert "8 track(s) tagged (8 new, 0 changed), 0 unchanged, 1 failed" in out
    assert failure_lines(err) == [f"  {long}: the decoder process died on this file twice (killed by SIGKILL)"]
    assert "1 of 9 input(s) failed" in err
    assert str(long) not in tracks(db) and len(tracks(db)) == 8
    with store.Library(db) as lib:
        assert [p for p, _ in lib.failures(lib.model().model_id)] == [str(long)]


# ------------------------------------------------------------------------------------------------------------------
# memory: bounded by segments, not by the track's length


def test_segments_in_flight_stay_within_the_decoders_windows_whatever_the_track_length(tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "long.wav", music_like(300.0, seed=7), SR)  # 112 segments
    sf.write(music / "short.wav", music_like(20.0, seed=8), SR)
    report = index_module.index([music], tmp_path / "lib.sqlite", model=str(ckpt_path), workers=1, progress=False)
    assert report.indexed == 2 and not report.failures
    bound = index_module.window_segments(batch_size=1, n_workers=1)
    assert bound == 32
    # the model (batch 1 on this CPU) is slower than the decoder: without the window the main process would hold
    # most of the 112 segments of the long track at once
    assert 0 < report.peak_segments_in_flight <= bound


# ------------------------------------------------------------------------------------------------------------------
# file names


@pytest.fixture
def odd_names(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    raw = os.fsencode(music) + b"/caf\xe9 latin-1.wav"  # not UTF-8: os.walk gives a str with a lone surrogate
    sf.write(music / "plain.wav", music_like(3.0, seed=1), SR)
    with open(raw, "wb") as f:
        sf.write(f, music_like(3.0, seed=2), SR, format="WAV")
    bad_raw = os.fsencode(music) + b"/bad \xff.mp3"
    with open(bad_raw, "wb") as f:
        f.write(b"not audio at all\n" * 40)
    return music, raw, bad_raw


def test_a_name_that_is_not_utf8_is_indexed_stored_losslessly_and_reported(capsys, tmp_path, ckpt_path, odd_names):
    music, raw, bad_raw = odd_names
    db = tmp_path / "lib.sqlite"
    index = ["index", music, "--db", db, "--model", ckpt_path, "--workers", "1"]
    code, out, err = run(capsys, *index)
    assert code == 1 and "2 track(s) tagged (2 new, 0 changed), 0 unchanged, 1 failed" in out
    lines = failure_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"  {os.fsdecode(bad_raw)!r}: not an audio file")
    stored = tracks(db)
    assert sorted(os.fsencode(p) for p in stored) == sorted([raw, os.fsencode(music / "plain.wav")])
    with sqlite3.connect(db) as con:  # the raw bytes themselves, as a BLOB
        assert con.execute("SELECT count(*) FROM tracks WHERE path = ?", (raw,)).fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM failures WHERE path = ?", (bad_raw,)).fetchone()[0] == 1

    code, out, err = run(capsys, *index)  # the rerun finds its rows: nothing to redo
    assert "0 track(s) tagged (0 new, 0 changed), 2 unchanged, 1 failed" in out
    code, out, err = run(capsys, "search", "--db", db, "--tag", "piano")
    assert code == 0 and repr(os.fsdecode(raw)) in out

    os.unlink(raw)
    code, out, err = run(capsys, *index, "--prune")
    assert f"  {os.fsdecode(raw)!r}\n" in err and "were removed from the library" in err
    assert list(tracks(db)) == [str(music / "plain.wav")]


def test_a_newline_in_a_name_cannot_forge_report_lines(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    songs(music, 1)
    evil = music / "x.mp3\n  forged.wav: is silent (peak level -inf dBFS)\n.mp3"
    evil.write_text("not audio\n" * 40)
    code, out, err = run(capsys, "index", music, "--db", tmp_path / "lib.sqlite", "--model", ckpt_path,
                         "--workers", "1")
    assert code == 1
    lines = failure_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"  {str(evil)!r}: not an audio file")
    assert not any("forged.wav" in line and not line.startswith("  '") for line in err.splitlines())


# ------------------------------------------------------------------------------------------------------------------
# --prune of a root that is gone


def test_prune_refuses_a_root_that_is_gone_or_empty_while_the_library_has_rows_under_it(capsys, tmp_path,
                                                                                          ckpt_path):
    music = tmp_path / "music"
    songs(music, 3)
    db = tmp_path / "lib.sqlite"
    assert run(capsys, "index", music, "--db", db, "--model", ckpt_path, "--workers", "1")[0] == 0
    before = tracks(db)
    music.rename(tmp_path / "renamed")  # or an unmounted drive

    code, out, err = run(capsys, "index", music, "--db", db, "--model", ckpt_path, "--prune")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"samplecnn: error: {music}: does not exist, but the library holds 3 file(s) "
                                        "under it: --prune refused (an unmounted drive or a renamed folder?)"]
    assert tracks(db).keys() == before.keys()

    music.mkdir()  # an empty mount point
    code, out, err = run(capsys, "index", music, "--db", db, "--model", ckpt_path, "--prune")
    assert code == 1 and "has no audio files, but the library holds 3 file(s)" in err
    assert len(err.strip().splitlines()) == 1 and tracks(db).keys() == before.keys()

    code, out, err = run(capsys, "index", music, "--db", db, "--model", ckpt_path)  # without --prune: listed only
    assert "3 indexed file(s) are gone from disk and are still listed" in err and len(tracks(db)) == 3


# ------------------------------------------------------------------------------------------------------------------
# the summary's count


def test_the_failure_count_counts_every_input(capsys, tmp_path, ckpt_path):
    good = tmp_path / "good"
    songs(good, 1)
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "index", good, tmp_path / "missing", tmp_path / "empty", "--db",
                         tmp_path / "lib.sqlite", "--model", ckpt_path, "--workers", "1")
    assert code == 1 and "1 track(s) tagged" in out
    assert "samplecnn: 2 of 3 input(s) failed:" in err
    assert len(failure_lines(err)) == 2


# ------------------------------------------------------------------------------------------------------------------
# a database that is not a library


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    songs(music, 1)
    foreign = tmp_path / "accounts.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO customers (name) VALUES ('ada')")
    con.close()
    before = foreign.read_bytes()
    for argv in (["index", music, "--db", foreign, "--model", ckpt_path], ["write-tags", "--db", foreign]):
        code, out, err = run(capsys, *argv)
        assert code == 1
        assert err.strip().splitlines() == [f"samplecnn: error: {foreign}: not a samplecnn library database (it "
                                            "holds other tables: customers); left untouched: choose another --db"]
    assert foreign.read_bytes() == before
    with sqlite3.connect(foreign) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["customers"]
    con.close()

    empty = tmp_path / "empty.sqlite"  # an empty file (e.g. from mktemp) is a new library
    empty.touch()
    assert run(capsys, "index", music, "--db", empty, "--model", ckpt_path, "--workers", "1")[0] == 0


# ------------------------------------------------------------------------------------------------------------------
# an edit that keeps size and mtime


def test_verify_rehashes_and_retags_a_file_edited_with_the_same_size_and_mtime(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    a, b = songs(music, 2)
    db = tmp_path / "lib.sqlite"
    index = ["index", music, "--db", db, "--model", ckpt_path, "--workers", "1"]
    assert run(capsys, *index)[0] == 0
    first = tracks(db)

    st = os.stat(a)
    data = bytearray(a.read_bytes())
    data[-20000:] = bytes(20000)  # the same size, silence at the end...
    a.write_bytes(bytes(data))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the old mtime back
    code, out, _ = run(capsys, *index)
    assert "0 track(s) tagged (0 new, 0 changed), 2 unchanged" in out  # by design: only the stat is compared

    code, out, err = run(capsys, *index, "--verify")
    assert code == 0, err
    assert "1 track(s) tagged (0 new, 1 changed), 1 unchanged, 0 failed" in out
    after = tracks(db)
    assert after[str(a)].hash != first[str(a)].hash and not np.array_equal(after[str(a)].scores, first[str(a)].scores)
    np.testing.assert_allclose(after[str(a)].scores, samplecnn.load(ckpt_path).tag(a).scores, atol=1e-6)
    assert after[str(b)].indexed_at == first[str(b)].indexed_at  # hashed, found the same, not re-tagged
    code, out, _ = run(capsys, *index, "--verify")
    assert "0 track(s) tagged (0 new, 0 changed), 2 unchanged" in out


# ------------------------------------------------------------------------------------------------------------------
# durations


@pytest.mark.parametrize("rate, n", [(1, 10), (3, 7), (8000, 10), (44100, 100)])
def test_a_duration_is_what_the_samples_say(capsys, tmp_path, ckpt_path, rate, n):
    music = tmp_path / "music"
    music.mkdir()
    path = music / "tiny.wav"
    sf.write(path, (0.5 * np.sin(np.arange(n) + 0.5)).astype(np.float32), rate)
    assert run(capsys, "index", music, "--db", tmp_path / "lib.sqlite", "--model", ckpt_path, "--workers", "1")[0] == 0
    t = tracks(tmp_path / "lib.sqlite")[str(path)]
    assert t.duration == pytest.approx(n / rate, abs=1 / SR)
    assert t.duration == pytest.approx(samplecnn.load(ckpt_path).tag(path).duration, abs=1e-9)
