"""`samplecnn corpus voices` on tiny .deb packages built here with dpkg-deb (no network): voice by path, G.722
decoding, 22050 Hz FLAC output, licences per file (DEP-5 per-language stanzas, a hand-read free-text file), gender
and language from names, duplicates by bytes and by decoded audio, silent / too short / undecodable files, the
split, refusal of reserved packages, resume, and the API training uses. One test fetches a real package and skips
without apt's network."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_corpus import _by_original, _deb, _read  # the same fake .deb builder and table readers

from samplecnn import cli
from samplecnn.corpus import voice_build, voice_sources, voice_tables, voices
from samplecnn.corpus.dep5 import match
from samplecnn.corpus.voice_decode import decode
from samplecnn.errors import SampleCNNError

from conftest import encode_audio

sf = pytest.importorskip("soundfile")
pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")

SR = 16000


def voice_like(seconds: float, seed: int, f0: float = 150.0) -> np.ndarray:
    """Something speech-like: a gliding harmonic tone, syllable-rate (4 Hz) amplitude bursts, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + seed))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    x = x * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) + 0.005 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _ogg(seconds: float, seed: int, title: str | None = None) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SR, 1, format="OGG", subtype="VORBIS") as f:
        if title:
            f.title = title
        f.write(voice_like(seconds, seed))
    return buf.getvalue()


def _wav(x: np.ndarray, title: str | None = None) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SR, 1, format="WAV", subtype="PCM_16") as f:
        if title:
            f.title = title  # a LIST/INFO chunk: other bytes, same audio
        f.write(x)
    return buf.getvalue()


def _g722(tmp: Path, x: np.ndarray) -> bytes:
    path = encode_audio(tmp / "x.g722", x, SR, "g722", fmt="g722")
    data = path.read_bytes()
    path.unlink()
    return data


def _dep5(*stanzas: tuple[str, str, str]) -> str:
    head = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: test\n"
    return head + "".join(f"\nFiles: {files}\nCopyright: {holder}\nLicense: {lic}\n text\n"
                          for files, lic, holder in stanzas)


FILLETS_TEXT = ("This package was debianized by someone.\n\nCopyright:\n\n   the Free Software Foundation; version 2 "
                "dated June, 1991.\n")


AST_EN = "usr/share/asterisk/sounds/en_US_f_Allison/"
AST_FR = "usr/share/asterisk/sounds/fr_CA_f_June/"
FCS = "usr/share/games/fillets-ng/sound/city/cs/"
FNL = "usr/share/games/fillets-ng/sound/city/nl/"
TUX = "usr/share/tuxpaint/stamps/animals/"
AST_COPYRIGHT = _dep5(("*", "CC-BY-SA-3.0", "2003-2010, Allison Smith"),
                      ("fr-*", "CC-BY-SA-3.0", "2006-2008, June Wallack"),
                      ("it-*", "CC-BY-3.0", "2012 Carlo Flora"))
NAMES = ["asterisk-core-sounds-en-g722", "asterisk-core-sounds-fr-g722", "fillets-ng-data-cs",
         "fillets-ng-data-nl", "tuxpaint-stamps-default"]


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("debs")
    hello = _g722(folder, voice_like(1.2, 1, f0=220))
    noise = (1e-4 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)  # -80 dBFS: line noise
    _deb(folder, "asterisk-core-sounds-en-g722", "1.6.1-1", {
        AST_EN + "hello.g722": hello,
        AST_EN + "digits/hello-again.g722": hello,                    # same bytes: a duplicate
        AST_EN + "digits/1.g722": _g722(folder, voice_like(0.3, 2)),   # too short
        AST_EN + "beep.g722": _g722(folder, voice_like(0.6, 3)),       # not voice by name
        AST_EN + "silence/1.g722": _g722(folder, noise),              # not voice by folder
        AST_EN + "quiet.g722": _g722(folder, noise),                  # voice by path, but silent
    }, AST_COPYRIGHT)
    _deb(folder, "asterisk-core-sounds-fr-g722", "1.6.1-1", {
        AST_FR + "bonjour.g722": _g722(folder, voice_like(1.5, 4, f0=230)),
    }, AST_COPYRIGHT)
    shared = _ogg(1.0, 5)
    _deb(folder, "fillets-ng-data-cs", "1.0.1-1.1", {
        FCS + "vit-m-hlava.ogg": _ogg(2.0, 6),        # small fish: female
        FCS + "vit-v-proc.ogg": _ogg(1.5, 7),         # big fish: male
        FCS + "vit-hs-klid1.ogg": _ogg(1.0, 8),       # another character
        FCS + "vit-m-nebo.ogg": shared,
        "usr/share/games/fillets-ng/music/kufrik.ogg": _ogg(2.0, 9),  # not voice: music
    }, FILLETS_TEXT)
    _deb(folder, "fillets-ng-data-nl", "1.0.1-1.1", {
        FNL + "vit-m-hlava.ogg": _ogg(2.0, 10),
        FNL + "vit-m-nebo.ogg": shared,               # the same file as fillets-ng-data-cs's: kept there only
    }, FILLETS_TEXT)
    words = voice_like(1.0, 11)
    _deb(folder, "tuxpaint-stamps-default", "2022.06.04-1", {
        TUX + "cat_desc.ogg": _ogg(1.0, 12),                         # no language: English
        TUX + "cat_desc_pt_BR.wav": _wav(words),
        TUX + "cat_desc_ru.wav": _wav(words, title="retagged"),      # other bytes, same decoded audio
        TUX + "cat_desc_fr.ogg": b"OggS but not really an Ogg file",  # undecodable
        TUX + "cat_desc_ro.ogg": "cat_desc.ogg",                     # a link
        TUX + "cat.ogg": _ogg(1.0, 13),                              # the stamp's sound effect
    }, _dep5(("*", "GPL-2", "2002-2022 by Bill Kendrick")))
    _deb(folder, "hedgewars-data", "1.0.2-6", {"usr/share/games/hedgewars/Data/Sounds/voices/x.ogg": _ogg(1.0, 14)},
         _dep5(("*", "GPL-2", "someone")))
    return folder


@pytest.fixture(scope="module")
def built(debs, tmp_path_factory):
    out = tmp_path_factory.mktemp("voices")
    logs = []
    summary = voice_build.build(out, packages=NAMES, debs=debs, progress=False, log=logs.append)
    return out, summary, logs


def test_manifest_keeps_voice_once_as_22050_hz_flac(built):
    out, summary, logs = built
    rows = _by_original(_read(out / "manifest.csv"))
    assert set(rows) == {
        AST_EN + "hello.g722", AST_FR + "bonjour.g722",
        FCS + "vit-m-hlava.ogg", FCS + "vit-v-proc.ogg", FCS + "vit-hs-klid1.ogg", FCS + "vit-m-nebo.ogg",
        FNL + "vit-m-hlava.ogg",
        TUX + "cat_desc.ogg", TUX + "cat_desc_pt_BR.wav",
    }
    hello = rows[AST_EN + "hello.g722"]
    assert hello["path"] == f"audio/asterisk-core-sounds-en-g722/{AST_EN}hello.flac"
    assert (hello["source_rate"], hello["source_channels"], hello["codec"]) == ("16000", "1", "g722")
    lengths = {AST_EN + "hello.g722": 1.2, AST_FR + "bonjour.g722": 1.5, FCS + "vit-m-hlava.ogg": 2.0,
               FCS + "vit-v-proc.ogg": 1.5, TUX + "cat_desc_pt_BR.wav": 1.0}
    for original, seconds in lengths.items():
        r = rows[original]
        assert float(r["duration"]) == pytest.approx(seconds, abs=0.01)
        with sf.SoundFile(out / r["path"]) as f:  # what is on disk: mono 22050 Hz FLAC of that length
            assert (f.samplerate, f.channels, f.format) == (22050, 1, "FLAC")
            assert f.frames / 22050 == pytest.approx(seconds, abs=0.01)
    assert not (out / "audio/hedgewars-data").exists()
    assert any("hedgewars-data" in line for line in logs)  # its .deb was seen and ignored
    assert summary.minutes() == pytest.approx(sum(float(r["duration"]) for r in rows.values()) / 60)


def test_licences_per_file_from_debian_copyright(built):
    rows = _by_original(_read(built[0] / "manifest.csv"))
    en, fr = rows[AST_EN + "hello.g722"], rows[AST_FR + "bonjour.g722"]
    # the per-language stanza decides (the fr component), not Allison Smith's package-wide default
    assert (en["licence"], en["licence_files"], en["copyright"]) == ("CC-BY-SA-3.0", "*", "2003-2010, Allison Smith")
    assert (fr["licence"], fr["licence_files"], fr["copyright"]) == ("CC-BY-SA-3.0", "fr-*", "2006-2008, June Wallack")
    fish = rows[FCS + "vit-m-hlava.ogg"]  # free-text copyright: the hand-read licence, checked against the text
    assert fish["licence"] == "GPL-2" and "not machine-readable" in fish["licence_files"]
    assert "Ivo Danihelka" in fish["copyright"]
    assert rows[TUX + "cat_desc.ogg"]["licence"] == "GPL-2"
    assert (built[0] / "licences/asterisk-core-sounds-fr-g722.copyright").read_text() == AST_COPYRIGHT


def test_free_text_licence_needs_its_phrase(tmp_path):
    from samplecnn.corpus.voice_unpack import licence_of

    doc = tmp_path / "usr/share/doc/fillets-ng-data-cs"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Some other licence now.\n")
    source = voice_sources.SOURCES["fillets-ng-data-cs"]
    assert licence_of(tmp_path, "fillets-ng-data-cs", source)("x.ogg").name == "unknown"  # never guessed


def test_labels_from_names(built):
    rows = _by_original(_read(built[0] / "manifest.csv"))
    got = {k: (r["lang"], r["gender"], r["speaker"], r["kind"]) for k, r in rows.items()}
    assert got[FCS + "vit-m-hlava.ogg"] == ("cs", "female", "fillets-cs small fish", "speech")
    assert got[FCS + "vit-v-proc.ogg"] == ("cs", "male", "fillets-cs big fish", "speech")
    assert got[FCS + "vit-hs-klid1.ogg"] == ("cs", "unknown", "", "speech")
    assert got[AST_EN + "hello.g722"] == ("en_US", "female", "Allison", "speech")
    assert got[TUX + "cat_desc.ogg"][:2] == ("en", "unknown")
    assert got[TUX + "cat_desc_pt_BR.wav"][:2] == ("pt_BR", "unknown")
    lab = voice_sources.labels
    assert lab("asterisk-core-sounds-it-g722", "usr/share/asterisk/sounds/it_IT_m_Carlo/x.g722") == \
        voice_sources.Labels("it_IT", "male", "Carlo")
    assert lab("festvox-ru", "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_0001.wav").gender == "male"
    assert lab("klettres-data", "usr/share/klettres/en_GB/alpha/a.ogg").lang == "en_GB"
    assert lab("ktuberling-data", "usr/share/ktuberling/sounds/sr@latin/x.ogg").lang == "sr@latin"
    assert lab("sonic-pi-samples", "usr/share/sonic-pi/samples/ambi_choir.flac") == \
        voice_sources.Labels("zxx", "unknown", "")
    assert voice_sources.SOURCES["lmms-common"].kind == "choir"


def test_voice_rules_leave_out_tones_and_monkeys():
    en = voice_sources.SOURCES["asterisk-core-sounds-en-g722"]
    assert en.is_voice(AST_EN + "tt-weasels.g722") and en.is_voice(AST_EN + "digits/7.g722")
    for other in ("beep.g722", "beeperr.g722", "ascending-2tone.g722", "silence/3.g722", "tt-monkeys.g722"):
        assert not en.is_voice(AST_EN + other)
    assert not en.is_voice(AST_FR + "bonjour.g722")  # each package takes only its own speaker's folder
    tux = voice_sources.SOURCES["tuxpaint-stamps-default"]
    assert tux.is_voice(TUX + "cat_desc_el.ogg") and not tux.is_voice("usr/share/tuxpaint/stamps/symbols/math/7_el.ogg")
    fillets = voice_sources.SOURCES["fillets-ng-data-cs"]
    assert fillets.is_voice(FCS + "x-m-y.ogg") and not fillets.is_voice("usr/share/games/fillets-ng/music/a.ogg")


def test_left_out_files_have_reasons(built):
    out = built[0]
    why = {e["original_path"]: (e["reason"], e["detail"]) for e in _read(out / "excluded.csv")}
    assert why[AST_EN + "digits/hello-again.g722"] == (
        "duplicate", f"audio/asterisk-core-sounds-en-g722/{AST_EN}hello.flac")
    assert why[TUX + "cat_desc_ru.wav"] == (  # same decoded audio as pt_BR, other bytes
        "duplicate", f"audio/tuxpaint-stamps-default/{TUX}cat_desc_pt_BR.flac")
    assert why[FNL + "vit-m-nebo.ogg"] == (  # across packages: the one first in the recipe keeps it
        "duplicate", f"audio/fillets-ng-data-cs/{FCS}vit-m-nebo.flac")
    assert why[AST_EN + "digits/1.g722"][0] == "too short"
    assert why[AST_EN + "quiet.g722"][0] == "silent" and "dBFS" in why[AST_EN + "quiet.g722"][1]
    assert why[TUX + "cat_desc_fr.ogg"][0] == "undecodable"
    assert why[TUX + "cat_desc_ro.ogg"] == ("link", "-> cat_desc.ogg")
    for other in (AST_EN + "beep.g722", AST_EN + "silence/1.g722", TUX + "cat.ogg",
                  "usr/share/games/fillets-ng/music/kufrik.ogg"):
        assert why[other] == ("not voice (path)", "")
    assert not (out / "audio/fillets-ng-data-cs/usr/share/games/fillets-ng/music").exists()
    assert any("cat_desc_fr.ogg" in line for line in built[2])  # the bad file got its one line; the run went on


def test_split_holds_out_whole_packages_and_speakers(built):
    rows = _read(built[0] / "manifest.csv")
    split = {r["package"]: r["split"] for r in rows}
    assert split.pop("fillets-ng-data-nl") == "valid" and split.pop("asterisk-core-sounds-fr-g722") == "valid"
    assert set(split.values()) == {"train"}
    assert voice_sources.VALID_PACKAGES <= set(voice_sources.DEFAULT_PACKAGES)
    # no named speaker is on both sides (Allison Smith records en and es: both stay in train)
    names = {(r["split"], r["speaker"]) for r in rows if r["speaker"]}
    assert not {s for sp, s in names if sp == "train"} & {s for sp, s in names if sp == "valid"}
    for pkg in ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722"):
        assert voice_sources.split_of(pkg) == "train"


def test_reserved_and_unknown_packages_are_refused(debs, tmp_path, capsys):
    for name in ("hedgewars-data", "freedroidrpg-data", "warzone2100-music"):
        with pytest.raises(SampleCNNError, match="reserved"):
            voice_sources.select([name])
    code = cli.main(["corpus", "voices", "--out", str(tmp_path), "--debs", str(debs), "--packages", "0ad-data"])
    assert code == 1 and "not in the voice recipe" in capsys.readouterr().err
    assert not any(match(p, n) for n in voice_sources.DEFAULT_PACKAGES for p in voice_sources.RESERVED)


def test_api_reads_rows_and_clips(built):
    out = built[0]
    rows = voices.read_manifest(out)
    assert len(rows) == 9 and all(isinstance(r["duration"], float) for r in rows)
    valid = voices.read_manifest(out, split="valid")
    assert {r["package"] for r in valid} == {"fillets-ng-data-nl", "asterisk-core-sounds-fr-g722"}
    assert voices.read_manifest(out, kind="choir") == []
    for r in rows:
        x = voices.load_clip(out, r)
        assert x.dtype == np.float32 and x.ndim == 1
        assert x.size == pytest.approx(r["duration"] * 22050, abs=2)
        assert 0.01 < np.abs(x).max() <= 1.0
    hello = next(r for r in rows if r["original_path"].endswith("hello.g722"))
    with pytest.raises(SampleCNNError, match="no manifest.csv"):
        voices.read_manifest(out / "audio")
    assert voices.load_clip(out, hello["path"]).size == voices.load_clip(out, hello).size


def test_rerun_skips_finished_packages(built, debs, monkeypatch, capsys):
    out = built[0]
    before = (out / "manifest.csv").read_bytes()

    def fail(*a, **k):
        raise AssertionError("a package was extracted again")

    monkeypatch.setattr(voice_build.debtools, "extract", fail)
    monkeypatch.setattr(voice_build, "unpack", fail)
    code = cli.main(["corpus", "voices", "--out", str(out), "--debs", str(debs), "--packages", ",".join(NAMES)])
    text = capsys.readouterr().out
    assert code == 0
    assert (out / "manifest.csv").read_bytes() == before
    assert text.count("already extracted, skipped") == len(NAMES)
    assert "licences:" in text and "valid" in text and "5 package(s) reused" in text
    assert "\n" + "\n".join(built[1].lines()) + "\n" in text  # the summary is printed as lines() has it


def test_summary_lines_word_for_word():
    def row(package, seconds, licence, split, gender):
        return {"package": package, "duration": seconds, "licence": licence, "split": split, "gender": gender}

    rows = [row("fillets-ng-data-cs", 30.0, "GPL-2", "train", "female"),
            row("fillets-ng-data-cs", 45.0, "GPL-2", "train", "male"),
            row("fillets-ng-data-cs", 61.25, "GPL-2", "train", "unknown"),
            row("asterisk-core-sounds-fr-g722", 95.5, "CC-BY-SA-3.0", "valid", "female")]
    versions = {"fillets-ng-data-cs": "1.0.1-1.1", "asterisk-core-sounds-fr-g722": "1.6.1-1", "lmms-common": "1.2.2-5"}
    summary = voice_tables.Summary(rows, [{"reason": "duplicate"}, {"reason": "silent"}], versions)
    head = "package                        version          split  clips    min  female/male/unknown min  " \
        "licences (clips)"
    assert summary.lines() == [
        head,
        "fillets-ng-data-cs             1.0.1-1.1        train      3    2.3    0.5/  0.8/  1.0  GPL-2 (3)",
        "asterisk-core-sounds-fr-g722   1.6.1-1          valid      1    1.6    1.6/  0.0/  0.0  CC-BY-SA-3.0 (1)",
        "lmms-common                    1.2.2-5          train      0    0.0    0.0/  0.0/  0.0  ",
        "total                                                      4    3.9  unique clips "
        "(train 2.3 min, valid 1.6 min = 41%)",
        "licences: GPL-2 2.3 min (3), CC-BY-SA-3.0 1.6 min (1)",
        "left out (excluded.csv): 1 duplicate, 1 silent",
    ]
    assert voice_tables.Summary([], [], {"lmms-common": "1"}).lines() == [
        head,
        "lmms-common                    1                train      0    0.0    0.0/  0.0/  0.0  ",
        "total                                                      0    0.0  unique clips "
        "(train 0.0 min, valid 0.0 min)",
        "licences: ",
        "left out (excluded.csv): none",
    ]


def test_interrupted_run_resumes_and_subsets_keep_earlier_packages(debs, tmp_path, monkeypatch):
    real = voice_build.unpack

    def interrupt_on_nl(root, package, *a, **k):
        if package == "fillets-ng-data-nl":
            raise KeyboardInterrupt
        return real(root, package, *a, **k)

    quiet = {"progress": False, "log": lambda s: None}
    monkeypatch.setattr(voice_build, "unpack", interrupt_on_nl)
    with pytest.raises(KeyboardInterrupt):
        voice_build.build(tmp_path, packages=NAMES, debs=debs, **quiet)
    assert not (tmp_path / "manifest.csv").exists()
    assert not (tmp_path / "audio/fillets-ng-data-nl").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    monkeypatch.setattr(voice_build, "unpack", real)
    summary = voice_build.build(tmp_path, packages=NAMES, debs=debs, **quiet)
    assert summary.skipped == ["tuxpaint-stamps-default", "fillets-ng-data-cs"]  # the recipe's order
    assert len(summary.rows) == 9
    # another --min-seconds redoes only the package asked for; the others stay in the tables as they were, and
    # the clip fillets-ng-data-cs no longer keeps is now fillets-ng-data-nl's
    summary = voice_build.build(tmp_path, packages=["fillets-ng-data-cs"], debs=debs, min_seconds=1.8, **quiet)
    assert summary.skipped == []
    kept = {r["original_path"] for r in summary.rows}
    assert {k for k in kept if k.startswith(FCS)} == {FCS + "vit-m-hlava.ogg"}
    assert FNL + "vit-m-nebo.ogg" in kept and len(kept) == 7
    assert len(voices.read_manifest(tmp_path)) == 7


def test_decoder_reads_raw_g722_and_refuses_garbage(tmp_path):
    x = voice_like(1.0, 20)
    path = tmp_path / "a.g722"
    path.write_bytes(_g722(tmp_path, x))
    clip = decode(path)
    assert (clip.source_rate, clip.codec, clip.samples.dtype) == (16000, "g722", np.float32)
    assert clip.duration == pytest.approx(1.0, abs=0.01)
    bad = tmp_path / "b.ogg"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(SampleCNNError, match="b.ogg"):
        decode(bad)


def test_real_package_from_apt(tmp_path):
    """The smallest real source, fetched by apt-get download: its two chorus pads come out as choir clips."""
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    try:
        summary = voice_build.build(tmp_path, packages=["lmms-common"], progress=False, log=lambda s: None)
    except SampleCNNError as e:
        pytest.skip(f"apt cannot fetch lmms-common here (no network or no apt lists): {e}")
    rows = {Path(r["original_path"]).name: r for r in summary.rows}
    assert set(rows) == {"chorus01.ogg", "chorus02.ogg"}
    assert {r["kind"] for r in rows.values()} == {"choir"} and rows["chorus02.ogg"]["licence"] == "GPL-2+"
    assert rows["chorus02.ogg"]["duration"] == pytest.approx(10.36, abs=0.05)
