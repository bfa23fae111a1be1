"""Your own tags: `samplecnn learn` on real audio files, tag packs, and `samplecnn tag --tags PACK`.

The examples are sounds the tests make and write as real files: "tonal" songs (a harmonic tone with a little
noise) against "noisy" ones (decaying noise bursts). The bundled default model's embeddings separate them easily,
so a learned tag must reach a high cross-validated ROC-AUC and rank new, unseen songs of each kind correctly.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn import learn, packs
from samplecnn.cli import main

SR = 22050


def tonal(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = rng.uniform(200, 800)
    x = sum(0.2 / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) for k in (1, 2, 3))
    return (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def noisy(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    t = np.arange(int(seconds * SR)) / SR
    period = rng.uniform(0.15, 0.4)
    return (0.3 * rng.standard_normal(len(t)) * np.exp(-20 * (t % period))).astype(np.float32)


def write_examples(folder: Path, kind, n: int, start: int = 0, seconds: float = 3.0, ext: str = "wav") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        sf.write(folder / f"{kind.__name__}{i:02d}.{ext}", kind(seconds, i), SR)
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    return write_examples(root / "tonal", tonal, 12), write_examples(root / "noisy", noisy, 12)


@pytest.fixture(scope="module")
def learned(examples, tmp_path_factory):
    """`samplecnn learn` with the default model, as a user runs it; (pack path, stdout, seconds)."""
    out = tmp_path_factory.mktemp("pack") / "mine.json"
    pos, neg = examples
    start = time.monotonic()
    code = main(["learn", "tonal", "--positive", str(pos), "--negative", str(neg), "--out", str(out)])
    assert code == 0
    return out, time.monotonic() - start


def test_learns_a_separable_tag_from_examples(learned, examples, tmp_path, capsys):
    out, seconds = learned
    pack = packs.read_pack(out)
    assert pack.tags == ["tonal"] and pack.embedding_dim == 512
    assert pack.model_id == packs.model_id_of("default")
    (info,) = pack.training
    assert info["positives"] == 12 and info["negatives"] == 12 and info["cv_folds"] == 5
    assert info["cv_roc_auc"] >= 0.95, info
    print(f"learn: 24 files, {seconds:.1f} s, CV ROC-AUC {info['cv_roc_auc']:.3f}", file=__import__("sys").stderr)
    # new songs of each kind, never seen: ranked and decided right
    new = write_examples(tmp_path / "new", tonal, 3, start=50), write_examples(tmp_path / "new2", noisy, 3, start=50)
    import samplecnn

    tagger = samplecnn.load()
    e = np.stack([tagger.embed(f) for folder in new for f in sorted(folder.iterdir())])
    scores = pack.scores(e)[:, 0]
    assert scores[:3].min() > scores[3:].max()
    assert pack.decisions(e)[:, 0].tolist() == [True] * 3 + [False] * 3


def test_learn_prints_counts_auc_and_warns_under_ten_per_class(examples, tmp_path, capsys):
    pos, neg = examples
    few = sorted(pos.iterdir())[:3]
    code, out, err = run(capsys, "learn", "tonal", "--positive", *few, "--negative", neg, "--out", tmp_path / "p.json")
    assert code == 0, err
    assert "tonal: 3 positive, 12 negative (--negative files); cross-validated ROC-AUC" in out
    assert "(3 folds)" in out and "warning: fewer than 10 examples in a class" in out
    assert f"wrote {tmp_path / 'p.json'}: 1 tag(s) for model default-" in out


def test_refuses_fewer_than_two_examples_per_class_with_one_line(examples, tmp_path, capsys):
    pos, neg = examples
    code, out, err = run(capsys, "learn", "tonal", "--positive", sorted(pos.iterdir())[0], "--negative", neg,
                         "--out", tmp_path / "p.json")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == ["samplecnn: error: tag 'tonal': 1 positive and 12 negative example(s); each "
                                        "class needs at least 2 (10 or more for a dependable tag)"]
    assert not (tmp_path / "p.json").exists()
    code, _, err = run(capsys, "learn", "tonal", "--positive", pos, "--out", tmp_path / "p.json")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no negative examples" in err


def test_never_overwrites_a_pack_without_force(learned, examples, capsys):
    out, _ = learned
    before = out.read_bytes()
    pos, neg = examples
    code, _, err = run(capsys, "learn", "tonal", "--positive", pos, "--negative", neg, "--out", out)
    assert code == 1 and err.strip() == f"samplecnn: error: {out}: already exists (pass --force to replace it)"
    assert out.read_bytes() == before


def test_a_tag_the_model_already_has_and_a_bad_name_are_refused(examples, tmp_path, capsys):
    pos, neg = examples
    code, _, err = run(capsys, "learn", "piano", "--positive", pos, "--negative", neg, "--out", tmp_path / "p.json")
    assert code == 1 and "'piano' is one of the model's own tags" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "learn", " x", "--positive", pos, "--negative", neg, "--out", tmp_path / "p.json")
    assert code == 1 and "no leading or trailing spaces" in err


def test_a_table_of_several_tags_uses_the_other_tags_as_negatives_and_refuses_unknown_tags(examples, tmp_path,
                                                                                           capsys):
    pos, neg = examples
    table = tmp_path / "labels.csv"
    rows = [("path", "tag")] + [(f"examples/{f.name}", "tonal") for f in sorted(pos.iterdir())[:6]]
    rows += [(str(f), "noisy") for f in sorted(neg.iterdir())[:6]]
    (tmp_path / "examples").mkdir()
    for f in sorted(pos.iterdir())[:6]:
        (tmp_path / "examples" / f.name).write_bytes(f.read_bytes())
    with open(table, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    code, out, err = run(capsys, "learn", "--table", table, "--out", tmp_path / "two.json")
    assert code == 0, err
    assert "tonal: 6 positive, 6 negative (the other tags' positives)" in out
    assert "noisy: 6 positive, 6 negative (the other tags' positives)" in out
    pack = packs.read_pack(tmp_path / "two.json")
    assert pack.tags == ["tonal", "noisy"] and all(r["cv_roc_auc"] >= 0.9 for r in pack.training)
    code, out, err = run(capsys, "learn", "tonall", "--table", table, "--out", tmp_path / "x.json")
    assert code == 1 and err.strip() == (f"samplecnn: error: {table}: unknown tag 'tonall': not in the table; "
                                         "did you mean 'tonal'?")
    code, out, err = run(capsys, "learn", "noisy", "--table", table, "--out", tmp_path / "one.json")
    assert code == 0 and packs.read_pack(tmp_path / "one.json").tags == ["noisy"]


def test_a_bad_example_is_reported_and_the_pack_still_learned_from_the_rest(examples, tmp_path, capsys):
    pos, neg = examples
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"this is not audio" * 10)
    code, out, err = run(capsys, "learn", "tonal", "--positive", pos, bad, "--negative", neg,
                         "--out", tmp_path / "p.json")
    assert code == 1 and "tonal: 12 positive, 12 negative" in out
    assert "1 of 25 input(s) failed (left out of the examples)" in err and f"  {bad}: " in err
    assert packs.read_pack(tmp_path / "p.json").training[0]["positives"] == 12


def test_learn_reuses_the_embeddings_of_an_indexed_library_and_draws_random_negatives(examples, tmp_path, capsys):
    pos, neg = examples
    db = tmp_path / "lib.sqlite"
    code, _, err = run(capsys, "index", pos, neg, "--db", db, "--workers", "1")
    assert code == 0, err
    # every example is in the library: nothing is decoded
    code, out, err = run(capsys, "learn", "tonal", "--positive", pos, "--negative", neg, "--db", db,
                         "--out", tmp_path / "a.json")
    assert code == 0, err
    assert "(24 embedding(s) from " in out and " 0 file(s) decoded;" in out
    # the same pack as from decoding the files (the library stores Tagger.embed's embeddings)
    code, _, err = run(capsys, "learn", "tonal", "--positive", pos, "--negative", neg, "--out", tmp_path / "b.json")
    a, b = packs.read_pack(tmp_path / "a.json"), packs.read_pack(tmp_path / "b.json")
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-6, atol=1e-9)
    # no negatives given: random library tracks that are not positives, said so
    some = sorted(pos.iterdir())[:4]
    code, out, err = run(capsys, "learn", "tonal", "--positive", *some, "--db", db, "--out", tmp_path / "c.json")
    assert code == 0, err
    assert f"tonal: 4 positive, 20 negative (random tracks of {db} not listed as positive)" in out
    info = packs.read_pack(tmp_path / "c.json").training[0]
    assert info["negatives"] == 20 and "random tracks" in info["negatives_from"]
    # a library of another model is only a note: the files are decoded
    code, out, _ = run(capsys, "learn", "tonal", "--positive", pos, "--negative", neg, "--db", db, "--model",
                       _other_model(tmp_path), "--out", tmp_path / "d.json")
    assert code == 0 and "holds no tracks of model" in out and " 24 file(s) decoded;" in out


def _other_model(tmp_path: Path) -> Path:
    from conftest import write_checkpoint

    return write_checkpoint(tmp_path / "other.safetensors", seed=3)


def test_pack_round_trip_is_exact_and_scoring_is_the_fitted_classifier(learned, tmp_path):
    out, _ = learned
    pack = packs.read_pack(out)
    packs.write_pack(pack, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes()
    again = packs.read_pack(tmp_path / "again.json")
    e = np.random.default_rng(0).standard_normal((7, 512)).astype(np.float32)
    assert np.array_equal(again.scores(e), pack.scores(e))
    assert pack.scores(e[0]).shape == (1,) and pack.scores(e).shape == (7, 1)
    # the folded weights score exactly as the scikit-learn pipeline they come from
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0.3, 1, (15, 16)), rng.normal(-0.3, 1, (12, 16))] * rng.uniform(0.1, 5, 16) + 2
    y = np.r_[np.ones(15, int), np.zeros(12, int)]
    w, b, auc, k, threshold = learn._fit(x, y, seed=0)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=learn.DEFAULT_C, class_weight="balanced",
                                                             max_iter=5000)).fit(x, y)
    p = packs.TagPack(["t"], w[None], np.array([b]), np.array([threshold]), "m-" + "0" * 16)
    np.testing.assert_allclose(p.scores(x)[:, 0], ref.predict_proba(x)[:, 1], rtol=0, atol=1e-9)
    assert k == 5 and 0.5 < auc <= 1 and 0 < threshold < 1


def test_bad_pack_files_are_refused_with_one_line(tmp_path, learned):
    out, _ = learned
    doc = json.loads(out.read_text())
    cases = {
        "notjson.json": b"{not json",
        "foreign.json": b'{"weights": []}',
        "shape.json": json.dumps({**doc, "weights": [[1.0, 2.0]]}).encode(),
        "nan.json": out.read_text().replace('"biases":[', '"biases":[NaN,').encode(),
        "dupe.json": json.dumps({**doc, "tags": ["a", "a"]}).encode(),
        "future.json": json.dumps({**doc, "format_version": 2}).encode(),
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(packs.PackError) as e:
            packs.read_pack(tmp_path / name)
        assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / name)), name


def test_tag_with_packs_shows_their_tags_beside_the_models_in_every_format(learned, examples, tmp_path, capsys):
    out, _ = learned
    pos, neg = examples
    a, b = sorted(pos.iterdir())[0], sorted(neg.iterdir())[0]
    code, text, err = run(capsys, "tag", a, b, "--tags", out)
    assert code == 0, err
    blocks = text.split(f"{b}  (")
    assert "  own tags (mine):" in blocks[0] and "* tonal" in blocks[0]
    assert "  own decisions (mine): tonal" in blocks[0] and "  own decisions (mine): (none)" in blocks[1]
    assert "  decisions: " in blocks[0]  # the model's 50 tags as before
    code, text, _ = run(capsys, "tag", a, b, "--format", "json", "--tags", out)
    docs = json.loads(text)
    assert [d["pack_decisions"] for d in docs] == [["tonal"], []]
    assert docs[0]["pack_scores"]["tonal"] > 0.5 > docs[1]["pack_scores"]["tonal"] and len(docs[0]["scores"]) == 50
    assert docs[0]["packs"] == [{"path": str(out), "model_id": packs.model_id_of("default"), "tags": ["tonal"]}]
    code, text, _ = run(capsys, "tag", a, "--format", "jsonl", "--tags", out)
    assert json.loads(text)["pack_scores"] == docs[0]["pack_scores"]
    code, text, _ = run(capsys, "tag", a, "--format", "csv", "--top-k", "3", "--tags", out)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["source"] for r in rows] == ["default"] * 3 + [str(out)]
    assert rows[-1]["tag"] == "tonal" and rows[-1]["decision"] == "1"
    # without --tags, the output is what it always was
    code, text, _ = run(capsys, "tag", a, "--format", "csv", "--top-k", "3")
    assert text.splitlines()[0] == "path,rank,tag,score,decision"


def test_tag_refuses_another_models_pack_and_a_misplaced_option_with_one_line(learned, examples, tmp_path, capsys,
                                                                              ckpt_path):
    out, _ = learned
    song = sorted(examples[0].iterdir())[0]
    code, text, err = run(capsys, "tag", song, "--model", ckpt_path, "--tags", out)
    assert code == 1 and text == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"samplecnn: error: {out}: this tag pack is for model default-")
    assert f"not samplecnn-{packs.model_id_of(ckpt_path).rsplit('-', 1)[1]}" in line
    code, text, err = run(capsys, "tag", song, "--tags", out, song)  # the second song taken for a second pack
    assert code == 1 and text == "" and len(err.strip().splitlines()) == 1
    assert f"{song}: not a tag pack" in err and "put the audio files before --tags" in err


# -- tag packs in a library: index --tags, search, export, write-tags


def _music(examples, folder: Path) -> Path:
    """A copy of the examples as a music folder of one's own (tests delete and add files in it)."""
    import shutil

    for src in examples:
        shutil.copytree(src, folder / src.name)
    return folder


def _own(db) -> dict:
    from samplecnn.library import store

    with store.Library(db, readonly=True) as lib:
        return lib.own_tags(lib.model().model_id)


@pytest.fixture(scope="module")
def packed(examples, learned, tmp_path_factory):
    """A library indexed with `index DIR --tags PACK` at once: (db, music folder)."""
    root = tmp_path_factory.mktemp("packed")
    music = _music(examples, root / "music")
    db = root / "lib.sqlite"
    code = main(["index", str(music), "--db", str(db), "--workers", "1", "--tags", str(learned[0])])
    assert code == 0
    return db, music


def test_index_with_a_pack_stores_its_scores_and_decisions_as_tag_scores_them(packed, learned, capsys):
    db, music = packed
    own = _own(db)
    assert len(own) == 24 and all(set(scores) == {"tonal"} for scores, _ in own.values())
    tonal = sorted((music / "tonal").iterdir())
    # the scores `samplecnn tag --tags` gives for the same file (the one scoring function, TagPack.scores)
    code, text, _ = run(capsys, "tag", tonal[0], "--format", "json", "--tags", learned[0])
    (doc,) = json.loads(text)
    assert doc["pack_scores"]["tonal"] == pytest.approx(own[str(tonal[0])][0]["tonal"], abs=1e-4)
    assert own[str(tonal[0])][1] == doc["pack_decisions"] == ["tonal"]
    # every decision is the pack's threshold on the stored score
    pack = packs.read_pack(learned[0])
    for scores, decided in own.values():
        assert decided == (["tonal"] if scores["tonal"] >= pack.thresholds[0] else [])


def test_search_ranks_by_a_pack_tag_and_names_an_unknown_tag_in_one_line(packed, capsys):
    db, music = packed
    code, text, err = run(capsys, "search", "--db", db, "--tag", "tonal", "--limit", "12", "--format", "json")
    assert code == 0, err
    hits = json.loads(text)
    assert len(hits) == 12 and all(Path(h["path"]).parent.name == "tonal" for h in hits)
    assert hits[0]["tonal"] >= hits[-1]["tonal"]
    code, text, err = run(capsys, "search", "--db", db, "--not", "Tonal", "--tag", "ambient", "--limit", "0",
                          "--format", "json")
    hits = json.loads(text)
    assert code == 0 and Path(hits[0]["path"]).parent.name == "noisy" and "not tonal" in hits[0]
    code, text, err = run(capsys, "search", "--db", db, "--tag", "tonnal")
    assert code == 1 and text == "" and len(err.strip().splitlines()) == 1
    assert "unknown tag 'tonnal'" in err and "1 tag-pack tag(s)" in err and "did you mean 'tonal'?" in err


def test_export_has_the_pack_tags_beside_the_models_in_every_format(packed, capsys):
    db, music = packed
    code, text, _ = run(capsys, "export", "--db", db)
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert code == 0 and len(rows) == 24
    assert header[-2:] == ["score:tonal", "pack_decisions"] and header.count("score:tonal") == 1
    assert sum(1 for h in header if h.startswith("score:")) == 51
    own = _own(db)
    for r in rows:
        scores, decided = own[r["path"]]
        assert float(r["score:tonal"]) == pytest.approx(scores["tonal"], abs=1e-6)
        assert r["pack_decisions"] == "; ".join(decided)
    code, text, _ = run(capsys, "export", "--db", db, "--format", "jsonl", "--no-embeddings")
    recs = [json.loads(line) for line in text.splitlines()]
    assert [r["pack_decisions"] for r in recs] == [own[r["path"]][1] for r in recs]
    assert all(set(r["pack_scores"]) == {"tonal"} and len(r["scores"]) == 50 for r in recs)


def test_write_tags_writes_the_pack_decisions_after_the_models(packed, tmp_path, capsys):
    from samplecnn.library import tagwrite

    db, music = packed
    target = sorted((music / "tonal").iterdir())[1]
    code, out, err = run(capsys, "write-tags", target, "--db", db)
    assert code == 0, err
    written = tagwrite.read_field(target)
    assert written[-1] == "tonal" and "tonal" not in written[:-1]
    assert "SAMPLECNN_TAGS:" in out and out.rstrip().endswith("--undo")
    code, _, err = run(capsys, "write-tags", "--db", db, "--undo")
    assert code == 0 and tagwrite.read_field(target) is None


def test_tracks_indexed_later_are_scored_with_the_stored_packs_and_pruned_ones_lose_them(packed, capsys):
    db, music = packed
    new = write_examples(music / "tonal", tonal, 1, start=40) / "tonal40.wav"
    code, out, err = run(capsys, "index", music, "--db", db, "--workers", "1")  # no --tags: the stored pack
    assert code == 0 and "1 track(s) tagged (1 new" in out, err
    assert _own(db)[str(new)][1] == ["tonal"]
    new.unlink()
    code, out, err = run(capsys, "index", music, "--db", db, "--prune")
    assert code == 0 and str(new) not in _own(db) and len(_own(db)) == 24


def test_adding_a_pack_to_a_library_scores_it_from_the_stored_embeddings_without_decoding(examples, learned,
                                                                                         tmp_path, capsys):
    import shutil

    from samplecnn.library import store

    music = _music(examples, tmp_path / "music")
    db = tmp_path / "lib.sqlite"
    code, _, err = run(capsys, "index", music, "--db", db, "--workers", "1")
    assert code == 0, err
    shutil.rmtree(music)  # nothing left to decode: the scores can only come from the stored embeddings
    code, out, err = run(capsys, "index", "--db", db, "--tags", learned[0])
    assert code == 0, err
    assert out.strip() == "tag pack mine: added, 24 track(s) scored from their stored embeddings"
    pack = packs.read_pack(learned[0])
    own = _own(db)
    with store.Library(db, readonly=True) as lib:
        for t in lib.tracks(lib.model().model_id):
            assert own[t.path][0]["tonal"] == np.float32(pack.scores(t.embedding)[0])
            assert own[t.path][1] == pack.decided(pack.scores(t.embedding))
    code, out, _ = run(capsys, "index", "--db", db, "--tags", learned[0])
    assert code == 0 and out.strip() == "tag pack mine: unchanged, already stored: nothing to do"
    # a pack learned again under the same file name replaces the stored one: every track is scored again
    pack.thresholds = np.array([0.0])
    packs.write_pack(pack, tmp_path / "mine.json")
    code, out, _ = run(capsys, "index", "--db", db, "--tags", tmp_path / "mine.json")
    assert code == 0 and out.strip() == "tag pack mine: replaced, 24 track(s) scored from their stored embeddings"
    assert all(decided == ["tonal"] for _, decided in _own(db).values())


def test_index_refuses_another_models_pack_and_a_tag_name_clash_with_one_line(packed, learned, tmp_path, capsys,
                                                                              ckpt_path):
    from conftest import write_pack

    db, music = packed
    before = _own(db)
    theirs = write_pack(tmp_path / "theirs.json", ckpt_path)
    clash_model = write_pack(tmp_path / "clash.json", "default", tags=("guitar", "mine too"))
    clash_pack = write_pack(tmp_path / "again.json", "default", tags=("tonal",), thresholds=(0.5,))
    for pack, words in ((theirs, "this tag pack is for model samplecnn-"),
                        (clash_model, "tag 'guitar' is in both the model and this pack"),
                        (clash_pack, f"tag 'tonal' is in both {learned[0]} and this pack")):
        for argv in (("index", music, "--db", db, "--tags", pack.path), ("index", "--db", db, "--tags", pack.path)):
            code, out, err = run(capsys, *argv)
            assert code == 1 and out == "", err
            (line,) = err.strip().splitlines()
            assert line.startswith(f"samplecnn: error: {pack.path}: ") and words in line, line
    assert _own(db) == before  # nothing stored
    code, _, err = run(capsys, "index", "--db", db)
    assert code == 1 and "give the folders to index" in err and len(err.strip().splitlines()) == 1


def test_a_library_from_before_packs_is_read_as_it_was_and_gets_packs_when_written(packed, learned, tmp_path,
                                                                                  capsys):
    import shutil
    import sqlite3

    db = tmp_path / "old.sqlite"
    shutil.copyfile(packed[0], db)
    with sqlite3.connect(db) as con:  # the schema as it was before tag packs
        con.executescript("DROP TABLE pack_scores; DROP TABLE packs;")
    code, text, err = run(capsys, "export", "--db", db)
    assert code == 0 and "pack_decisions" not in text.splitlines()[0] and len(text.splitlines()) == 25, err
    code, text, _ = run(capsys, "search", "--db", db, "--tag", "ambient", "--limit", "3", "--format", "json")
    assert code == 0 and len(json.loads(text)) == 3
    code, out, err = run(capsys, "index", "--db", db, "--tags", learned[0])
    assert code == 0 and "tag pack mine: added, 24 track(s) scored" in out, err
    assert _own(db) == _own(packed[0])
