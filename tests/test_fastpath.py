"""The fast path: BatchNorm folding is exact, bf16 keeps the model API, "auto" picks bf16 only when it is allowed,
and decoding ahead in a thread changes nothing but the speed."""

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import samplecnn
from samplecnn import audio, checkpoint, devices, folding, models, precision, verification
from samplecnn.cli import main
from samplecnn.errors import AudioError, SampleCNNError
from samplecnn.inference import Tagger
from samplecnn.prefetch import prefetch

from conftest import SEG, SR, music_like, write_checkpoint

AMEN = Path(__file__).parent.parent / "examples" / "loop_amen_full.flac"


def _with_bn_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics and affine terms, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def _real_segments(n=2):
    """Segments of real music (the bundled amen loop) plus a synthetic one."""
    x = audio.decode_mono(AMEN)
    segs = [x[i * SEG:(i + 1) * SEG] for i in range(min(n, len(x) // SEG))]
    segs.append(music_like(SEG / SR, seed=5))
    return torch.from_numpy(np.stack(segs)).unsqueeze(1)


# -- folding ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,overrides", [
    ("samplecnn", {}), ("seed", {}), ("se", {}), ("rese2", {"multi_level": True}),
])
def test_folding_batchnorm_is_exact(arch, overrides):
    torch.manual_seed(0)
    model = _with_bn_statistics(models.build(arch, **overrides))
    folded = folding.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    x = _real_segments()
    with torch.no_grad():
        ref_p, got_p = torch.sigmoid(model(x)), torch.sigmoid(folded(x))
        ref_e, got_e = model.embed(x), folded.embed(x)
    assert (ref_p - got_p).abs().max().item() < 1e-5
    assert (ref_e - got_e).abs().max().item() < 1e-5 * max(1.0, ref_e.abs().max().item())


def test_folding_leaves_the_original_model_alone():
    model = _with_bn_statistics(models.build("samplecnn"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folding.fold_batchnorm(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_batchnorm_that_follows_no_conv_is_refused():
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="cannot fold"):
        folding.fold_batchnorm(model)


# -- bf16 --------------------------------------------------------------------------------------------------------------

def test_bf16_model_keeps_the_api_and_float32_outputs():
    model = _with_bn_statistics(models.build("samplecnn"))
    fast = folding.inference_copy(model, "bf16")
    x = _real_segments(1)
    with torch.no_grad():
        logits, emb = fast(x), fast.embed(x)
        probs = torch.sigmoid(fast.classifier(emb))
        ref = torch.sigmoid(model(x))
    assert logits.dtype == emb.dtype == torch.float32
    assert emb.shape == (len(x), fast.embed_dim)
    # bf16 is approximate: close on random weights, but not exact (the real bar is verify_bf16 on a trained model)
    assert (probs - ref).abs().max().item() < 0.05
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched


# -- when bf16 may be used ---------------------------------------------------------------------------------------

PASSING = {"max_score_diff": 0.004, "top5_same": True, "files": 3}


@pytest.mark.parametrize("native,record,expected", [
    (True, PASSING, "bf16"),
    (False, PASSING, "fp32"),                                   # no native bf16: fp32 even if verified
    (True, None, "fp32"),                                       # never verified (every checkpoint today)
    (True, {**PASSING, "max_score_diff": 0.02}, "fp32"),        # scores moved too much
    (True, {**PASSING, "top5_same": False}, "fp32"),            # the top 5 changed
    (True, {**PASSING, "top5_same": "yes"}, "fp32"),            # malformed records never pass
    (True, {**PASSING, "files": 0}, "fp32"),
    (True, {"max_score_diff": 0.001}, "fp32"),
    (True, "verified", "fp32"),
])
def test_auto_uses_bf16_only_when_native_and_verified(monkeypatch, native, record, expected):
    monkeypatch.setattr(precision, "fast_bf16", lambda device="cpu": native)
    provenance = {"source": "test"} if record is None else {"source": "test", "bf16_verified": record}
    assert precision.resolve_precision("auto", provenance) == expected
    assert precision.resolve_precision(None, provenance) == expected


def test_explicit_precision_is_honoured_and_unknown_ones_refused(monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16", lambda device="cpu": False)
    assert precision.resolve_precision("bf16", {}) == "bf16"
    assert precision.resolve_precision("fp32", {"bf16_verified": PASSING}) == "fp32"
    with pytest.raises(SampleCNNError, match="precision"):
        precision.resolve_precision("fp16", {})


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.fast_bf16("cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert not precision.fast_bf16("cpu")


def test_compare_scores():
    a = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    assert precision.compare_scores(a, a + 0.003) == (pytest.approx(0.003), True)
    b = a.copy()
    b[5] = 0.95  # a new tag enters the top 5
    diff, same = precision.compare_scores(a, b)
    assert diff == pytest.approx(0.85) and not same


def test_verification_is_recorded_and_then_used_by_auto(tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "m.safetensors")
    model, info = checkpoint.read(ckpt)
    song = tmp_path / "song.wav"
    sf.write(song, music_like(2.5 * SEG / SR, seed=4), SR)
    result = verification.verify_bf16(model, info, [song])
    assert result["files"] == 1 and isinstance(result["top5_same"], bool)
    assert 0 <= result["max_score_diff"] <= result["max_segment_diff"] < 0.1
    stored = precision.record_bf16_verification(info, result)
    assert "per_file" not in stored  # no local paths in a checkpoint
    checkpoint.save(ckpt, model, info, overwrite=True)

    assert checkpoint.read_info(ckpt).provenance["bf16_verified"] == stored  # it survives the file

    monkeypatch.setattr(precision, "fast_bf16", lambda device="cpu": True)
    passed = result["max_score_diff"] <= 0.01 and result["top5_same"]
    assert samplecnn.load(ckpt).precision == ("bf16" if passed else "fp32")
    assert samplecnn.load(ckpt, precision="fp32").precision == "fp32"
    # both outcomes through the file, whatever this run measured
    for top5_same, expected in ((True, "bf16"), (False, "fp32")):
        precision.record_bf16_verification(info, {**result, "max_score_diff": 0.002, "top5_same": top5_same})
        checkpoint.save(ckpt, model, info, overwrite=True)
        assert samplecnn.load(ckpt).precision == expected


def test_untrained_checkpoints_run_fp32_by_default(ckpt_path):
    tagger = samplecnn.load(ckpt_path)
    assert tagger.precision == "fp32"
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in tagger.model.modules())  # but folded


def test_bf16_tagger_stays_close_to_fp32(ckpt_path):
    signal = music_like(3 * SEG / SR, seed=7)
    ref = samplecnn.load(ckpt_path, precision="fp32").tag(signal, sr=SR)
    fast = samplecnn.load(ckpt_path, precision="bf16").tag(signal, sr=SR)
    assert fast.taggram.dtype == np.float32
    assert np.abs(ref.scores - fast.scores).max() < 0.05


def test_cli_precision_option(capsys, tmp_path, ckpt_path):
    song = tmp_path / "a.wav"
    sf.write(song, music_like(4.0), SR)
    outs = {}
    for prec in ("fp32", "auto"):
        assert main(["tag", str(song), "--model", str(ckpt_path), "--precision", prec]) == 0
        outs[prec] = capsys.readouterr().out
    assert outs["fp32"] == outs["auto"]  # auto is fp32 for an unverified checkpoint
    with pytest.raises(SystemExit):
        main(["tag", str(song), "--model", str(ckpt_path), "--precision", "int4"])


# -- decoding ahead in a thread --------------------------------------------------------------------------------------

def test_prefetch_keeps_order_and_items():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch([], depth=1)) == []


def test_prefetch_raises_the_source_error_where_it_happened():
    def source():
        yield 1
        yield 2
        raise AudioError("is silent", "x.wav")

    got = []
    with pytest.raises(AudioError, match="silent"):
        for item in prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_runs_a_bounded_distance_ahead_and_closes_the_source():
    produced, closed = [], threading.Event()

    class Source:
        def __init__(self):
            self.i = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.i += 1
            produced.append(self.i)
            return self.i

        def close(self):
            closed.set()

    it = prefetch(Source(), depth=2)
    assert next(it) == 1
    threading.Event().wait(0.3)  # give the producer time to run ahead as far as it may
    assert len(produced) <= 1 + 2 + 1  # consumed + queued + the one waiting to be queued
    it.close()
    assert closed.is_set() and not it._thread.is_alive()


def test_prefetched_tagging_equals_inline_tagging(tmp_path, ckpt_path):
    song = tmp_path / "song.flac"
    sf.write(song, music_like(40.0, sr=44100, channels=2, seed=8), 44100)  # two 30-s blocks
    ahead = Tagger(*checkpoint.read(ckpt_path), prefetch_blocks=2).tag(song)
    inline = Tagger(*checkpoint.read(ckpt_path), prefetch_blocks=0).tag(song)
    np.testing.assert_array_equal(ahead.taggram, inline.taggram)
    assert ahead.duration == inline.duration


def test_prefetched_tagging_reports_a_silent_file(tmp_path, ckpt_path):
    song = tmp_path / "silent.wav"
    sf.write(song, np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        samplecnn.load(ckpt_path).tag(song)
    assert not [t for t in threading.enumerate() if t.name == "samplecnn-prefetch"]


def test_malloc_tuning_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    import platform
    import sys

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert devices.tune_malloc.__wrapped__() is True  # mallopt accepted both thresholds
    monkeypatch.setenv("SAMPLECNN_NO_MALLOC_TUNING", "1")
    assert devices.tune_malloc.__wrapped__() is False


@pytest.mark.parametrize("cores,expected", [(1, 0), (64, 2)])
def test_decoding_ahead_by_default_only_with_a_spare_core(monkeypatch, ckpt_path, cores, expected):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert samplecnn.load(ckpt_path).prefetch_blocks == expected
    assert Tagger(*checkpoint.read(ckpt_path), prefetch_blocks=1).prefetch_blocks == 1
