"""`samplecnn corpus midi` with real libfluidsynth and the real Debian soundfonts on tiny pieces (a few seconds each):
determinism from the seed, programs drawn and recorded, the length cap, the manifest's columns and licences, resume,
a bad MIDI file reported in one line while the batch goes on, the training/evaluation soundfont separation, the
evaluation set's labels, music21's terms, and one label table over the Debian corpus plus the renders."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from samplecnn import cli
from samplecnn.errors import SampleCNNError
from samplecnn.tags import MTAT_TOP50

for _module in ("music21", "pretty_midi", "soundfile"):
    pytest.importorskip(_module, reason=f"needs the corpus extra ({_module}): pip install 'samplecnn[corpus]'")

from samplecnn.corpus import (  # noqa: E402 (after the skips: these import the corpus extra)
    arrange,
    eval_instruments,
    midi,
    midi_files,
    music21_works,
    programs,
    render,
    soundfonts,  # noqa: E402
)
from samplecnn.corpus.piece import Part, Piece  # noqa: E402
from samplecnn.corpus.probe import probe  # noqa: E402


def _fluidsynth_missing() -> str | None:
    missing = [sf.package for sf in soundfonts.TRAINING + soundfonts.EVALUATION if not Path(sf.path).is_file()]
    if missing:
        return f"needs Debian's {', '.join(missing)} (bash scripts/install-fluidsynth.sh)"
    try:
        import fluidsynth  # noqa: F401
    except ImportError as e:
        return f"needs pyfluidsynth and Debian's libfluidsynth3 ({e})"
    return None


pytestmark = pytest.mark.skipif(_fluidsynth_missing() is not None, reason=str(_fluidsynth_missing()))

MAX = 4.0    # --max-seconds in these tests
MIN = 1.0
HOURS = 14 / 3600   # about four renders


@pytest.fixture(scope="module")
def all_works() -> list[music21_works.Work]:
    return music21_works.works("all")


def _build(out: Path, seed: int = 0, **kw) -> midi.Summary:
    return midi.build(out, hours=kw.pop("hours", HOURS), seed=seed, sources=["music21"], max_seconds=MAX,
                      min_seconds=MIN, progress=False, log=lambda _: None, **kw)


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, midi.Summary]:
    out = tmp_path_factory.mktemp("midi")
    return out, _build(out)


def test_renders_are_deterministic_from_the_seed(built, tmp_path):
    out, summary = built
    again = _build(tmp_path / "again")
    assert [r["content_hash"] for r in again.rows] == [r["content_hash"] for r in summary.rows]
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    other = _build(tmp_path / "other", seed=1)
    assert {r["original_path"] for r in other.rows} != {r["original_path"] for r in summary.rows} or \
        [r["programs"] for r in other.rows] != [r["programs"] for r in summary.rows]


def test_programs_are_drawn_and_recorded(built):
    out, summary = built
    assert len(summary.rows) >= 3
    for r in summary.rows:
        progs = r["programs"].split(";")
        assert progs and all(p.startswith("drums:") or 0 <= int(p) <= 127 for p in progs)
        names = r["instruments"].split(";")
        for p in progs:
            name = f"Drums (kit {p.split(':')[1]})" if p.startswith("drums:") else programs.program_name(int(p))
            assert name in names
    # over many draws every favoured instrument turns up often, and drums get added to a share of pieces
    rng = np.random.default_rng(0)
    drawn = [p for _ in range(3000) for p in programs.choose(rng, 4, lowest=3).programs]
    share = {p: drawn.count(p) / len(drawn) for p in (0, 6, 24, 25, 30, 40, 42, 46, 48, 52, 73, 104)}
    assert min(share.values()) > 0.015, share
    piece = Piece([Part("tune", [(i * 0.5, i * 0.5 + 0.4, 60 + i % 12, 90) for i in range(16)])],
                  np.arange(0, 8, 0.5), 4)
    kinds = [arrange.arrange(piece, midi.rng_for(0, f"w{i}")).drums for i in range(200)]
    assert 0.15 < kinds.count("added") / len(kinds) < 0.45


def test_solo_renders_are_one_part_alone(tmp_path):
    # a two-part piece without drums: a solo keeps one melodic part, or a drum part on its beat grid alone
    tune = Part("tune", [(i * 0.5, i * 0.5 + 0.4, 60 + i % 12, 90) for i in range(16)])
    bass = Part("bass", [(i * 1.0, i * 1.0 + 0.9, 40 + i % 5, 80) for i in range(8)])
    piece = Piece([tune, bass], np.arange(0, 8, 0.5), 4)
    solos = [arrange.solo(piece, midi.rng_for(0, f"s{i}")) for i in range(200)]
    assert all(len(s.piece.parts) == len(s.voices) == 1 for s in solos)
    drum_solos = [s for s in solos if s.drums == "solo"]
    assert all(s.piece.parts[0].is_drum and s.voices[0].is_drum for s in drum_solos)
    assert 0.2 < len(drum_solos) / len(solos) < 0.5
    picked = {s.piece.parts[0].name for s in solos if s.drums != "solo"}
    assert picked == {"tune", "bass"}
    # rendered for real: ids and files of their own, beside nothing of an ensemble corpus
    summary = _build(tmp_path / "solo", solo=True)
    assert summary.rows and all(r["path"].endswith("-solo.flac") for r in summary.rows)
    for r in summary.rows:
        assert len(r["programs"].split(";")) == 1 or r["drums"] == "solo"
        assert (r["drums"] == "solo") == r["programs"].startswith("drums:")
        assert probe(tmp_path / "solo" / r["path"]).duration <= MAX + 0.01


def test_durations_are_capped_and_files_are_22050_hz_mono_flac(built):
    out, summary = built
    for r in summary.rows:
        info = probe(out / r["path"])
        assert (info.sample_rate, info.channels, info.codec) == (22050, 1, "flac")
        assert MIN <= info.duration <= MAX
        assert abs(float(r["duration"]) - info.duration) < 1e-3


def test_manifest_columns_and_licences(built, all_works):
    out, summary = built
    header, rows = _rows(out / "manifest.csv")
    assert header == midi.MANIFEST_COLUMNS
    assert {"path", "package", "licence", "copyright", "duration", "split", "content_hash", "file_sha256",
            "programs"} <= set(header)
    by_id = {w.id: w for w in all_works}
    for r in rows:
        w = by_id[r["original_path"]]
        assert r["licence"] == w.licence and r["terms"] == w.terms in ("free", "unstated")
        assert r["package"] == "music21" and r["version"] == music21_works.version()
        assert r["split"] == midi.split_of(w.group) and r["soundfont"] in {s.package for s in soundfonts.TRAINING}
    assert _rows(out / "excluded.csv")[0] == midi.EXCLUDED_COLUMNS


def test_resume_skips_finished_renders(built, tmp_path):
    out, summary = built
    before = (out / "manifest.csv").read_bytes()
    again = _build(out)
    assert (again.rendered, again.reused) == (0, len(summary.rows))
    assert (out / "manifest.csv").read_bytes() == before
    (out / summary.rows[0]["path"]).unlink()   # a lost file is rendered again, to the same audio
    third = _build(out)
    assert third.rendered == 1 and (out / "manifest.csv").read_bytes() == before


def _tiny_midi(path: Path, notes: int = 8) -> Path:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=60 + i, start=0.4 * i, end=0.4 * i + 0.35) for i in range(notes)]
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


def _file_item(path: Path, name: str) -> midi.Item:
    f = midi_files.MidiFile(path, f"usr/share/x/{name}", "some-package", "1.0", "GPL-3+", "*", "someone")
    return midi.Item(f.id, f"audio/test/{name}.flac", f.package, f.version, f.original_path, name, f.licence,
                     f.licence_files, f.copyright, "free", "train", 0, lambda: midi_files.load(f.path, f.id),
                     soundfonts.TRAINING[1])


def test_a_bad_midi_file_is_one_line_and_the_batch_goes_on(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff")   # a truncated header
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    good = _tiny_midi(tmp_path / "good.mid")
    short = _tiny_midi(tmp_path / "short.mid", notes=1)   # 0.35 s of sound + release: under --min-seconds 2
    items = [_file_item(bad, "bad"), _file_item(empty, "empty"), _file_item(short, "short"),
             _file_item(good, "good")]
    summary = midi.build(tmp_path / "out", hours=1, max_seconds=MAX, min_seconds=2.0, progress=False,
                         log=lambda _: None, items=iter(items))
    assert [r["original_path"] for r in summary.rows] == ["usr/share/x/good"]
    assert [(e["original_path"], e["reason"]) for e in summary.excluded] == [("usr/share/x/short", "too short")]
    assert [what for what, _ in summary.failures] == ["usr/share/x/bad", "usr/share/x/empty"]
    for _, reason in summary.failures:
        assert "\n" not in reason and reason.startswith("is not a readable MIDI file")
    with pytest.raises(SampleCNNError, match="bad.mid: is not a readable MIDI file"):
        midi_files.load(bad)


def test_the_command_line_reports_user_mistakes_in_one_line(tmp_path, capsys):
    assert cli.main(["corpus", "midi", "--out", str(tmp_path), "--hours", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hours must be positive" in err
    assert cli.main(["corpus", "midi", "--out", str(tmp_path), "--sources", "essen"]) == 1
    assert "unknown source(s) essen" in capsys.readouterr().err
    debian = tmp_path / "manifest.csv"   # --out at the Debian corpus itself: its manifest is never replaced
    debian.write_text("path,package,split\naudio/x.ogg,x,train\n", encoding="utf-8")
    assert cli.main(["corpus", "midi", "--out", str(tmp_path), "--sources", "music21"]) == 1
    assert "belongs to another corpus" in capsys.readouterr().err
    assert debian.read_text(encoding="utf-8").startswith("path,package,split\n")


def test_training_renders_never_use_the_evaluation_soundfont(tmp_path, monkeypatch):
    train = {sf.path for sf in soundfonts.TRAINING}
    assert not train & {sf.path for sf in soundfonts.EVALUATION}
    assert {sf.package for sf in soundfonts.TRAINING} == {"fluid-soundfont-gm", "timgm6mb-soundfont"}
    used = []
    real = render.render

    def spy(piece, voices, sf):
        used.append(sf.path)
        return real(piece, voices, sf)

    monkeypatch.setattr(render, "render", spy)
    summary = _build(tmp_path, seed=3, hours=30 / 3600)
    assert used and set(used) <= train
    assert {r["soundfont"] for r in summary.rows} <= {"fluid-soundfont-gm", "timgm6mb-soundfont"}


def test_music21_terms(all_works):
    by_collection: dict[str, set[str]] = {}
    for w in all_works:
        by_collection.setdefault(w.collection, set()).add(w.terms)
    assert by_collection["palestrina"] == {"all-rights-reserved"}
    assert by_collection["essenFolksong"] == {"non-commercial"}
    assert by_collection["ryansMammoth"] == {"unstated"}
    assert {w.licence for w in all_works if w.collection == "josquin"} == {"GPL-2+"}
    reserved = {w.id for w in all_works if w.terms == "all-rights-reserved" and w.collection != "palestrina"}
    assert {"bach/bwv277.krn", "bach/bwv281.krn", "bach/bwv366.krn"} <= reserved
    assert any(i.startswith("monteverdi/") for i in reserved) and any(i.startswith("leadSheet/") for i in reserved)
    assert {w.licence for w in all_works if w.collection in ("johnson_j_r", "lusitano")} == {"CC0"}
    allowed = music21_works.terms_allowed("free")
    assert "all-rights-reserved" not in allowed and "non-commercial" not in allowed
    assert "non-commercial" in music21_works.terms_allowed("noncommercial")
    with pytest.raises(SampleCNNError, match="--terms"):
        music21_works.terms_allowed("any")


def test_every_work_renders_to_its_own_file(all_works):
    # the corpus has files that differ only in their extension (Monteverdi's madrigals as .mxl and .rntxt)
    slugs = [w.slug for w in all_works]
    assert len(set(slugs)) == len(slugs)
    by_id = {w.id: w.slug for w in all_works}
    assert by_id["monteverdi/madrigal.3.6.mxl"] != by_id["monteverdi/madrigal.3.6.rntxt"]
    assert by_id["ryansMammoth/7thRegimentReel.abc"] == "ryansMammoth_7thRegimentReel"  # the rest keep their names


def test_the_eval_set_labels_match_its_programs(tmp_path, all_works):
    works = [w for w in all_works if w.collection in ("ryansMammoth", "bach") and w.terms == "unstated"][:60]
    rows = eval_instruments.build_eval(tmp_path, clips_per_instrument=1, seed=0, progress=False,
                                       log=lambda _: None, works=works)
    table = {name: (prog, tags) for name, prog, tags in eval_instruments.INSTRUMENTS}
    assert len(rows) == len(table)
    header, written = _rows(tmp_path / "labels.csv")
    assert header == eval_instruments.LABEL_COLUMNS
    for r in written:
        prog, tags = table[r["instrument"]]
        assert r["program"] == ("drums" if prog is None else str(prog))
        assert r["tags"] == ";".join(tags) and set(tags) <= set(MTAT_TOP50)
        assert r["soundfont"] == "csound-soundfont"
        info = probe(tmp_path / r["path"])
        assert 10.0 <= info.duration <= 30.0 and info.sample_rate == 22050
    assert dict(zip(table, [t for _, _, t in eval_instruments.INSTRUMENTS]))["violin"] == ("violin", "strings")
    with pytest.raises(SampleCNNError, match="already holds an evaluation set"):
        eval_instruments.build_eval(tmp_path, clips_per_instrument=1, progress=False, works=works)
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    (corpus / "audio" / "track.ogg").write_bytes(b"x")
    with pytest.raises(SampleCNNError, match="not an evaluation set's"):
        eval_instruments.build_eval(corpus, clips_per_instrument=1, progress=False, works=works)
    assert (corpus / "audio" / "track.ogg").is_file()


def test_eval_script_metrics():
    spec = importlib.util.spec_from_file_location("eval_instruments_script",
                                                  Path(__file__).parent.parent / "scripts" / "eval_instruments.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tags = ["piano", "violin", "strings"]
    truth = [{"piano"}, {"violin", "strings"}, {"strings"}, set()]
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.8], [0.1, 0.2, 0.7], [0.5, 0.5, 0.5]])
    roc, top1, per_tag = script.instrument_metrics(truth, scores, tags)
    assert per_tag["piano"] == 1.0 and top1 == 1.0   # the clip with no instrument tag counts for ROC only
    assert 0 < roc <= 1


def test_planetblupi_midi_from_debian(tmp_path):
    """The real package: apt-get download, dpkg-deb -x, the licence from its debian/copyright, one short render."""
    if subprocess.run(["apt-cache", "show", midi_files.PACKAGE], capture_output=True).returncode != 0:
        pytest.skip(f"apt knows no {midi_files.PACKAGE} (run apt-get update)")
    summary = midi.build(tmp_path, hours=2 / 3600, sources=["planetblupi"], max_seconds=3, min_seconds=MIN,
                         progress=False, log=lambda _: None)
    assert len(summary.rows) == 1 and not summary.failures
    row = summary.rows[0]
    assert row["package"] == midi_files.PACKAGE and row["licence"] == "GPL-3+" and row["split"] == "train"
    assert "Mathieu Schroeter" in row["copyright"]
    assert any(p.is_drum for p in midi_files.load(tmp_path / "midi" / midi_files.PACKAGE / row["original_path"]).parts)
    assert len(list((tmp_path / "midi" / midi_files.PACKAGE).rglob("*.mid"))) == 10


def test_one_label_table_for_the_debian_corpus_and_the_renders(built, tmp_path):
    out, summary = built
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    with open(corpus / "manifest.csv", "w", encoding="utf-8") as f:
        f.write("path,package,split\naudio/game/track.ogg,game,train\n")
    renders = corpus / "midi"
    renders.symlink_to(out, target_is_directory=True)
    table = tmp_path / "labels.csv"
    assert cli.main(["teach", "--make-table", str(corpus / "manifest.csv"), str(renders / "manifest.csv"),
                     str(table)]) == 0
    header, rows = _rows(table)
    assert header == ["path", "split", *MTAT_TOP50]
    assert [r["path"] for r in rows] == ["audio/game/track.ogg"] + [f"midi/{r['path']}" for r in summary.rows]
    assert all((corpus / r["path"]).is_file() for r in rows[1:])
