"""Consistent teaching: augmented views, the online teacher, the cosine recipe, --init and safe resumption."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import soxr
import torch

from samplecnn import checkpoint, models
from samplecnn.cli import main
from samplecnn.data import Cache
from samplecnn.segments import SEGMENT_SAMPLES
from samplecnn.tags import MTAT_TOP50
from samplecnn.teach import tag_columns
from samplecnn.train import distillation_loss
from samplecnn.views import CROP_AT, PAD, TEACHER_WINDOW, WINDOW, Augment, ViewSampler

from test_train import make_mtat

pytest.importorskip("musicnn", reason="the musicnn wheel (teacher weights) is not installed: scripts/setup.sh")


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    """A small cache with the teacher's own vocabulary (the MTAT top 50), as distillation needs."""
    root = make_mtat(tmp_path_factory.mktemp("mtat"), clips_per_folder=4)
    out = tmp_path_factory.mktemp("cache") / "mtat"
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(root / "annotations_final.csv"),
                 "--path-column", "mp3_path", "--tags", ",".join(MTAT_TOP50), "--out", str(out),
                 "--workers", "2"]) == 0
    return out


def _distill(cache, out, *extra):
    return main(["train", "--data", str(cache), "--out", str(out), "--width", "0.125", "--batch-size", "4",
                 "--seed", "3", "--recipe", "cosine", "--teacher", "both", "--epoch-steps", "3", *map(str, extra)])


def test_a_view_is_a_pure_function_of_seed_and_step(cache_path):
    cache = Cache(cache_path)
    views = ViewSampler(cache, cache.indices("train"), seed=7)
    a_student, a_teacher = views.batch(5, 3)
    b_student, b_teacher = views.batch(5, 3)
    assert a_student.shape == (3, SEGMENT_SAMPLES) and a_teacher.shape == (3, TEACHER_WINDOW)
    assert np.array_equal(a_student, b_student) and np.array_equal(a_teacher, b_teacher)
    c_student, _ = views.batch(6, 3)
    assert not np.array_equal(a_student, c_student)
    assert np.isfinite(a_student).all() and np.abs(a_student).max() <= 1.0


def test_without_augmentation_the_teacher_hears_the_window_around_the_students_crop(cache_path):
    cache = Cache(cache_path)
    train = cache.indices("train")
    views = ViewSampler(cache, train, seed=1, augment=Augment.none())
    student, teacher = views.batch(0, 1)
    # find the clip and offset: the student crop is a verbatim slice of some training clip
    for i in train:
        clip = cache.clip_float(int(i))
        hits = [s for s in range(len(clip) - SEGMENT_SAMPLES + 1) if clip[s] == student[0, 0]
                and np.array_equal(clip[s:s + SEGMENT_SAMPLES], student[0])]
        if hits:
            break
    else:
        pytest.fail("the student's crop is not a slice of any training clip")
    start = hits[0] - (CROP_AT - PAD)            # where the teacher's window starts in the clip
    assert start >= 0 and start + WINDOW <= len(clip)
    padded = np.zeros(WINDOW + 2 * PAD, dtype=np.float32)
    lo = max(0, start - PAD)
    piece = clip[lo:start + WINDOW + PAD]
    padded[lo - (start - PAD):lo - (start - PAD) + len(piece)] = piece
    expected = soxr.resample(padded, 22050, 16000, "HQ")[PAD * 16000 // 22050:][:TEACHER_WINDOW]
    assert np.abs(teacher[0] - expected).max() < 1e-5


def test_augmented_views_are_heard_by_the_teacher_as_they_are(cache_path):
    """The teacher's input is the student's audio (same window, 16 kHz): brought back to 22050 Hz, the teacher's window
    holds the student's crop at the same place, up to the 8-kHz band limit of 16 kHz audio."""
    from scipy import signal

    cache = Cache(cache_path)
    views = ViewSampler(cache, cache.indices("train"), seed=2, augment=Augment(p_speed=1, p_mix=1, p_filter=1))
    student, teacher = views.batch(3, 2)
    low = signal.butter(8, 6000, "lowpass", fs=22050, output="sos")
    for s, t in zip(student, teacher):
        back = soxr.resample(t, 16000, 22050, "HQ")[CROP_AT - PAD:][:SEGMENT_SAMPLES]
        a, b = (signal.sosfiltfilt(low, x)[2000:-2000] for x in (s, back))
        assert np.corrcoef(a, b)[0, 1] > 0.999


def test_the_online_teacher_matches_the_musicnn_port(cache_path):
    from samplecnn.teachers import musicnn as M
    from samplecnn.teachers.ensemble import TeacherEnsemble

    cache = Cache(cache_path)
    _, teacher = ViewSampler(cache, cache.indices("train"), seed=4).batch(0, 3)
    columns = tag_columns(cache.tags)
    reference = {name: M.load_teacher(name).patch_outputs(
        np.stack([M.log_compress(M.melpower(w))[:M.PATCH_FRAMES] for w in teacher]))[:, columns]
        for name in M.TEACHERS}
    musicnn = TeacherEnsemble(("MTT_musicnn",), columns).probabilities(torch.from_numpy(teacher)).numpy()
    assert np.abs(musicnn - reference["MTT_musicnn"]).max() < 1e-4          # fp32: the port itself
    both = TeacherEnsemble(M.TEACHERS, columns).probabilities(torch.from_numpy(teacher)).numpy()
    mean = (reference["MTT_musicnn"] + reference["MTT_vgg"]) / 2
    assert np.abs(both - mean).max() < 0.01                                  # vgg runs in bf16 on a CPU


def test_logit_loss_keeps_a_gradient_where_bce_has_almost_none():
    targets = torch.tensor([[1e-3, 0.5]])
    logits = torch.tensor([[-2.0, 0.0]], requires_grad=True)
    distillation_loss(logits, targets, "bce").backward()
    bce_grad = logits.grad.clone()
    logits.grad = None
    distillation_loss(logits, targets, "logit-mse").backward()
    assert abs(float(logits.grad[0, 0])) > 20 * abs(float(bce_grad[0, 0]))  # -2 vs logit(1e-3) = -6.9
    assert float(distillation_loss(torch.logit(targets), targets, "logit-mse")) < 1e-10


def test_teacher_runs_resume_to_the_same_weights_and_export_the_average(cache_path, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _distill(cache_path, whole, "--epochs", "2") == 0
    assert _distill(cache_path, parts, "--epochs", "2", "--stop-after-steps", "4") == 0
    assert _distill(cache_path, parts, "--epochs", "2", "--resume") == 0
    a, b = (torch.load(p / "last.pt", weights_only=True) for p in (whole, parts))
    timing = ("compute_seconds",)  # CPU time differs between any two runs
    assert all(a["progress"][k] == v for k, v in b["progress"].items() if k not in timing)
    assert a["progress"]["global_step"] == 6 and b["progress"]["compute_seconds"] > 0
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["lr"] == 0.0  # cosine reaches 0 at the plan's end
    info = checkpoint.read_info(whole / "model.safetensors")
    assert info.provenance["teacher"] == "both" and info.provenance["ema"] == 0.999
    exported, _ = checkpoint.read(whole / "model.safetensors")
    best = torch.load(whole / "best.pt", weights_only=True)
    assert all(torch.equal(exported.state_dict()[k], best[k]) for k in best)


def test_init_copies_weights_and_gives_a_new_vocabulary_a_new_head(cache_path, tmp_path, capsys):
    from samplecnn.train import Run, TrainConfig

    source = tmp_path / "source.safetensors"
    assert main(["init", "samplecnn", str(source), "--seed", "9"]) == 0  # the MTAT top 50, in the cache's order
    model, info = checkpoint.read(source)
    config = dict(data=str(cache_path), width=1.0, batch_size=2)
    same = Run(TrainConfig(out=str(tmp_path / "a"), init=str(source), **config))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.model.state_dict().items())

    other = tmp_path / "other.safetensors"
    assert main(["init", "samplecnn", str(other), "--tags", "a,b,c", "--seed", "9"]) == 0
    other_model, _ = checkpoint.read(other)
    fresh = Run(TrainConfig(out=str(tmp_path / "b"), init=str(other), **config))
    assert torch.equal(fresh.model.blocks[0].conv.weight, other_model.blocks[0].conv.weight)
    assert fresh.model.classifier.weight.shape == (50, 512)  # the cache's 50 tags: a new head

    capsys.readouterr()
    assert main(["train", "--data", str(cache_path), "--out", str(tmp_path / "c"), "--width", "0.5",
                 "--init", "default"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "width" in err[0]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_runs_code_from_a_crafted_run_folder(cache_path, tmp_path, capsys):
    run = tmp_path / "run"
    assert _distill(cache_path, run, "--epochs", "1", "--stop-after-steps", "1") == 0
    marker = tmp_path / "pwned"
    (run / "last.pt").write_bytes(pickle.dumps({"config": _Payload(str(marker))}))
    capsys.readouterr()
    assert _distill(cache_path, run, "--epochs", "1", "--resume") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert len(err) == 1 and "cannot resume" in err[0] and "last.pt" in err[0]


def test_the_planar_layout_computes_the_same_function_and_gradients():
    torch.manual_seed(0)
    for arch in ("samplecnn", "seed", "se"):
        model = models.build(arch, width=0.25, dropout=0.0)  # training mode (batch statistics), no randomness
        x = torch.randn(2, 1, SEGMENT_SAMPLES)
        plain = model(x)
        plain.sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model.planar = True
        planar = model(x)
        planar.sum().backward()
        assert torch.allclose(plain, planar, atol=2e-3, rtol=1e-3), arch  # float summation order differs
        for g, p in zip(grads, model.parameters()):
            if p.dim() > 1:  # (a bias before BatchNorm has a gradient of ~0: only rounding noise to compare)
                assert (g - p.grad).norm() <= 1e-2 * g.norm(), arch


@pytest.fixture(scope="module")
def voice_cache(tmp_path_factory):
    """A 'voice' cache: two train recordings of a 1234-Hz tone (a stand-in voice that is easy to find in a mixture)
    and one valid recording of a 2345-Hz tone (so that the split a voice came from can be heard)."""
    from scipy.io import wavfile

    root = tmp_path_factory.mktemp("voices")
    t = np.arange(int(1.5 * 22050)) / 22050
    for k, hz in enumerate((1234, 1234, 2345)):
        wavfile.write(root / f"v{k}.wav", 22050, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
    (root / "labels.csv").write_text("path,split,voice\nv0.wav,train,1\nv1.wav,train,1\nv2.wav,valid,1\n")
    out = tmp_path_factory.mktemp("vcache") / "voices"
    assert main(["prepare", "folder", "--audio", str(root), "--labels", str(root / "labels.csv"),
                 "--split-column", "split", "--min-seconds", "1", "--out", str(out), "--workers", "1"]) == 0
    return out


def test_a_voice_is_mixed_over_the_music_at_the_drawn_level(cache_path, voice_cache):
    """The same draw with and without the voice cache: the difference is the voice, and its RMS is the drawn SNR
    above the music's (turned down 20 dB, so that no peak is normalised)."""
    cache, voices = Cache(cache_path), Cache(voice_cache)
    plain = Augment(p_speed=0, p_mix=0, p_filter=0, gain_db=(-20.0, -20.0), p_voice=1.0, voice_snr_db=(-6.0, -6.0))
    with_voice = ViewSampler(cache, cache.indices("train"), seed=5, augment=plain, voices=voices)
    without = ViewSampler(cache, cache.indices("train"), seed=5, augment=plain)
    for step in range(3):
        a = with_voice.view(np.random.default_rng([5, step]))
        b = without.view(np.random.default_rng([5, step]))
        assert np.abs(a).max() <= 1.0 and np.abs(b).max() < 1.0
        voice = a - b
        spectrum = np.abs(np.fft.rfft(voice))
        assert abs(np.argmax(spectrum) * 22050 / len(voice) - 1234) < 5
        ratio_db = 20 * np.log10(np.sqrt(np.mean(voice ** 2)) / max(np.sqrt(np.mean(b ** 2)), 0.01))
        assert abs(ratio_db - -6.0) < 0.1
    student, teacher = with_voice.batch(0, 2)  # and the batch path carries the voice to both networks
    plain_student, plain_teacher = without.batch(0, 2)
    assert student.shape == (2, SEGMENT_SAMPLES) and teacher.shape == (2, TEACHER_WINDOW)
    for got, plain, rate in ((student, plain_student, 22050), (teacher, plain_teacher, 16000)):
        extra = np.abs(np.fft.rfft(got - plain, axis=1))
        assert (np.abs(np.argmax(extra, axis=1) * rate / got.shape[1] - 1234) < 5).all()


def test_valid_voices_come_from_the_valid_split_only(cache_path, voice_cache):
    """voice_split="valid" (scripts/eval_voices.py): every voice heard is the valid recording's 2345-Hz tone, none
    the train recordings' 1234 Hz; the music under it is the same draw as without the voice."""
    cache, voices = Cache(cache_path), Cache(voice_cache)
    plain = dataclasses.replace(Augment.none(), gain_db=(-20.0, -20.0))  # turned down: no peak is normalised
    with_voice = ViewSampler(cache, cache.indices("train"), seed=5, augment=dataclasses.replace(plain, p_voice=1.0),
                             voices=voices, voice_split="valid")
    without = ViewSampler(cache, cache.indices("train"), seed=5, augment=plain, voices=voices, voice_split="valid")
    for step in range(6):
        voice = with_voice.view(np.random.default_rng([5, step])) - without.view(np.random.default_rng([5, step]))
        spectrum = np.abs(np.fft.rfft(voice))
        assert abs(np.argmax(spectrum) * 22050 / len(voice) - 2345) < 5
        near_train = spectrum[int(1200 * len(voice) / 22050):int(1270 * len(voice) / 22050)].max()
        assert near_train < 1e-2 * spectrum.max()
    with pytest.raises(ValueError, match="no clips in its test split"):
        ViewSampler(cache, cache.indices("train"), seed=5, voices=voices, voice_split="test")


def test_eval_voices_correlates_each_vocal_tag_per_row():
    """scripts/eval_voices.py's table: a student that ranks like the teacher gets rho 1, a reversed one -1, per
    row and per tag it has; tags outside the vocabulary are left out."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "eval_voices.py"
    spec = importlib.util.spec_from_file_location("eval_voices", path)
    eval_voices = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_voices)
    teacher = np.random.default_rng(0).random((40, 3))
    student = teacher.copy()
    student[:, 1] = 1 - teacher[:, 1] ** 2  # reversed ranks, not a linear map
    rows = {"with a voice": (student, teacher), "without": (teacher ** 3, teacher)}
    table = eval_voices.correlations(rows, ["choir", "female", "opera", "vocal"], ["vocal", "female", "guitar"])
    assert list(table) == ["female", "vocal"]
    assert table["vocal"] == pytest.approx({"with a voice": 1.0, "without": 1.0})
    assert table["female"] == pytest.approx({"with a voice": -1.0, "without": 1.0})
