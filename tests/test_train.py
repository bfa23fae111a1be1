"""Training and evaluation end to end on a small MTAT-shaped dataset whose tags are audible.

Four tags have a sound of their own (piano: decaying harmonic notes; drums: noise bursts on a beat; flute: a high
tone with vibrato; techno: a pulsing low sawtooth); each clip mixes a random non-empty subset. A model that learns
must separate them: the end-to-end test asks for a test ROC-AUC above 0.9 (chance is 0.5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samplecnn import checkpoint, metrics
from samplecnn.cli import main
from samplecnn.tags import MTAT_TOP50

from conftest import encode_audio

AUDIBLE = ("piano", "drums", "flute", "techno")
SR_MTAT = 16000
FOLDERS = "0123456789abcdef"


def _sound(tag: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if tag == "piano":
        f0 = rng.choice([262.0, 330.0, 392.0, 440.0])
        env = np.exp(-3 * (t % 0.6))
        return 0.25 * env * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
    if tag == "drums":
        return 0.5 * np.exp(-25 * (t % 0.25)) * rng.standard_normal(len(t))
    if tag == "flute":
        f0 = rng.uniform(1500, 2200)
        return 0.2 * np.sin(2 * np.pi * f0 * t + 2 * np.sin(2 * np.pi * 5 * t))
    if tag == "techno":
        f0 = rng.uniform(70, 110)
        saw = 2 * ((f0 * t) % 1.0) - 1
        return 0.25 * saw * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))
    raise ValueError(tag)


def _write_mp3(path: Path, x: np.ndarray, sr: int = 16000) -> None:
    encode_audio(path, x, sr, "libmp3lame", bit_rate=32_000)


def make_mtat(root: Path, clips_per_folder: int = 10, seconds: float = 3.5, seed: int = 0) -> Path:
    """annotations_final.csv (tab-separated: clip_id, 188 tags, mp3_path) + mp3s in 0-f, like the real MTAT."""
    rng = np.random.default_rng(seed)
    extra = [f"tag{i:03d}" for i in range(188 - len(MTAT_TOP50))]
    columns = list(MTAT_TOP50) + extra
    rows = []
    t = np.arange(int(seconds * SR_MTAT)) / SR_MTAT
    clip_id = 0
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(clips_per_folder):
            present = [tag for tag in AUDIBLE if rng.random() < 0.5] or [AUDIBLE[k % 4]]
            x = sum(_sound(tag, t, rng) for tag in present) + 0.005 * rng.standard_normal(len(t))
            rel = f"{folder}/artist_{folder}{k}-album-{k:02d}-track-0-29.mp3"
            _write_mp3(root / rel, np.clip(x, -1, 1), SR_MTAT)
            labels = ["1" if c in present else "0" for c in columns]
            rows.append("\t".join([str(clip_id), *labels, rel]))
            clip_id += 1
    header = "\t".join(["clip_id", *columns, "mp3_path"])
    (root / "annotations_final.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def mtat_cache(tmp_path_factory):
    root = make_mtat(tmp_path_factory.mktemp("mtat"))
    cache = tmp_path_factory.mktemp("cache") / "mtat"
    assert main(["prepare", "mtat", "--root", str(root), "--out", str(cache), "--workers", "2"]) == 0
    return cache


def _train(cache, out, *extra):
    return main(["train", "--data", str(cache), "--out", str(out), "--width", "0.25", "--batch-size", "8",
                 "--seed", "1", *map(str, extra)])


def test_prepare_train_evaluate_learns_the_audible_tags(mtat_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(mtat_cache, run, "--recipe", "paper", "--epochs", "20") == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 20 and [r["epoch"] for r in records] == list(range(1, 21))
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    model = run / "model.safetensors"
    info = checkpoint.read_info(model)
    assert info.arch == "samplecnn" and info.config["width"] == 0.25
    assert info.provenance["recipe"] == "paper" and info.provenance["best_epoch"] is not None
    audible = [info.tags.index(t) for t in AUDIBLE]
    assert all(0 < info.thresholds[j] < 1 for j in audible)  # calibrated, not the 0.5 default

    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["evaluate", str(model), "--data", str(mtat_cache), "--split", "test", "--out", str(report)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())
    assert f"macro ROC-AUC {summary['roc_auc']:.4f}" in out
    assert summary["clips"] == 30 and summary["tags_scored"] == 4  # only the audible tags have positives
    assert summary["roc_auc"] > 0.9, summary["per_tag"]
    assert (report / "per_tag.png").read_bytes()[:4] == b"\x89PNG"
    assert "tag,positives,roc_auc,pr_auc" in (report / "per_tag.csv").read_text()

    # the exported checkpoint tags a file: a clip with drums only ranks drums above piano, flute and techno
    t = np.arange(4 * 22050) / 22050
    drums = _sound("drums", t, np.random.default_rng(5)).astype(np.float32)
    import samplecnn

    result = samplecnn.load(model).tag(drums, sr=22050)
    scores = dict(zip(result.tags, result.scores))
    assert scores["drums"] > max(scores[t] for t in ("piano", "flute", "techno"))


def test_an_interrupted_run_resumes_to_the_same_weights(mtat_cache, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ("--recipe", "adam", "--epochs", "2", "--checkpoint-every", "3")
    assert _train(mtat_cache, whole, *common) == 0
    # 120 train clips / batch 8 = 15 steps per epoch: stop inside epoch 1, then inside epoch 2, then finish
    assert _train(mtat_cache, parts, *common, "--stop-after-steps", "7") == 0
    assert not (parts / "model.safetensors").exists()
    assert _train(mtat_cache, parts, *common, "--stop-after-steps", "13", "--resume") == 0
    assert _train(mtat_cache, parts, *common, "--resume") == 0
    a = torch.load(whole / "last.pt", weights_only=False)
    b = torch.load(parts / "last.pt", weights_only=False)
    timing = ("compute_seconds",)  # CPU time differs between any two runs
    assert all(a["progress"][k] == v for k, v in b["progress"].items() if k not in timing)
    assert a["progress"]["global_step"] == 30 and b["progress"]["compute_seconds"] > 0
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert (whole / "metrics.jsonl").read_text().count("\n") == (parts / "metrics.jsonl").read_text().count("\n") == 2


def test_bf16_autocast_training_runs_on_the_cpu(mtat_cache, tmp_path):
    run = tmp_path / "bf16"
    assert _train(mtat_cache, run, "--epochs", "1", "--amp", "bf16", "--recipe", "adam") == 0
    info = checkpoint.read_info(run / "model.safetensors")
    assert info.provenance["amp"] == "bf16" and info.provenance["steps"] == 15
    record = json.loads((run / "metrics.jsonl").read_text())
    assert np.isfinite(record["valid_loss"]) and 0 <= record["valid_roc_auc"] <= 1


def test_the_epoch_cap_stops_a_run_even_when_a_stage_ends_on_that_epoch(mtat_cache, tmp_path, monkeypatch):
    from samplecnn import train

    two_stages = dict(train.RECIPES["paper"], stages=[train.Stage("sgd", 0.01, 1), train.Stage("sgd", 0.002, 1)])
    monkeypatch.setitem(train.RECIPES, "paper", two_stages)
    run = tmp_path / "capped"
    assert _train(mtat_cache, run, "--recipe", "paper", "--epochs", "1", "--width", "0.125") == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]  # stage 1 ended at epoch 1 too: no epoch 2 at the next rate
    assert checkpoint.read_info(run / "model.safetensors").provenance["epochs"] == 1


def test_epoch_repeats_visit_every_clip_k_times_with_different_crops(mtat_cache, tmp_path):
    from samplecnn.train import Run, TrainConfig

    run = Run(TrainConfig(data=str(mtat_cache), out=str(tmp_path / "r"), width=0.125, batch_size=8, epoch_repeats=2))
    batches = run.epoch_batches(0)
    clips = np.concatenate([c for c, _ in batches])
    draws = np.concatenate([d for _, d in batches])
    assert sorted(draws) == list(range(240))  # 120 train clips x 2
    assert np.array_equal(np.bincount(clips)[run.train_idx], np.full(120, 2))
    first, second = (np.flatnonzero(clips == clips[0])[:2])
    x, _ = run.crops(clips[[first, second]], draws[[first, second]], 0)
    assert not torch.equal(x[0], x[1])  # the same clip, two different random crops
    assert run.epoch_batches(0)[0][0].tolist() == batches[0][0].tolist()  # deterministic


def test_a_second_run_in_the_same_folder_needs_resume(mtat_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(mtat_cache, run, "--epochs", "1", "--stop-after-steps", "1") == 0
    assert _train(mtat_cache, run, "--epochs", "1") == 1
    assert "pass --resume" in capsys.readouterr().err


def test_two_cpu_processes_with_gloo_stay_in_sync(mtat_cache, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
         "-m", "samplecnn", "train", "--data", str(mtat_cache), "--out", str(run), "--width", "0.125",
         "--batch-size", "4", "--epochs", "1", "--recipe", "adam"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "ranks in sync: max |weight difference| across 2 processes = 0" in log
    info = checkpoint.read_info(run / "model.safetensors")
    assert info.provenance["processes"] == 2
    # each process took half of the 120 clips per epoch: 60 / 4 = 15 steps
    assert torch.load(run / "last.pt", weights_only=False)["progress"]["global_step"] == 15


def test_metrics_match_scikit_learn_and_thresholds_maximise_f1():
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < [0.3, 0.1, 0.0]).astype(np.float32)
    scores = np.clip(labels * 0.4 + rng.random((200, 3)) * 0.7, 0, 1)
    summary = metrics.summary(labels, scores, ["a", "b", "never"])
    assert summary["tags_scored"] == 2 and summary["per_tag"][2]["roc_auc"] is None
    assert summary["roc_auc"] == pytest.approx(np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 1)]))
    assert summary["pr_auc"] == pytest.approx(
        np.mean([average_precision_score(labels[:, j], scores[:, j]) for j in (0, 1)]))
    # known values: perfect ranking -> 1.0, reversed -> 0.0
    perfect = metrics.summary(np.array([[0], [0], [1], [1]]), np.array([[0.1], [0.2], [0.8], [0.9]]), ["x"])
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    reversed_ = metrics.summary(np.array([[1], [1], [0], [0]]), np.array([[0.1], [0.2], [0.8], [0.9]]), ["x"])
    assert reversed_["roc_auc"] == 0.0
    # soft (teacher) labels: positive = among the row's top decile of tags (1 of 10 here) and >= 0.2
    soft = np.full((3, 10), 0.05)
    soft[0, 3], soft[0, 4] = 0.9, 0.8      # only the best of the two counts
    soft[1, 7] = 0.15                      # the best, but below 0.2
    soft[2, 3] = 0.3
    expected = np.zeros((3, 10), dtype=np.int64)
    expected[0, 3] = expected[2, 3] = 1
    assert np.array_equal(metrics.binarize(soft), expected)
    from scipy.stats import spearmanr

    student = soft + np.random.default_rng(1).random(soft.shape) * 0.01
    assert "spearman" not in summary
    assert metrics.summary(soft, student, list("abcdefghij"))["spearman"] == pytest.approx(
        np.mean([spearmanr(soft[i], student[i]).statistic for i in range(3)]))

    thresholds = metrics.f1_thresholds(labels, scores)
    assert thresholds[2] == 0.5  # no positives: the default
    for j in (0, 1):
        best = f1_score(labels[:, j], scores[:, j] >= thresholds[j])
        for cut in np.linspace(0, 1, 101):
            assert f1_score(labels[:, j], scores[:, j] >= cut, zero_division=0) <= best + 1e-12


def test_freeze_keeps_the_first_blocks_and_their_batchnorm_statistics_as_loaded(mtat_cache, tmp_path, capsys):
    from samplecnn.train import Run, TrainConfig

    from conftest import write_checkpoint

    source = write_checkpoint(tmp_path / "source.safetensors", width=0.25, seed=4)
    loaded, _ = checkpoint.read(source)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    run = Run(TrainConfig(data=str(mtat_cache), out=str(tmp_path / "run"), width=0.25, batch_size=4, recipe="adam",
                          init=str(source), freeze=3, augment_crops=True, stop_after_steps=4))
    assert run.fit() is None  # stopped after 4 steps
    after = run.model.state_dict()
    frozen = ("stem.", "blocks.0.", "blocks.1.")
    for name, tensor in before.items():
        if name.startswith(frozen):
            assert torch.equal(after[name], tensor), name  # weights and BatchNorm statistics alike
    for name in ("blocks.2.conv.weight", "blocks.2.bn.running_mean", "blocks.8.bn.running_var", "head.0.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert all(not p.requires_grad for p in run.frozen.parameters())
    assert {id(p) for g in run.optimizer.param_groups for p in g["params"]}.isdisjoint(
        id(p) for p in run.frozen.parameters())

    capsys.readouterr()
    for extra, words in ((("--freeze", "2"), "--freeze needs --init"),
                         (("--freeze", "11", "--init", str(source)), "--freeze must be between 0 and 10")):
        assert _train(mtat_cache, tmp_path / "bad", *extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_augmented_crops_are_a_pure_function_of_seed_epoch_and_draw(mtat_cache, tmp_path):
    from samplecnn.train import Run, TrainConfig

    config = dict(data=str(mtat_cache), width=0.25, batch_size=4)
    plain = Run(TrainConfig(out=str(tmp_path / "a"), **config))
    augmented = Run(TrainConfig(out=str(tmp_path / "b"), augment_crops=True, **config))
    clips, draws = plain.train_idx[:8], np.arange(8)
    x, y = augmented.crops(clips, draws, 0)
    x2, y2 = augmented.crops(clips, draws, 0)
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (8, 1, 59049)
    assert x.abs().max() <= 1.0 and torch.isfinite(x).all()
    base, base_y = plain.crops(clips, draws, 0)
    assert torch.equal(y, base_y)  # the labels are the clips' own: nothing is mixed in
    assert not torch.equal(x, base)
    assert not torch.equal(x, augmented.crops(clips, draws, 1)[0])


def test_lr_scales_every_stage_of_the_recipe_and_a_resume_must_keep_it(mtat_cache, tmp_path, capsys):
    from samplecnn.train import RECIPES, recipe_with_lr

    stages = recipe_with_lr(RECIPES["paper"], 0.002)["stages"]
    assert [s.lr for s in stages] == pytest.approx([0.002 / 5**k for k in range(5)])
    assert RECIPES["paper"]["stages"][0].lr == 0.01  # the recipe itself is untouched
    run = tmp_path / "gentle"
    common = ("--recipe", "paper", "--epochs", "1", "--width", "0.125")
    assert _train(mtat_cache, run, *common, "--lr", "0.002", "--stop-after-steps", "5") == 0
    capsys.readouterr()
    assert _train(mtat_cache, run, *common, "--resume") == 1  # the recipe's own rate: not this run
    assert "cannot resume" in capsys.readouterr().err
    assert not (run / "metrics.jsonl").exists()
    assert _train(mtat_cache, run, *common, "--lr", "0.002", "--resume") == 0  # the same rate: it goes on
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["step"] == 15 and record["lr"] == pytest.approx(0.002)


def test_dropout_is_a_training_choice_the_run_keeps_and_the_model_does_not_carry(mtat_cache, tmp_path, capsys):
    from samplecnn.train import Run, TrainConfig

    plain = Run(TrainConfig(data=str(mtat_cache), out=str(tmp_path / "p"), width=0.125, dropout=0.0))
    assert plain.model.dropout.p == 0
    run = tmp_path / "nodrop"
    common = ("--recipe", "paper", "--epochs", "1", "--width", "0.125")
    assert _train(mtat_cache, run, *common, "--dropout", "0", "--stop-after-steps", "5") == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["config"]["dropout"] == 0.0
    capsys.readouterr()
    assert _train(mtat_cache, run, *common, "--resume") == 1  # the architecture's 0.5: not this run
    assert "cannot resume" in capsys.readouterr().err
    assert _train(mtat_cache, run, *common, "--dropout", "0", "--resume") == 0
    _, info = checkpoint.read(run / "model.safetensors")
    assert info.config.get("dropout", 0.5) == 0.5  # the exported model is the architecture's own
    assert _train(mtat_cache, tmp_path / "bad", *common, "--dropout", "1") == 1
    assert "--dropout must be in [0, 1)" in capsys.readouterr().err
