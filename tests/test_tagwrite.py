"""`samplecnn write-tags` on files a user really has: cut-short WAVs, links, other owners, read-only files, ID3v2.3
mp3s, and a run killed in the middle of a write. Every file is real audio written here; nothing is mocked except
where a test says it switches one safety check off to show the next one catches the same damage."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import av
import mutagen
import numpy as np
import pytest
import soundfile as sf

from samplecnn.cli import main
from samplecnn.fileio import file_hash
from samplecnn.library import backup, integrity, store, tagwrite

from conftest import SR, encode_audio, music_like

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def encode(path, x, codec, fmt=None, options=None):
    """Mono `x` as stereo (ffmpeg's vorbis encoder wants two channels)."""
    return encode_audio(path, np.stack([x, x]), SR, codec, fmt=fmt, options=options)


def index(capsys, folder, db, ckpt) -> None:
    code, out, err = run(capsys, "index", folder, "--db", db, "--model", ckpt, "--workers", "1")
    assert code == 0, err


def decoded(path) -> tuple[int, np.ndarray]:
    """Every frame the way a player gets it from ffmpeg: (frames, samples)."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray() for f in c.decode(audio=0)]
    x = np.concatenate(frames, axis=1)
    return x.shape[1], x


def decisions(db) -> dict[str, list[str]]:
    with store.Library(db) as lib:
        return {t.path: t.decisions for t in lib.tracks(lib.model().model_id)}


def identity(path) -> tuple:
    st = os.stat(path)
    return st.st_ino, st.st_dev, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_nlink


# ------------------------------------------------------------------------------------------------------------------
# containers that are not intact


def truncated_wav(path: Path, seconds: float, cut: int, seed: int) -> Path:
    """A 16-bit WAV whose last `cut` bytes are gone: the RIFF and data sizes still claim the full length."""
    sf.write(path, music_like(seconds, seed=seed), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    return path


def test_truncated_wavs_are_refused_and_stay_byte_identical_through_reruns_and_undo(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    cut = [truncated_wav(music / f"cut{i}.wav", 3.0 + i * 0.5, 1001 + 2 * 777 * i, seed=i) for i in range(4)]
    sf.write(music / "whole.wav", music_like(3.0, seed=9), SR, subtype="PCM_16")
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    assert set(decisions(db)) == {str(p) for p in [*cut, music / "whole.wav"]}  # index accepts them all
    before = {p: (p.read_bytes(), decoded(p)[0]) for p in cut}

    for written in (1, 0):  # a rerun must not grow anything either
        code, out, err = run(capsys, "write-tags", "--db", db)
        assert code == 1
        assert f"changed the SAMPLECNN_TAGS field of {written} file(s)" in out
        for p in cut:
            assert f"{p}: its container is not intact (" in err and "truncated" in err
            assert (p.read_bytes(), decoded(p)[0]) == before[p]
        assert len([line for line in err.splitlines() if "not intact" in line]) == 4  # one line each
    assert tagwrite.read_field(music / "whole.wav") == decisions(db)[str(music / "whole.wav")]

    code, out, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 0, err
    assert all((p.read_bytes(), decoded(p)[0]) == before[p] for p in cut)


@pytest.mark.parametrize("kind", ["wav", "aiff", "ogg", "m4a"])
def test_write_field_refuses_every_cut_short_container(tmp_path, kind):
    x = music_like(3.0, seed=4)
    whole, cut = tmp_path / f"whole.{kind}", tmp_path / f"cut.{kind}"
    if kind == "wav":
        sf.write(whole, x, SR)
    elif kind == "aiff":
        sf.write(whole, x, SR, format="AIFF")
    elif kind == "ogg":
        encode(whole, x, "vorbis", options={"strict": "-2"})
    else:
        encode(whole, x, "aac", fmt="ipod", options={"b": "128k"})
    cut.write_bytes(whole.read_bytes()[:-700])
    damaged = cut.read_bytes()
    tagwrite.write_field(whole, ["fine"])
    assert tagwrite.read_field(whole) == ["fine"]
    with pytest.raises(tagwrite.SampleCNNError, match="container is not intact .*truncated"):
        tagwrite.write_field(cut, ["fine"])
    assert cut.read_bytes() == damaged


def test_a_write_that_changes_the_decoded_audio_is_put_back(tmp_path, monkeypatch):
    """With the container check switched off, mutagen really damages a cut-short WAV (its tag lands inside what
    the data chunk claims); the check of the decoded audio after the write catches that and restores the bytes."""
    path = truncated_wav(tmp_path / "cut.wav", 3.0, 3001, seed=1)
    original = path.read_bytes()
    mtime = os.stat(path).st_mtime_ns
    monkeypatch.setattr(integrity, "check_container", lambda p: None)
    put_back = r"the write did not verify \(the decoded audio changed\), so its original bytes were put back"
    with pytest.raises(tagwrite.SampleCNNError, match=put_back):
        tagwrite.write_field(path, ["piano", "loud"])
    assert path.read_bytes() == original and os.stat(path).st_mtime_ns == mtime


def test_undo_of_a_damaging_write_it_cannot_reverse_fails_instead_of_reporting_success(capsys, tmp_path, ckpt_path):
    """A library written by an older samplecnn: a cut-short WAV got a tag chunk its decoders read as audio, and
    the field does not read back. Undo has no copy of the original bytes for it, so it says so and keeps the record."""
    music = tmp_path / "music"
    music.mkdir()
    path = truncated_wav(music / "cut.wav", 3.0, 3001, seed=2)
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    f = mutagen.File(path)
    f.add_tags()
    tagwrite._set(f, ["piano", "loud"])
    f.save()  # what the older version did, unchecked
    assert tagwrite.read_field(path) is None
    digest, size, mtime_ns = file_hash(path)
    with store.Library(db) as lib:
        lib.record_tag_write(str(path), None, ["piano", "loud"], lib.model().model_id, size, mtime_ns, digest)
    damaged = path.read_bytes()

    code, out, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 1
    assert f"{path}: the SAMPLECNN_TAGS field samplecnn wrote does not read back" in err
    assert path.read_bytes() == damaged
    with store.Library(db) as lib:
        assert [p for p, _ in lib.tag_writes()] == [str(path)]  # still listed: nothing was undone


def all_formats(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    x = music_like(3.0, seed=21)
    files = {
        "mp3": encode(folder / "a.mp3", x, "libmp3lame", options={"b": "128k"}),
        "ogg": encode(folder / "b.ogg", x, "vorbis", options={"strict": "-2"}),
        "flac": encode(folder / "c.flac", x, "flac"),
        "m4a": encode(folder / "d.m4a", x, "aac", fmt="ipod", options={"b": "128k"}),
        "wav": folder / "e.wav",
        "aiff": folder / "f.aiff",
    }
    sf.write(files["wav"], x, SR)
    sf.write(files["aiff"], x, SR, format="AIFF")
    for kind in ("mp3", "ogg", "flac", "m4a"):
        f = mutagen.File(files[kind], easy=True)
        if f.tags is None:
            f.add_tags()
        f["title"] = f"my {kind} song"
        f.save()
    return files


def test_undo_gives_back_the_exact_original_bytes_of_every_format(capsys, tmp_path, ckpt_path):
    files = all_formats(tmp_path / "music")
    originals = {k: p.read_bytes() for k, p in files.items()}
    db = tmp_path / "lib.sqlite"
    index(capsys, tmp_path / "music", db, ckpt_path)
    code, out, err = run(capsys, "write-tags", "--db", db)
    assert code == 0, err
    assert "changed the SAMPLECNN_TAGS field of 6 file(s)" in out
    assert all(p.read_bytes() != originals[k] for k, p in files.items())
    code, out, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 0, err
    for kind, p in files.items():
        assert p.read_bytes() == originals[kind], kind
    assert not list((tmp_path / "lib.sqlite-tagwrite").glob("*.orig"))  # no copy is left behind
    assert run(capsys, "write-tags", "--db", db)[0] == 0
    with store.Library(db) as lib:  # what undo keeps is small: the tag block, not the audio
        for p in files.values():
            assert len(lib.tag_undo(str(p))[2]) < 16384


def test_a_second_write_still_undoes_to_the_original_bytes(capsys, tmp_path, ckpt_path):
    files = all_formats(tmp_path / "music")
    originals = {k: p.read_bytes() for k, p in files.items()}
    db = tmp_path / "lib.sqlite"
    index(capsys, tmp_path / "music", db, ckpt_path)
    assert run(capsys, "write-tags", "--db", db)[0] == 0
    # other decisions (as from another model or new thresholds) make a second write over the first
    with store.Library(db) as lib:
        for t in lib.tracks(lib.model().model_id):
            t.decisions = ["a much longer tag that makes the tag block grow " * 40]
            lib.put_track(t)
    assert run(capsys, "write-tags", "--db", db)[0] == 0
    assert tagwrite.read_field(files["flac"]) == ["a much longer tag that makes the tag block grow " * 40]
    assert run(capsys, "write-tags", "--db", db, "--undo")[0] == 0
    for kind, p in files.items():
        assert p.read_bytes() == originals[kind], kind


# ------------------------------------------------------------------------------------------------------------------
# editing in place: links, owners, modes, read-only files


def test_write_and_undo_edit_in_place_keeping_inode_owner_mode_hard_links_and_symlinks(capsys, tmp_path, ckpt_path):
    music, elsewhere = tmp_path / "music", tmp_path / "elsewhere"
    music.mkdir()
    elsewhere.mkdir()
    x = music_like(3.0, seed=5)
    owned = encode(music / "owned.flac", x, "flac")
    linked = encode(music / "linked.ogg", x, "vorbis", options={"strict": "-2"})
    os.link(linked, elsewhere / "hard-link.ogg")
    target = encode(elsewhere / "target.mp3", x, "libmp3lame", options={"b": "128k"})
    (music / "symlink.mp3").symlink_to(target)
    os.chmod(owned, 0o640)
    if os.geteuid() == 0:
        os.chown(owned, 4321, 4321)  # someone else's file, writable by root, readable by its owner only
    files = [owned, linked, target]
    originals = {p: p.read_bytes() for p in files}
    ids = {p: identity(p) for p in files}
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)

    code, out, err = run(capsys, "write-tags", "--db", db)
    assert code == 0, err
    assert "changed the SAMPLECNN_TAGS field of 3 file(s)" in out
    for p in files:
        assert identity(p) == ids[p], p
        assert p.read_bytes() != originals[p]
    assert (music / "symlink.mp3").is_symlink() and tagwrite.read_field(target) is not None
    assert tagwrite.read_field(elsewhere / "hard-link.ogg") == tagwrite.read_field(linked) is not None

    code, out, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 0, err
    for p in files:
        assert identity(p) == ids[p] and p.read_bytes() == originals[p], p
    assert (music / "symlink.mp3").is_symlink()


def test_read_only_files_are_skipped_with_one_line_and_the_batch_goes_on(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    (music / "locked-folder").mkdir(parents=True)
    x = music_like(3.0, seed=6)
    ro = encode(music / "a-read-only.flac", x, "flac")
    in_ro_folder = encode(music / "locked-folder" / "b.flac", x, "flac")
    plain = encode(music / "c.flac", x, "flac")
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    os.chmod(ro, 0o444)  # even root, who could write it, must leave it
    os.chmod(music / "locked-folder", 0o555)
    original = ro.read_bytes()
    try:
        for dry in ([], ["--dry-run"]):
            code, out, err = run(capsys, "write-tags", "--db", db, *dry)
            assert code == 1 and "Traceback" not in err
            assert f"{ro}: is read-only (no write permission): skipped" in err
            assert len([line for line in err.splitlines() if str(ro) in line]) == 1
        assert ro.read_bytes() == original and tagwrite.read_field(ro) is None
        assert tagwrite.read_field(in_ro_folder) and tagwrite.read_field(plain)  # written in place, folder or not
    finally:
        os.chmod(music / "locked-folder", 0o755)


# ------------------------------------------------------------------------------------------------------------------
# a run killed in the middle of a write


_KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from samplecnn.library import backup
journal = backup.Journal.beside(Path(sys.argv[1]))
journal.lock()
journal.begin(sys.argv[2], "write")  # the copy samplecnn keeps, then half of an in-place edit
with open(sys.argv[2], "r+b") as f:
    f.seek(40)
    f.write(b"\\0" * 3000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_run_puts_back_a_file_a_killed_write_left_half_written(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    path = encode(music / "a.flac", music_like(3.0, seed=7), "flac")
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    original = path.read_bytes()
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(db), str(path)], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert path.read_bytes() != original  # half-written

    code, out, err = run(capsys, "write-tags", "--db", db, "--dry-run")  # reports, changes nothing
    assert f"{path}: an interrupted write left a backup copy" in err and path.read_bytes() != original
    code, out, err = run(capsys, "write-tags", "--db", db)
    assert code == 0, err
    assert f"{path}: an interrupted write was rolled back: its original bytes are back" in err
    assert tagwrite.read_field(path) == decisions(db)[str(path)]
    assert "changed the SAMPLECNN_TAGS field of 1 file(s)" in out
    assert not list((tmp_path / "lib.sqlite-tagwrite").glob("pending-*"))
    assert run(capsys, "write-tags", "--db", db, "--undo")[0] == 0
    assert path.read_bytes() == original


def test_a_second_run_on_the_same_library_waits_its_turn_with_one_line(capsys, tmp_path, ckpt_path):
    music = tmp_path / "music"
    music.mkdir()
    path = encode(music / "a.flac", music_like(3.0, seed=3), "flac")
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    original = path.read_bytes()
    other = backup.Journal.beside(db)
    other.lock()  # another run, in the middle of its batch
    try:
        code, out, err = run(capsys, "write-tags", "--db", db)
        assert code != 0 and "another samplecnn run is writing tags with this library" in err
        assert len(err.strip().splitlines()) == 1 and path.read_bytes() == original
    finally:
        other.unlock()
    assert run(capsys, "write-tags", "--db", db)[0] == 0


# ------------------------------------------------------------------------------------------------------------------
# ID3v2.3


def test_an_id3v23_mp3_is_written_once_keeps_its_version_and_is_not_rewritten_by_reruns(capsys, tmp_path, ckpt_path):
    from mutagen.id3 import ID3, TIT2

    music = tmp_path / "music"
    music.mkdir()
    path = encode(music / "old.mp3", music_like(3.0, seed=8), "libmp3lame", options={"b": "128k"})
    tag = ID3()
    tag.add(TIT2(encoding=1, text=["an old player's song"]))
    tag.save(path, v2_version=3)
    original = path.read_bytes()
    db = tmp_path / "lib.sqlite"
    index(capsys, music, db, ckpt_path)
    wanted = decisions(db)[str(path)]
    assert len(wanted) > 1, "the test checkpoint should decide several tags for this file"

    code, out, err = run(capsys, "write-tags", "--db", db)
    assert code == 0, err
    assert "changed the SAMPLECNN_TAGS field of 1 file(s)" in out
    assert ID3(path).version == (2, 3, 0) and tagwrite.read_field(path) == ["/".join(wanted)]
    written, mtime = path.read_bytes(), os.stat(path).st_mtime_ns
    for dry in (["--dry-run"], []):
        code, out, err = run(capsys, "write-tags", "--db", db, *dry)
        assert code == 0, err
        assert "the SAMPLECNN_TAGS field of 0 file(s)" in out
    assert path.read_bytes() == written and os.stat(path).st_mtime_ns == mtime

    assert run(capsys, "write-tags", "--db", db, "--undo")[0] == 0
    assert path.read_bytes() == original


def test_patches_rebuild_the_original_when_the_tag_grows_shrinks_or_moves(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    cases = {
        "grown at the start": (b"TAG1" * 100 + audio, b"TAG2" * 900 + audio),
        "shrunk at the start": (b"TAG1" * 900 + audio, b"T" * 10 + audio),
        "size field and an appended chunk": (b"SIZE" + audio, b"EZIS" + audio + b"id3 chunk" * 50),
        "removed at the end": (audio + b"tail" * 300, audio),
    }
    for name, (a, b) in cases.items():
        (tmp_path / "a").write_bytes(a)
        (tmp_path / "b").write_bytes(b)
        patch = backup.make_patch(tmp_path / "a", tmp_path / "b")
        assert patch is not None and len(patch) < 12_000, name
        rebuilt = backup.rebuild_to(patch, tmp_path / "b", tmp_path)
        assert rebuilt.read_bytes() == a, name
