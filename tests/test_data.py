"""samplecnn.data: MTAT and folder datasets into the cache, and the cache back out; resume after a kill.

The MTAT fixture is a 48-clip imitation of the real distribution: annotations_final.csv tab-separated and quoted,
with clip_id, 188 tag columns (the 50 MTAT_TOP50 tags among made-up ones, columns shuffled) and mp3_path; 16 kHz
mono 32 kbps mp3s of 1-3 s in folders 0-f (3 each); six clips without a top-50 tag, one unreadable mp3. Tag counts
are 30 - rank // 2 for MTAT_TOP50[rank], so the 50th place (count 6) is a three-way tie between 'female voice',
'choral' and the extra 'zydeco': name order must leave 'zydeco' out.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn import audio, data
from samplecnn.cli import main
from samplecnn.data import folder, vocab
from samplecnn.data.cache import INCOMPLETE, SCALE
from samplecnn.errors import SampleCNNError
from samplecnn.tags import MTAT_TOP50

from conftest import encode_audio, music_like

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = "0123456789abcdef"
N_CLIPS = 48                        # 3 per folder: 36 train (0-b), 3 valid (c), 9 test (d-f)
NO_TOP = {2, 5, 20, 34, 37, 44}     # no top-50 tag: four in train, one in valid, one in test
UNREADABLE = 41                     # folder d (test), has top-50 tags
EXTRAS = ["zydeco", "acoustic"] + [f"extra {k:03d}" for k in range(136)]
assert len(MTAT_TOP50) + len(EXTRAS) == 188


def design() -> np.ndarray:
    """(48, 188) 0/1 annotations; columns MTAT_TOP50 then EXTRAS."""
    m = np.zeros((N_CLIPS, 188), np.uint8)
    eligible = [c for c in range(N_CLIPS) if c not in NO_TOP]
    for r in range(50):
        for j in range(30 - r // 2):
            m[eligible[(r * 5 + j) % len(eligible)], r] = 1
    extra_counts = [6, 5] + [k % 5 for k in range(136)]
    for k, count in enumerate(extra_counts):
        for j in range(count):
            m[(k + 1 + j * 7) % N_CLIPS, 50 + k] = 1
    return m


def clip_path(c: int) -> str:
    return f"{FOLDERS[c // 3]}/artist_{c:02d}-album_{c % 7}-{c:02d}-track_{c}-0-29.mp3"


def write_mp3(path: Path, x: np.ndarray, sr: int = 16000) -> None:
    encode_audio(path, x, sr, "libmp3lame", bit_rate=32_000)


@pytest.fixture(scope="module")
def mtat(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtat")
    m = design()
    names = list(MTAT_TOP50) + EXTRAS
    order = np.random.default_rng(1).permutation(188)  # real MTAT's columns are not in any useful order either
    with open(root / "annotations_final.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["clip_id"] + [names[j] for j in order] + ["mp3_path"])
        for c in range(N_CLIPS):
            w.writerow([c * 3 + 2] + [int(m[c, j]) for j in order] + [clip_path(c)])
    for c in range(N_CLIPS):
        p = root / clip_path(c)
        p.parent.mkdir(exist_ok=True)
        if c == UNREADABLE:
            p.write_bytes(b"this is not an mp3\n" * 50)
        else:
            write_mp3(p, music_like(1.0 + (c % 5) * 0.5, sr=16000, seed=c))
    truth = {clip_path(c): dict(zip(names, m[c].astype(np.float32))) for c in range(N_CLIPS)}
    return root, truth


@pytest.fixture(scope="module")
def full_cache(mtat, tmp_path_factory):
    """Built through the CLI with two worker processes (the parallel path)."""
    out = tmp_path_factory.mktemp("caches") / "full"
    # exit 1: the fixture's one unreadable mp3 is reported (and left out) after every other clip is cached
    assert main(["prepare", "mtat", "--root", str(mtat[0]), "--out", str(out), "--split", "full",
                 "--workers", "2"]) == 1
    return data.Cache(out)


@pytest.fixture(scope="module")
def lee_cache(mtat, tmp_path_factory):
    return data.prepare_mtat(mtat[0], tmp_path_factory.mktemp("caches") / "lee", workers=1, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# MTAT


def test_top50_is_the_standard_list_in_the_standard_order(lee_cache, full_cache):
    assert lee_cache.tags == list(MTAT_TOP50) == full_cache.tags
    info = lee_cache.meta["source"]
    assert info["tag_order"] == "mtat-standard"
    # by frequency: counts 30, 30, 29, 29, ... ; equal counts in name order; 'zydeco' lost the tie at count 6
    expected = sorted(MTAT_TOP50, key=lambda t: (-(30 - MTAT_TOP50.index(t) // 2), t))
    assert info["tags_by_frequency"] == expected
    assert info["tag_frequency"]["zydeco"] == 6 == info["tag_frequency"]["choral"]
    assert list(info["tag_frequency"])[:52] == expected + ["zydeco", "acoustic"]


def test_vocabulary_ties_and_order_rules():
    freq = {"b": 3.0, "a": 3.0, "c": 5.0, "d": 1.0}
    assert vocab.ranked(freq) == ["c", "a", "b", "d"]
    assert vocab.choose(freq, top=2) == ["c", "a"]          # tie at the boundary: name order
    assert vocab.choose(freq, tags=["d", "c"]) == ["d", "c"]
    with pytest.raises(SampleCNNError, match="does not have: x"):
        vocab.choose(freq, tags=["x"])
    # a set other than MTAT_TOP50 keeps frequency order; the same set in any order becomes the standard order
    shuffled = {t: float(100 - i) for i, t in enumerate(reversed(MTAT_TOP50))}
    assert vocab.choose(shuffled, top=50) == list(MTAT_TOP50)
    assert vocab.choose({**shuffled, "aaa": 100.0}, top=50)[0] == "aaa"


def test_split_counts_lee2017_and_full(lee_cache, full_cache):
    assert [len(lee_cache.indices(s)) for s in ("train", "valid", "test")] == [32, 2, 7]
    assert [len(full_cache.indices(s)) for s in ("train", "valid", "test")] == [36, 3, 8]
    assert lee_cache.meta["source"]["dropped_no_top_tag"] == 6
    for cache in (lee_cache, full_cache):
        for i, p in enumerate(cache.paths):
            assert cache.splits[i] == data.mtat.folder_split(p)
    assert not {clip_path(c) for c in NO_TOP} & set(lee_cache.paths)
    assert {clip_path(c) for c in NO_TOP} <= set(full_cache.paths)


def test_unreadable_file_is_reported_and_skipped(full_cache, lee_cache):
    for cache in (full_cache, lee_cache):
        assert clip_path(UNREADABLE) not in cache.paths
        [(path, error)] = cache.failures
        assert path == clip_path(UNREADABLE) and "not an audio file" in error


def test_labels_equal_the_annotation_rows(mtat, full_cache):
    _, truth = mtat
    expected = np.array([[truth[p][t] for t in full_cache.tags] for p in full_cache.paths], np.float32)
    assert full_cache.labels.dtype == np.float32 and full_cache.labels.shape == (47, 50)
    np.testing.assert_array_equal(full_cache.labels, expected)


def test_cached_audio_equals_the_decoder_within_int16_quantisation(mtat, full_cache):
    root, _ = mtat
    assert full_cache.sample_rate == 22050
    for i, p in enumerate(full_cache.paths):
        ref = audio.decode_mono(root / p, sr=22050)
        got = full_cache.clip_float(i)
        assert got.dtype == np.float32 and len(got) == len(ref) == full_cache.lengths[i]
        assert np.abs(got - ref).max() <= 0.5 / SCALE + 1e-7


def test_cache_reader_api(full_cache, tmp_path):
    c = full_cache
    assert len(c) == len(c.paths) == len(c.splits) == len(c.lengths) == 47
    assert c.lengths.dtype == np.int64
    x = c.clip(3)
    assert x.dtype == np.int16 and x.ndim == 1 and np.shares_memory(x, c.audio) and not x.flags.owndata
    crop = c.clip_float(3, start=100, length=500)
    np.testing.assert_allclose(crop, x[100:600] / SCALE, rtol=1e-6, atol=0)
    padded = c.clip_float(3, start=len(x) - 10, length=59049)   # past the end: zero-padded to the full length
    assert len(padded) == 59049 and not padded[10:].any() and padded[:10].any()
    np.testing.assert_array_equal(c.clip(-1), c.clip(len(c) - 1))
    with pytest.raises(IndexError):
        c.clip(len(c))
    with pytest.raises(ValueError):
        c.indices("validation")
    assert sorted(np.concatenate([c.indices(s) for s in ("train", "valid", "test")])) == list(range(len(c)))
    import pickle
    twin = pickle.loads(pickle.dumps(c))   # what a DataLoader worker receives: no mapping inside
    np.testing.assert_array_equal(twin.clip(5), c.clip(5))
    for bad in (tmp_path / "nothing", tmp_path):
        with pytest.raises(SampleCNNError, match="run `samplecnn prepare` again to resume"):
            data.Cache(bad)


def test_min_seconds_leaves_short_clips_out(mtat, tmp_path):
    cache = data.prepare_mtat(mtat[0], tmp_path / "c", split="full", min_seconds=2.0, workers=1, progress=False)
    assert len(cache) + len(cache.meta["too_short"]) == 47
    assert cache.lengths.min() >= 2.0 * 22050 and len(cache.meta["too_short"]) > 0


def test_a_complete_cache_is_not_overwritten_without_force(full_cache, tmp_path, capsys):
    code = main(["prepare", "folder", "--audio", str(tmp_path), "--labels", str(_table(tmp_path)),
                 "--out", str(full_cache.path)])
    assert code == 1 and "already a complete samplecnn cache (pass --force" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    code = main(["prepare", "folder", "--audio", str(tmp_path), "--labels", str(_table(tmp_path)),
                 "--out", str(tmp_path / "mine"), "--force"])
    assert code == 1 and "is not a samplecnn cache" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


# ----------------------------------------------------------------------------------------------------------------
# resume after SIGKILL

_SLOW_MAIN = """
import sys, time
from samplecnn import audio
from samplecnn.cli import main
load, calls = audio.decode_mono, []
def slow(*args, **kwargs):
    calls.append(1)
    time.sleep(float(sys.argv[1]))
    return load(*args, **kwargs)
audio.decode_mono = slow
code = main(sys.argv[3:])
open(sys.argv[2], "w").write(str(len(calls)))
sys.exit(code)
"""


def test_killed_run_is_incomplete_and_resumes_to_identical_content(mtat, full_cache, tmp_path):
    script = tmp_path / "slow_main.py"
    script.write_text(_SLOW_MAIN)
    out = tmp_path / "cache"
    argv = ["prepare", "mtat", "--root", str(mtat[0]), "--out", str(out), "--split", "full", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = [sys.executable, str(script)]

    proc = subprocess.Popen(run + ["0.1", str(tmp_path / "calls1"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / ".partial" / "progress.tsv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_text().count("\n") >= 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the slowed run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = progress.read_text().count("\n")
    assert 8 <= done < N_CLIPS
    assert not (out / "meta.json").exists()
    with pytest.raises(SampleCNNError, match=re.escape(INCOMPLETE)):
        data.Cache(out)

    rerun = subprocess.run(run + ["0", str(tmp_path / "calls2"), *argv], env=env, capture_output=True, text=True)
    assert rerun.returncode == 1, rerun.stderr  # finished, with the unreadable clip reported
    assert f"resuming, {done} of {N_CLIPS} clips already done" in rerun.stderr
    assert f"{clip_path(UNREADABLE)}: not an audio file" in rerun.stderr
    assert int((tmp_path / "calls2").read_text()) == N_CLIPS - done   # nothing finished was decoded again
    cache = data.Cache(out)
    assert [r["decoded"] for r in cache.meta["runs"]] == [done, N_CLIPS - done]
    assert not (out / ".partial").exists()
    for name in ("audio.i16", "index.csv", "labels.npy", "tags.json"):
        assert (out / name).read_bytes() == (full_cache.path / name).read_bytes(), name


# ----------------------------------------------------------------------------------------------------------------
# folder datasets

ARTISTS = ["ann", "bob", "cat", "dan", "eve", "fay"]


def _table(tmp_path: Path, n: int = 12) -> Path:
    """n one-second wav files (two per artist, at 44.1 kHz stereo) and a tag-list CSV for them."""
    (tmp_path / "songs").mkdir(exist_ok=True)
    lists = ["rock;guitar", "rock", "jazz; piano", "", "rock;jazz", "guitar"]
    with open(tmp_path / "tags.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "tags", "artist", "title"])
        for i in range(n):
            name = f"songs/{i:02d} song.wav"
            if not (tmp_path / name).exists():
                sf.write(tmp_path / name, music_like(1.0, sr=44100, channels=2, seed=100 + i), 44100)
            w.writerow([name, lists[i % 6], ARTISTS[i // 2 % 6], f"Song, number {i}"])
    return tmp_path / "tags.csv"


def test_folder_tag_list_labels(tmp_path):
    table = _table(tmp_path)
    cache = data.prepare_folder(tmp_path, table, tmp_path / "c", workers=1, progress=False)
    # counts: rock 6, guitar 4, jazz 4, piano 2 -> frequency order, ties by name
    assert cache.tags == ["rock", "guitar", "jazz", "piano"]
    assert cache.meta["source"]["label_format"] == "tag-list"
    np.testing.assert_array_equal(cache.labels[:6], [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0],
                                                     [1, 0, 1, 0], [0, 1, 0, 0]])
    ref = audio.decode_mono(tmp_path / cache.paths[7])
    assert np.abs(cache.clip_float(7) - ref).max() <= 0.5 / SCALE + 1e-7
    top = data.prepare_folder(tmp_path, table, tmp_path / "t", top=2, workers=1, progress=False)
    assert top.tags == ["rock", "guitar"]
    given = data.prepare_folder(tmp_path, table, tmp_path / "g", tags=["piano", "rock"], workers=1, progress=False)
    assert given.tags == ["piano", "rock"]
    np.testing.assert_array_equal(given.labels[:3], [[0, 1], [0, 1], [1, 0]])


def test_folder_binary_columns_tsv_with_split_column(tmp_path, capsys):
    _table(tmp_path)
    rows = [("songs/00 song.wav", "train", 1, 0, "x"), ("songs/01 song.wav", "val", 0, 1, "y"),
            ("songs/02 song.wav", "test", 1, 1, "z"), ("songs/03 song.wav", "TRAIN", 0, 0, "w")]
    (tmp_path / "t.tsv").write_text("file\tsplit\tloud\tquiet\tnote\n" +
                                    "".join("\t".join(map(str, r)) + "\n" for r in rows))
    code = main(["prepare", "folder", "--audio", str(tmp_path), "--labels", str(tmp_path / "t.tsv"),
                 "--out", str(tmp_path / "c"), "--split-column", "split", "--workers", "1"])
    assert code == 0
    assert "ignoring columns that are not labels: note" in capsys.readouterr().err
    cache = data.Cache(tmp_path / "c")
    assert cache.meta["source"]["label_format"] == "binary"
    assert list(cache.splits) == ["train", "valid", "test", "train"]
    assert cache.tags == ["loud", "quiet"]   # tie (2 and 2): name order
    np.testing.assert_array_equal(cache.labels, [[1, 0], [0, 1], [1, 1], [0, 0]])


def test_folder_soft_labels(tmp_path):
    _table(tmp_path)
    scores = np.random.default_rng(0).random((5, 3)).round(4)
    with open(tmp_path / "soft.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "guitar", "piano", "drums"])
        for i in range(5):
            w.writerow([f"songs/{i:02d} song.wav"] + [f"{v:.4f}" for v in scores[i]])
    cache = data.prepare_folder(tmp_path, tmp_path / "soft.csv", tmp_path / "c", tags=["guitar", "piano", "drums"],
                                workers=1, progress=False)
    assert cache.meta["source"]["label_format"] == "soft" and cache.labels.dtype == np.float32
    np.testing.assert_array_equal(cache.labels, scores.astype(np.float32))


def test_group_split_keeps_groups_apart_and_is_seeded(tmp_path):
    groups = [f"artist{i % 37}" for i in range(500)] + [""] * 20
    a = folder.group_split(groups, 0.1, 0.2, seed=3)
    assert a == folder.group_split(groups, 0.1, 0.2, seed=3)
    assert a != folder.group_split(groups, 0.1, 0.2, seed=4)
    sides: dict[str, set] = {}
    for g, s in zip(groups, a):
        if g:
            sides.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in sides.values())
    assert abs(a.count("test") / 520 - 0.2) < 0.04 and abs(a.count("valid") / 520 - 0.1) < 0.04
    # through prepare: artists (two songs each) never straddle splits
    table = _table(tmp_path)
    cache = data.prepare_folder(tmp_path, table, tmp_path / "c", group_column="artist", valid_fraction=0.2,
                                test_fraction=0.2, seed=1, workers=1, progress=False)
    artist = {r["path"]: r["artist"] for r in csv.DictReader(table.read_text().splitlines())}
    by_artist: dict[str, set] = {}
    for p, s in zip(cache.paths, cache.splits):
        by_artist.setdefault(artist[p], set()).add(str(s))
    assert all(len(s) == 1 for s in by_artist.values())
    assert {str(s) for s in cache.splits} == {"train", "valid", "test"}


def test_folder_table_errors(tmp_path):
    _table(tmp_path)
    (tmp_path / "nopath.csv").write_text("name,rock\na.wav,1\n")
    with pytest.raises(SampleCNNError, match="no path column"):
        folder.source(tmp_path, tmp_path / "nopath.csv")
    (tmp_path / "dup.csv").write_text("path,rock\na.wav,1\na.wav,0\n")
    with pytest.raises(SampleCNNError, match="twice"):
        folder.source(tmp_path, tmp_path / "dup.csv")
    (tmp_path / "badsplit.csv").write_text("path,split,rock\na.wav,dev,1\n")
    with pytest.raises(SampleCNNError, match="not train, valid or test"):
        folder.source(tmp_path, tmp_path / "badsplit.csv", split_column="split")


def test_force_rebuilds_a_complete_cache(tmp_path):
    table = _table(tmp_path, n=4)
    first = data.prepare_folder(tmp_path, table, tmp_path / "c", workers=1, progress=False)
    again = data.prepare_folder(tmp_path, table, tmp_path / "c", top=1, workers=1, progress=False, force=True)
    assert first.tags != again.tags == ["rock"] and len(again.meta["runs"]) == 1
