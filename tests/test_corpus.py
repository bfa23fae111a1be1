"""`samplecnn corpus debian` on tiny .deb packages built here with dpkg-deb (no network): the music rule per package,
licences per file from debian/copyright, duplicates by bytes and by decoded audio, .pk3 members, links, the split,
refusal of packages outside the recipe, and resume."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from samplecnn import cli
from samplecnn.corpus import debian, dep5, manifest, packages
from samplecnn.corpus.probe import file_sha256
from samplecnn.errors import SampleCNNError

from conftest import music_like

sf = pytest.importorskip("soundfile")
pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")

SR = 16000
MIN = 1.0  # --min-seconds in these tests: the music lasts 2 s, the jingle 0.5 s


def _ogg(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, music_like(seconds, sr=SR, seed=seed), SR, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _wav(seconds: float, seed: int, title: str | None = None) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SR, 2, format="WAV", subtype="PCM_16") as f:
        if title:
            f.title = title  # a LIST/INFO chunk: other bytes, same audio
        f.write(music_like(seconds, sr=SR, channels=2, seed=seed))
    return buf.getvalue()


def _flac(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, music_like(seconds, sr=SR, seed=seed), SR, format="FLAC")
    return buf.getvalue()


def _pk3(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("music/", b"")
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _dep5(*stanzas: tuple[str, str]) -> str:
    head = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: test\n"
    body = "".join(f"\nFiles: {files}\nCopyright: 2020, {lic} Holder\nLicense: {lic}\n comment line\n"
                   for files, lic in stanzas)
    return head + body


def _deb(folder: Path, name: str, version: str, files: dict[str, bytes | str], copyright: str) -> Path:
    """Build NAME_VERSION_all.deb with `files` (bytes, or a str = link target) and /usr/share/doc/NAME/copyright."""
    root = folder / f"{name}-tree"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                                         f"Maintainer: Test <t@example.org>\nDescription: test package\n")
    files = {**files, f"usr/share/doc/{name}/copyright": copyright.encode()}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            os.symlink(data, path)
        else:
            path.write_bytes(data)
    deb = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return deb


ST = "usr/share/games/supertux2/"
STK = "usr/share/games/supertuxkart/data/"
UFO = "usr/share/games/ufoai/base/"
DRA = "usr/share/scummvm/drascula/"
FD = "usr/share/freedroidrpg/data/"


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("debs")
    song, rabbit = _ogg(2.0, 1), _ogg(2.0, 2)
    _deb(folder, "supertux-data", "0.6.3-2", {
        ST + "music/forest/song.ogg": song,
        ST + "music/forest/song_copy.ogg": song,                  # same bytes: a duplicate inside the package
        ST + "music/forest/rabbit.ogg": rabbit,
        ST + "music/misc/jingle.ogg": _ogg(0.5, 3),              # music by path, too short
        ST + "sounds/rain.wav": _wav(2.0, 4),                    # long enough, but not music by path
        ST + "music/forest/song.music": b"(not audio)",
    }, _dep5(("*", "GPL-3+"), ("data/music/*", "GPL-2+"), ("data/music/forest/song.ogg", "CC-BY-SA-3.0")))
    _deb(folder, "supertuxkart-data", "1.4-1", {
        STK + "music/race.flac": _flac(2.0, 5),
        STK + "tracks/cave/beneath_the_rabbit_hole.ogg": rabbit,  # the same file as supertux-data's
        STK + "sfx/static-radio.ogg": _ogg(2.0, 6),               # an effect as long as the music
    }, _dep5(("*", "GPL-3+"), ("data/music/race.flac", "CC0-1.0")))
    _deb(folder, "ufoai-music", "2.5-2", {
        UFO + "0music.pk3": _pk3({"music/a.ogg": _ogg(2.0, 7), "music/b.ogg": _ogg(2.0, 8),
                                  "sound/boom.wav": _wav(2.0, 9)}),
    }, _dep5(("*", "GPL-2+"), ("base/music/a.ogg", "CC-BY-3.0")))
    _deb(folder, "drascula-music", "1.0-1", {
        DRA + "audio/track1.ogg": _ogg(2.0, 10),
        DRA + "de/track1.ogg": "../audio/track1.ogg",             # language folders hold links
        DRA + "audio/track2.wav": _wav(2.0, 11),
        DRA + "audio/track3.wav": _wav(2.0, 11, title="retagged"),  # other bytes, same decoded audio
    }, "This package was debianized by someone.\nIt is free, see the README.\n")  # not machine-readable
    _deb(folder, "freedroidrpg-data", "1.0-1", {FD + "sound/music/town.ogg": _ogg(2.0, 12)},
         _dep5(("*", "GPL-2+")))
    _deb(folder, "evil-music", "1.0-1", {"usr/share/games/evil/music/x.ogg": _ogg(2.0, 13)},
         _dep5(("*", "GPL-2+")))
    return folder


NAMES = ["supertux-data", "supertuxkart-data", "ufoai-music", "drascula-music", "freedroidrpg-data"]


@pytest.fixture(scope="module")
def built(debs, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    logs = []
    summary = debian.build(out, packages=NAMES, debs=debs, min_seconds=MIN, progress=False, log=logs.append)
    return out, summary, logs


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _by_original(rows: list[dict]) -> dict[str, dict]:
    return {r["original_path"]: r for r in rows}


def test_manifest_keeps_music_by_path_and_length_once(built):
    out, summary, logs = built
    rows = _by_original(_read(out / "manifest.csv"))
    assert set(rows) == {
        ST + "music/forest/rabbit.ogg", ST + "music/forest/song.ogg",
        STK + "music/race.flac",
        UFO + "0music.pk3!music/a.ogg", UFO + "0music.pk3!music/b.ogg",
        DRA + "audio/track1.ogg", DRA + "audio/track2.wav",
        FD + "sound/music/town.ogg",
    }
    a = rows[UFO + "0music.pk3!music/a.ogg"]
    assert a["path"] == f"audio/ufoai-music/{UFO}0music.pk3/music/a.ogg"
    assert (a["package"], a["version"], a["codec"]) == ("ufoai-music", "2.5-2", "vorbis")
    wav = rows[DRA + "audio/track2.wav"]
    assert (wav["sample_rate"], wav["channels"], wav["codec"]) == ("16000", "2", "pcm_s16le")
    for r in rows.values():
        assert abs(float(r["duration"]) - 2.0) < 0.01
        f = out / r["path"]
        assert f.is_file() and file_sha256(f) == r["file_sha256"]  # copied byte for byte
    assert not (out / "audio/evil-music").exists()
    assert any("evil-music" in line for line in logs)  # its .deb was seen and ignored
    assert summary.hours() == pytest.approx(8 * 2.0 / 3600, rel=1e-3)


def test_licence_per_file_from_debian_copyright(built):
    rows = _by_original(_read(built[0] / "manifest.csv"))
    lic = {k: (r["licence"], r["licence_files"]) for k, r in rows.items()}
    assert lic[ST + "music/forest/song.ogg"] == ("CC-BY-SA-3.0", "data/music/forest/song.ogg")  # last stanza wins
    assert lic[ST + "music/forest/rabbit.ogg"] == ("GPL-2+", "data/music/*")
    assert lic[STK + "music/race.flac"] == ("CC0-1.0", "data/music/race.flac")
    assert lic[UFO + "0music.pk3!music/a.ogg"] == ("CC-BY-3.0", "base/music/a.ogg")  # pk3 members overlay base/
    assert lic[UFO + "0music.pk3!music/b.ogg"] == ("GPL-2+", "*")                   # the package-wide default
    assert lic[DRA + "audio/track1.ogg"] == ("unknown", "")                         # not machine-readable
    assert rows[ST + "music/forest/song.ogg"]["copyright"] == "2020, CC-BY-SA-3.0 Holder"


def test_left_out_files_have_reasons(built):
    out = built[0]
    why = {e["original_path"]: (e["reason"], e["detail"]) for e in _read(out / "excluded.csv")}
    assert why[ST + "music/forest/song_copy.ogg"] == ("duplicate", f"audio/supertux-data/{ST}music/forest/song.ogg")
    assert why[STK + "tracks/cave/beneath_the_rabbit_hole.ogg"] == (
        "duplicate", f"audio/supertux-data/{ST}music/forest/rabbit.ogg")  # across packages: the first one is kept
    assert why[DRA + "audio/track3.wav"] == ("duplicate", f"audio/drascula-music/{DRA}audio/track2.wav")
    assert why[ST + "music/misc/jingle.ogg"][0] == "too short"
    for sfx in (ST + "sounds/rain.wav", STK + "sfx/static-radio.ogg", UFO + "0music.pk3!sound/boom.wav"):
        assert why[sfx] == ("not music (path)", "")
    assert why[DRA + "de/track1.ogg"] == ("link", "-> ../audio/track1.ogg")
    assert not (out / "audio/supertux-data" / ST / "sounds").exists()  # non-music is never copied


def test_content_hash_finds_retagged_copies(built):
    rows = _by_original(_read(built[0] / "manifest.csv"))
    hashes = [r["content_hash"] for r in rows.values()]
    assert len(set(hashes)) == len(hashes)
    # track3.wav differs from track2.wav in its bytes only: a byte hash alone would have kept both
    debs_tree = built[0] / "audio/drascula-music" / DRA / "audio"
    assert not (debs_tree / "track3.wav").exists()


def test_split_holds_out_whole_packages(built):
    rows = _read(built[0] / "manifest.csv")
    split = {r["package"]: r["split"] for r in rows}
    assert split.pop("freedroidrpg-data") == "valid"
    assert set(split.values()) == {"train"}
    assert packages.VALID_PACKAGES == {"hedgewars-data", "freedroidrpg-data"}
    assert packages.VALID_PACKAGES <= set(packages.DEFAULT_PACKAGES)


def test_rerun_does_no_work_and_prints_a_summary(built, debs, monkeypatch, capsys):
    out = built[0]
    before = (out / "manifest.csv").read_bytes()

    def fail(*a, **k):
        raise AssertionError("a package was extracted again")

    monkeypatch.setattr(debian.debtools, "extract", fail)
    monkeypatch.setattr(debian, "unpack", fail)
    code = cli.main(["corpus", "debian", "--out", str(out), "--debs", str(debs), "--min-seconds", str(MIN),
                     "--packages", ",".join(reversed(NAMES))])
    text = capsys.readouterr().out
    assert code == 0
    assert (out / "manifest.csv").read_bytes() == before  # same rows, same order
    assert text.count("already extracted, skipped") == len(NAMES)
    assert "supertux-data" in text and "0.00" in text and "total" in text and "valid" in text
    assert "licences:" in text and "5 package(s) reused" in text
    assert "\n" + "\n".join(built[1].lines(MIN)) + "\n" in text  # the summary is printed as lines() has it


def test_summary_lines_word_for_word():
    def row(package, seconds, licence, split):
        return {"package": package, "duration": seconds, "licence": licence, "split": split}

    rows = [row("supertux-data", 125.5, "GPL-2+", "train"), row("supertux-data", 3600.25, "CC-BY-SA-3.0", "train"),
            row("supertux-data", 61.0, "GPL-2+", "train"), row("freedroidrpg-data", 1800.0, "GPL-2+", "valid")]
    excluded = [{"reason": "duplicate"}, {"reason": "too short"}, {"reason": "duplicate"}]
    versions = {"supertux-data": "0.6.3-2", "ufoai-music": "2.5-2", "freedroidrpg-data": "1.0-1"}
    assert manifest.Summary(rows, excluded, versions).lines(30.0) == [
        "package                  version              split tracks  hours  licences (tracks)",
        "supertux-data            0.6.3-2              train      3   1.05  GPL-2+ (2), CC-BY-SA-3.0 (1)",
        "ufoai-music              2.5-2                train      0   0.00  ",
        "freedroidrpg-data        1.0-1                valid      1   0.50  GPL-2+ (1)",
        "total                                                    4   1.55  unique tracks >= 30 s "
        "(train 1.05 h, valid 0.50 h = 32%)",
        "licences: CC-BY-SA-3.0 1.00 h (1), GPL-2+ 0.55 h (3)",
        "left out (excluded.csv): 2 duplicate, 1 too short",
    ]
    assert manifest.Summary([], [], {"ufoai-music": "2.5-2"}).lines(0.5) == [
        "package                  version              split tracks  hours  licences (tracks)",
        "ufoai-music              2.5-2                train      0   0.00  ",
        "total                                                    0   0.00  unique tracks >= 0.5 s "
        "(train 0.00 h, valid 0.00 h)",
        "licences: ",
        "left out (excluded.csv): none",
    ]


def test_interrupted_run_resumes_where_it_stopped(debs, tmp_path, monkeypatch):
    real = debian.unpack

    def interrupt_on_drascula(root, package, *a, **k):
        if package == "drascula-music":
            raise KeyboardInterrupt
        return real(root, package, *a, **k)

    monkeypatch.setattr(debian, "unpack", interrupt_on_drascula)
    with pytest.raises(KeyboardInterrupt):
        debian.build(tmp_path, packages=NAMES, debs=debs, min_seconds=MIN, progress=False, log=lambda s: None)
    assert not (tmp_path / "manifest.csv").exists()
    assert not (tmp_path / "audio/drascula-music").exists()
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary folder went with the exception
    monkeypatch.setattr(debian, "unpack", real)
    summary = debian.build(tmp_path, packages=NAMES, debs=debs, min_seconds=MIN, progress=False, log=lambda s: None)
    # the recipe's order, whatever the order asked for: everything before drascula-music was kept
    assert summary.skipped == ["ufoai-music", "supertux-data", "supertuxkart-data", "freedroidrpg-data"]
    assert len(summary.rows) == 8

    # another --min-seconds changes what a package yields: its records no longer count
    summary = debian.build(tmp_path, packages=["drascula-music"], debs=debs, min_seconds=3.0, progress=False,
                           log=lambda s: None)
    assert summary.skipped == [] and summary.rows == []
    assert not list((tmp_path / "audio/drascula-music").rglob("*.*"))


def test_packages_outside_the_recipe_are_refused(debs, tmp_path, capsys):
    code = cli.main(["corpus", "debian", "--out", str(tmp_path / "c"), "--debs", str(debs), "--packages",
                     "supertux-data,evil-music"])
    assert code == 1
    assert "not in the corpus recipe: evil-music" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    with pytest.raises(SampleCNNError, match="no .deb for hedgewars-data"):
        debian.build(tmp_path / "d", packages=["hedgewars-data"], debs=debs, progress=False)
    assert not (tmp_path / "d").exists()  # nothing is created before the sources are known


def test_default_package_list_is_the_shared_notes_list():
    assert set(packages.DEFAULT_PACKAGES) == {
        "ufoai-music", "warzone2100-music", "planetblupi-music-ogg", "supertux-data", "hedgewars-data",
        "colobot-common-sounds", "supertuxkart-data", "freedroidrpg-data", "drascula-music", "hyperrogue-music",
        "flare-game", "asc-music", "frozen-bubble-data", "lincity-ng-data", "extremetuxracer-data"}
    assert packages.select(["asc-music", "ufoai-music"]) == ["ufoai-music", "asc-music"]


def test_dep5_globs_and_last_match():
    assert dep5.match("*", "a/b/c.ogg") and dep5.match("data/*", "data/x/y.ogg")
    assert dep5.match("music/track?.ogg", "music/track1.ogg") and not dep5.match("music/track?.ogg", "music/t.ogg")
    assert dep5.match(r"odd\*name", "odd*name") and not dep5.match(r"odd\*name", "oddXname")
    assert not dep5.match("data/*", "src/data/x")  # anchored at the source root
    text = _dep5(("*", "GPL-2+"), ("music/*.ogg music/extra/*", "CC0-1.0"), ("music/special.ogg", "CC-BY-3.0"))
    text += "\nLicense: GPL-2+\n The full text.\n"  # a stand-alone licence paragraph is not a Files paragraph
    c = dep5.Copyright.parse(text)
    assert c.licence_for("music/a.ogg").name == "CC0-1.0"
    assert c.licence_for("music/extra/b.wav").files == "music/extra/*"
    assert c.licence_for("music/special.ogg").name == "CC-BY-3.0"
    assert c.licence_for("other/x.ogg") == dep5.Licence("GPL-2+", "*", "2020, GPL-2+ Holder")
    assert dep5.Copyright.parse("Free software, see COPYING.\n") is None
    no_default = dep5.Copyright.parse(_dep5(("music/*", "CC0-1.0")))
    assert no_default.licence_for("sounds/x.ogg") is dep5.UNKNOWN


def test_source_path_mapping():
    ufo = packages.RULES["ufoai-music"]
    assert ufo.source_path("usr/share/games/ufoai/base/0music.pk3!music/x.ogg") == "base/music/x.ogg"
    assert packages.RULES["supertux-data"].source_path(ST + "music/a/b.ogg") == "data/music/a/b.ogg"
    assert packages.RULES["asc-music"].source_path("usr/share/games/asc/music/x.mp3") == \
        "usr/share/games/asc/music/x.mp3"
    assert packages.RULES["frozen-bubble-data"].is_music("usr/share/games/frozen-bubble/snd/introzik.ogg")
    assert not packages.RULES["frozen-bubble-data"].is_music("usr/share/games/frozen-bubble/snd/launch.ogg")
