"""`samplecnn teach`: teacher labels per student segment, checked against the teacher run independently here.

The dataset: five generated FLAC files at 44.1 kHz (1.5 s: shorter than a segment; 2.8 s: one segment but shorter
than a teacher patch; 5.5, 6.5 and 9 s: 2, 2 and 3 segments), prepared with `samplecnn prepare folder` from a table
made by `samplecnn teach --make-table`. The reference for each segment is computed from the teacher's own
`logmel` of the whole file and the alignment rule written out again below, not from samplecnn.teach."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from samplecnn import audio, models, teach
from samplecnn.cli import main
from samplecnn.data import Cache
from samplecnn.errors import SampleCNNError
from samplecnn.tags import MTAT_TOP50
from samplecnn.teachers import musicnn as M
from samplecnn.train import Run, TrainConfig

from conftest import encode_audio, music_like

SEG, SR = models.SEGMENT_SAMPLES, models.SAMPLE_RATE
CLIPS = {"short.flac": (1.5, "train"), "onepatch.flac": (2.8, "train"), "two.flac": (5.5, "train"),
         "valid.flac": (6.5, "valid"), "three.flac": (9.0, "valid")}
SEGMENTS = {"short.flac": 1, "onepatch.flac": 1, "two.flac": 2, "valid.flac": 2, "three.flac": 3}


def _installed() -> bool:
    try:
        return all(M.checkpoint_dir(n) for n in M.TEACHERS)
    except SampleCNNError:
        return False


pytestmark = pytest.mark.skipif(not _installed(), reason=f"musicnn's checkpoints are not installed "
                                                         f"({M.INSTALL_HINT}, done by scripts/setup.sh)")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(audio folder, label table): the table made from a corpus-style manifest by --make-table."""
    root = tmp_path_factory.mktemp("teach-src")
    (root / "music").mkdir()
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "package", "split"])
        for k, (name, (seconds, split)) in enumerate(CLIPS.items()):
            encode_audio(root / "music" / name, music_like(seconds, sr=44100, seed=k), 44100, "flac")
            w.writerow([f"music/{name}", "test", split])
    table = root / "labels.csv"
    assert main(["teach", "--make-table", str(root / "manifest.csv"), str(table)]) == 0
    return root, table


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    root, table = source
    out = tmp_path_factory.mktemp("teach-cache") / "cache"
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(table), "--split-column", "split",
                 "--out", str(out), "--workers", "1"]) == 0
    return out


def _copy(cache: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cache, tmp_path / "cache"))


@pytest.fixture(scope="module")
def reference(prepared, source):
    """{teacher name: [clip i's (n_segments, 50) expected outputs]}, computed independently."""
    cache = Cache(prepared)
    out = {}
    for name in M.TEACHERS:
        t = M.load_teacher(name)
        rows = []
        for i, rel in enumerate(cache.paths):
            wave = audio.decode_mono(source[0] / rel, 16000)
            wave = np.pad(wave, (0, max(0, 47616 - len(wave))))      # shorter than a patch: padded to one
            n_frames = 1 + len(wave) // 256
            # trailing zeros change no frame of the track; they make its tail a whole patch for logmel
            frames = t.logmel(np.pad(wave, (0, 187 * 256))).reshape(-1, 96)[:n_frames]
            n_seg = max(1, int(cache.lengths[i]) // SEG)
            patches = []
            for k in range(n_seg):
                centre_frame = int(np.floor((k * SEG + SEG / 2) / SR * 16000 / 256 + 0.5))
                start = min(max(centre_frame - 93, 0), n_frames - 187)
                patches.append(frames[start:start + 187])
            rows.append(t.patch_outputs(np.stack(patches)))
        out[name] = rows
    return out


@pytest.fixture(scope="module")
def taught_both(prepared, tmp_path_factory):
    cache = _copy(prepared, tmp_path_factory.mktemp("both"))
    assert main(["teach", "--data", str(cache), "--teacher", "both"]) == 0
    return cache


def _stored(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = cache / "teacher"
    return np.load(folder / "segment_labels.npy"), np.load(folder / "segment_offsets.npy")


def test_make_table_writes_path_split_and_zero_mtat_columns(source):
    header, *rows = list(csv.reader(open(source[1])))
    assert header == ["path", "split", *MTAT_TOP50]
    assert [r[:2] for r in rows] == [[f"music/{n}", s] for n, (_, s) in CLIPS.items()]
    assert all(float(v) == 0.0 for r in rows for v in r[2:])


def test_each_row_is_the_teacher_on_the_patch_centred_on_its_segment(prepared, reference, tmp_path, capsys):
    cache = _copy(prepared, tmp_path)
    assert main(["teach", "--data", str(cache), "--teacher", "musicnn"]) == 0
    assert "segments of 5 clips" in capsys.readouterr().out
    rows, offsets = _stored(cache)
    c = Cache(cache)
    assert [SEGMENTS[Path(p).name] for p in c.paths] == np.diff(offsets).tolist()
    assert offsets[0] == 0 and offsets[-1] == len(rows) == sum(SEGMENTS.values())
    assert rows.dtype == np.float32 and offsets.dtype == np.int64 and rows.shape[1] == 50
    for i in range(len(c)):
        np.testing.assert_allclose(rows[offsets[i]:offsets[i + 1]], reference["MTT_musicnn"][i], atol=2e-5)
    # the segments of a clip are different crops, so the teacher does not say the same thing for each
    three = c.paths.index("music/three.flac")
    assert np.abs(np.diff(reference["MTT_musicnn"][three], axis=0)).max() > 1e-3

    # labels.npy: per-clip means; the original (all zeros) kept
    np.testing.assert_allclose(c.labels, [r.mean(axis=0) for r in reference["MTT_musicnn"]], atol=2e-5)
    np.testing.assert_array_equal(np.load(cache / "labels_original.npy"), np.zeros((5, 50), np.float32))

    # the reader
    assert c.has_segment_labels
    assert c.teacher_meta["teachers"] == ["MTT_musicnn"] and c.teacher_meta["segments"] == len(rows)
    assert c.teacher_meta["clips"] == 5 and c.teacher_meta["musicnn_version"] == "0.1.0"
    for i in range(len(c)):
        got = c.segment_labels(i)
        np.testing.assert_array_equal(got, rows[offsets[i]:offsets[i + 1]])
        assert not got.flags.writeable
    assert not (cache / "teacher" / ".partial").exists()


def test_both_is_the_mean_of_the_two_teachers(taught_both, reference):
    rows, offsets = _stored(taught_both)
    for i in range(len(offsets) - 1):
        expected = (reference["MTT_musicnn"][i] + reference["MTT_vgg"][i]) / 2
        np.testing.assert_allclose(rows[offsets[i]:offsets[i + 1]], expected, atol=2e-5)
    assert Cache(taught_both).teacher_meta["teachers"] == ["MTT_musicnn", "MTT_vgg"]


def test_vgg_alone(prepared, reference, tmp_path):
    cache = _copy(prepared, tmp_path)
    teach.teach(cache, teacher="vgg", progress=False)
    rows, offsets = _stored(cache)
    np.testing.assert_allclose(rows, np.concatenate(reference["MTT_vgg"]), atol=2e-5)


def test_interrupted_run_resumes_with_only_the_rest_and_the_same_result(prepared, taught_both, tmp_path):
    cache = _copy(prepared, tmp_path)
    first: list[int] = []

    def stop_after_two(i: int) -> None:
        first.append(i)
        if len(first) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        teach.teach(cache, teacher="both", progress=False, on_clip=stop_after_two)
    c = Cache(cache)
    assert not c.has_segment_labels and c.segment_labels(0) is None
    assert not (cache / "teacher" / "meta.json").exists() and not (cache / "labels_original.npy").exists()
    np.testing.assert_array_equal(c.labels, np.zeros((5, 50), np.float32))   # untouched until the end
    assert len(list((cache / "teacher" / ".partial" / "clips").glob("*.npy"))) == 2

    second: list[int] = []
    done = teach.teach(cache, teacher="both", progress=False, on_clip=second.append)
    assert sorted(first + second) == list(range(5)) and done.computed == 3
    for name in ("segment_labels.npy", "segment_offsets.npy"):
        np.testing.assert_array_equal(np.load(cache / "teacher" / name), np.load(taught_both / "teacher" / name))
    np.testing.assert_array_equal(np.load(cache / "labels.npy"), np.load(taught_both / "labels.npy"))


def test_an_interrupted_run_with_another_teacher_starts_over(prepared, tmp_path, capsys):
    cache = _copy(prepared, tmp_path)

    def stop(i: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        teach.teach(cache, teacher="vgg", progress=False, on_clip=stop)
    done = teach.teach(cache, teacher="musicnn", progress=False)
    assert done.computed == 5 and "starting over" in capsys.readouterr().err
    assert done.cache.teacher_meta["teachers"] == ["MTT_musicnn"]


def test_complete_labels_are_kept_unless_forced(taught_both, tmp_path, capsys):
    cache = _copy(taught_both, tmp_path)
    assert main(["teach", "--data", str(cache)]) == 1
    assert "already has teacher labels" in capsys.readouterr().err
    before = np.load(cache / "teacher" / "segment_labels.npy")
    done = teach.teach(cache, teacher="both", force=True, progress=False)
    assert done.computed == 5
    np.testing.assert_array_equal(np.load(cache / "teacher" / "segment_labels.npy"), before)
    # the original labels stay the prepared ones, not the teacher means of the first run
    np.testing.assert_array_equal(np.load(cache / "labels_original.npy"), np.zeros((5, 50), np.float32))


def test_unreadable_file_gets_no_segments_and_keeps_its_labels(prepared, source, reference, tmp_path, capsys):
    cache = _copy(prepared, tmp_path / "c")
    moved = Path(shutil.copytree(source[0] / "music", tmp_path / "elsewhere" / "music"))
    (moved / "two.flac").write_bytes(b"this is not audio" * 100)
    # two worker processes, and the audio found under --audio instead of the recorded folder
    assert main(["teach", "--data", str(cache), "--teacher", "musicnn", "--workers", "2",
                 "--audio", str(tmp_path / "elsewhere")]) == 1  # every other clip labelled, then the report
    err = capsys.readouterr().err
    assert "input(s) failed (unreadable: no segment labels" in err and "  music/two.flac: " in err
    c = Cache(cache)
    bad = c.paths.index("music/two.flac")
    assert c.segment_labels(bad).shape == (0, 50)
    assert [f["path"] for f in c.teacher_meta["failures"]] == ["music/two.flac"]
    np.testing.assert_array_equal(c.labels[bad], np.zeros(50, np.float32))
    for i in range(len(c)):
        if i != bad:
            np.testing.assert_allclose(c.segment_labels(i), reference["MTT_musicnn"][i], atol=2e-5)


def test_tags_are_mapped_by_name_and_unknown_tags_refused(source, reference, tmp_path):
    root, _ = source
    out = tmp_path / "sub"
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(source[1]), "--split-column", "split",
                 "--tags", "piano,guitar", "--out", str(out), "--workers", "1"]) == 0
    teach.teach(out, teacher="musicnn", progress=False)
    c = Cache(out)
    cols = [MTAT_TOP50.index("piano"), MTAT_TOP50.index("guitar")]
    for i in range(len(c)):
        np.testing.assert_allclose(c.segment_labels(i), reference["MTT_musicnn"][i][:, cols], atol=2e-5)

    table = tmp_path / "kazoo.csv"
    table.write_text("path,split,guitar,kazoo\n" + "".join(f"music/{n},{s},0,1\n" for n, (_, s) in CLIPS.items()))
    other = tmp_path / "kazoo"
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(table), "--split-column", "split",
                 "--out", str(other), "--workers", "1"]) == 0
    with pytest.raises(SampleCNNError, match="'kazoo'"):
        teach.teach(other, progress=False)
    assert not (other / "teacher").exists()


def test_labels_from_before_a_rebuild_are_ignored_and_replaced(source, taught_both, tmp_path):
    cache = _copy(taught_both, tmp_path)
    root, table = source
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(table), "--split-column", "split",
                 "--out", str(cache), "--workers", "1", "--force"]) == 0
    c = Cache(cache)
    assert not c.has_segment_labels and c.segment_labels(0) is None   # teacher/ is stale, not this cache's
    np.testing.assert_array_equal(c.labels, np.zeros((5, 50), np.float32))
    teach.teach(cache, teacher="both", progress=False)
    assert Cache(cache).has_segment_labels
    np.testing.assert_array_equal(np.load(cache / "labels_original.npy"), np.zeros((5, 50), np.float32))


def test_training_crops_are_grid_segments_with_their_teacher_labels(taught_both, prepared, tmp_path):
    cache = _copy(taught_both, tmp_path / "c")
    assert main(["train", "--data", str(cache), "--out", str(tmp_path / "run"), "--width", "0.125",
                 "--epochs", "1", "--batch-size", "3"]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()

    run = Run(TrainConfig(data=str(cache), out=str(tmp_path / "run2"), width=0.125))
    c = run.cache
    clips = np.arange(len(c))
    draws = clips + 100  # the draw number (position in the epoch's order) seeds the crop
    for epoch in (0, 1):
        x, y = run.crops(clips, draws, epoch)
        for row, i in enumerate(clips):
            segments = c.segment_labels(int(i))
            k = int(np.random.default_rng([0, epoch, int(draws[row])]).integers(0, len(segments)))
            np.testing.assert_array_equal(y[row].numpy(), segments[k])
            np.testing.assert_array_equal(x[row, 0].numpy(), c.clip_float(int(i), k * SEG, SEG))

    # without teacher labels: today's random crops and clip labels
    plain = Run(TrainConfig(data=str(prepared), out=str(tmp_path / "run3"), width=0.125))
    _, y = plain.crops(clips, draws, 0)
    np.testing.assert_array_equal(y.numpy(), np.zeros((5, 50), np.float32))


def test_validation_scores_a_clip_against_the_teacher_on_the_same_segments(taught_both, tmp_path):
    run = Run(TrainConfig(data=str(taught_both), out=str(tmp_path / "run"), width=0.125, valid_segments=1))
    c = run.cache
    longer = [i for i in run.valid_idx if len(c.segment_labels(int(i))) > 1]
    assert longer, "the fixture needs a held-out clip of more than one segment"
    _, _, first = run.predict(run.valid_idx, max_segments=1)
    _, _, whole = run.predict(run.valid_idx)
    for row, i in enumerate(run.valid_idx):
        segments = c.segment_labels(int(i))
        np.testing.assert_allclose(first[row], segments[0], rtol=1e-6)  # what the teacher says of that segment
        np.testing.assert_allclose(whole[row], segments.mean(axis=0), rtol=1e-6)
    assert not np.allclose(first[[list(run.valid_idx).index(i) for i in longer]],
                           c.labels[longer])  # not the whole clip's label


def test_a_denser_grid_holds_the_default_one_and_trains_on_views_labelled_ahead(taught_both, prepared, tmp_path,
                                                                                 capsys):
    dense = _copy(prepared, tmp_path / "dense")
    assert main(["teach", "--data", str(dense), "--teacher", "both", "--labels-per-segment", "3"]) == 0
    c, default = Cache(dense), Cache(taught_both)
    hop = SEG // 3
    assert c.segment_hop == hop and default.segment_hop == SEG and 0 < c.crop_slack == teach.CROP_SLACK
    for i in range(len(c)):
        rows = c.segment_labels(i)
        assert len(rows) == max(1, (int(c.lengths[i]) - SEG) // hop + 1)
        np.testing.assert_allclose(rows[::3], default.segment_labels(i), atol=2e-5)  # the same patches
    three = c.segment_labels(c.paths.index("music/three.flac"))
    assert np.abs(np.diff(three, axis=0)).max() > 1e-3  # the windows between are windows of their own

    # --teacher labels trains on it (and needs the labels: an untaught cache is one clear error)
    common = ["--width", "0.125", "--epochs", "1", "--batch-size", "3", "--epoch-steps", "2"]
    assert main(["train", "--data", str(dense), "--out", str(tmp_path / "run"), "--teacher", "labels", *common]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r2"), "--teacher", "labels",
                 *common]) != 0
    err = capsys.readouterr().err
    assert "samplecnn teach" in err and "Traceback" not in err

    # each view is a segment of the grid moved by at most the slack, with that segment's label; same step, same
    # batch
    run = Run(TrainConfig(data=str(dense), out=str(tmp_path / "run3"), width=0.125, teacher="labels",
                          valid_segments=1))
    x, y = run.views.batch(7, 6)
    x2, y2 = run.views.batch(7, 6)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, run.views.batch(8, 6)[0])
    train = [int(i) for i in run.train_idx]
    for crop, label in zip(x, y):
        found = [(i, k) for i in train for k, r in enumerate(c.segment_labels(i)) if np.array_equal(r, label)]
        assert len(found) == 1
        i, k = found[0]
        audio_ = c.clip_float(i, 0, int(c.lengths[i]))
        starts = [s for s in range(max(0, k * hop - c.crop_slack), k * hop + c.crop_slack + 1)
                  if np.array_equal(np.pad(audio_[s:s + SEG], (0, max(0, SEG - len(audio_[s:s + SEG])))), crop)]
        assert starts, "the crop is not inside its labelled window"

    # validation on a dense cache scores the non-overlapping segments against their own rows
    _, _, first = run.predict(run.valid_idx, max_segments=1)
    _, _, whole = run.predict(run.valid_idx)
    for row, i in enumerate(run.valid_idx):
        np.testing.assert_allclose(first[row], c.segment_labels(int(i))[0], rtol=1e-6)
        np.testing.assert_allclose(whole[row], c.segment_labels(int(i))[::3].mean(axis=0), rtol=1e-6)


def test_extra_data_mixes_a_second_taught_cache_into_a_share_of_the_rows(taught_both, prepared, tmp_path, capsys):
    # a run with --extra-data draws a share of its rows from the second cache; every other row is the very crop of
    # the run without it, so the main music's views stay as they were
    plain = Run(TrainConfig(data=str(taught_both), out=str(tmp_path / "plain"), width=0.125, teacher="labels",
                            valid_segments=1))
    mixed = Run(TrainConfig(data=str(taught_both), out=str(tmp_path / "mixed"), width=0.125, teacher="labels",
                            valid_segments=1, extra_data=(str(taught_both),), extra_share=(0.5,)))
    extra = Cache(taught_both)
    train = [int(i) for i in extra.indices("train")]
    extra_rows = 0
    for step in range(6):
        x, y = mixed.views.batch(step, 8)
        x0, y0 = plain.views.batch(step, 8)
        again = mixed.views.batch(step, 8)
        np.testing.assert_array_equal(x, again[0])
        np.testing.assert_array_equal(y, again[1])
        assert x.shape == x0.shape and y.dtype == np.float32
        for row in range(8):
            if np.array_equal(x[row], x0[row]):
                np.testing.assert_array_equal(y[row], y0[row])
                continue
            extra_rows += 1
            assert any(np.array_equal(y[row], r) for i in train for r in extra.segment_labels(i))
    assert 8 <= extra_rows <= 40  # about half of 48 rows (the two sources can coincide on a row)
    # two extra caches: the first keeps the rows it drew alone at its share, the second fills the next share
    one = Run(TrainConfig(data=str(taught_both), out=str(tmp_path / "one"), width=0.125, teacher="labels",
                          valid_segments=1, extra_data=(str(taught_both),), extra_share=(0.25,)))
    two = Run(TrainConfig(data=str(taught_both), out=str(tmp_path / "two"), width=0.125, teacher="labels",
                          valid_segments=1, extra_data=(str(taught_both), str(taught_both)), extra_share=(0.25, 0.25)))
    same_as_one = same_as_plain = 0
    for step in range(6):
        x1, x2, x0 = one.views.batch(step, 8)[0], two.views.batch(step, 8)[0], plain.views.batch(step, 8)[0]
        for row in range(8):
            if not np.array_equal(x1[row], x0[row]):  # the first extra's row in `one` ...
                np.testing.assert_array_equal(x2[row], x1[row])  # ... is the first extra's row in `two`
            same_as_one += np.array_equal(x2[row], x1[row])
            same_as_plain += np.array_equal(x2[row], x0[row])
    assert same_as_plain < same_as_one < 48  # `two` draws about a quarter of its rows from the second extra
    # a cache without teacher labels is one clear error, as are other options
    common = ["--width", "0.125", "--epochs", "1", "--batch-size", "3", "--epoch-steps", "2", "--teacher", "labels"]
    for extra_args, words in ((["--extra-data", str(prepared)], "samplecnn teach"),
                              (["--extra-data", str(taught_both), "--extra-share", "1.5"], "--extra-share"),
                              (["--extra-data", str(taught_both), "--extra-data", str(taught_both)], "--extra-share"),
                              (["--extra-data", str(taught_both), "--extra-data", str(taught_both), "--extra-share",
                                "0.6", "--extra-share", "0.5"], "sum to less than 1")):
        capsys.readouterr()
        assert main(["train", "--data", str(taught_both), "--out", str(tmp_path / "bad"), *common, *extra_args]) != 0
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert main(["train", "--data", str(taught_both), "--out", str(tmp_path / "run"), *common, "--extra-data",
                 str(taught_both)]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_tag_statistics():
    rows = np.array([[0.9, 0.1, 0.3] + [0.0] * 7, [0.1, 0.5, 0.2] + [0.0] * 7], np.float32)
    stats = teach.tag_statistics(rows, [f"t{j}" for j in range(10)])
    assert [s["tag"] for s in stats[:3]] == ["t0", "t1", "t2"]
    assert stats[0] == {"tag": "t0", "mean": pytest.approx(0.5), "top_decile": 1, "at_least_0.2": 1}
    assert stats[2]["at_least_0.2"] == 2 and stats[2]["top_decile"] == 0
