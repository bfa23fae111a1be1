import json

import numpy as np
import pytest
import soundfile as sf
import torch

import samplecnn
from samplecnn import checkpoint
from samplecnn.errors import AudioError, SampleCNNError
from samplecnn.segments import segment_batches

from conftest import SEG, SR, music_like, write_checkpoint


def _expected_taggram(path, signal):
    """Ground truth computed without the inference module: the model on each full segment, one at a time."""
    model, _ = checkpoint.read(path)
    n = max(1, len(signal) // SEG)
    padded = np.zeros(n * SEG, dtype=np.float32)
    padded[: min(len(signal), n * SEG)] = signal[: n * SEG]
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(padded).view(n, 1, SEG))).numpy()


# -- segmenting ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,hop,expected_starts", [
    (30, 10, [0, 10, 20]),          # exact multiple
    (39, 10, [0, 10, 20]),          # the 9-sample tail is dropped
    (30, 5, [0, 5, 10, 15, 20]),    # overlap
    (50, 15, [0, 15, 30]),          # hop longer than a segment skips samples
    (10, 10, [0]),                  # exactly one segment
])
@pytest.mark.parametrize("block", [1, 3, 7, 10, 64])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_segments_are_the_same_whatever_the_block_and_batch_sizes(n, hop, expected_starts, block, batch_size):
    x = np.arange(n, dtype=np.float32)
    blocks = [x[i:i + block] for i in range(0, n, block)]
    batches = list(segment_batches(blocks, 10, hop, batch_size))
    assert all(len(b) <= batch_size for b in batches)
    got = np.concatenate(batches)
    assert np.array_equal(got, np.stack([x[s:s + 10] for s in expected_starts]))


def test_a_stream_shorter_than_one_segment_is_zero_padded():
    (batch,) = list(segment_batches([np.ones(3, np.float32), np.ones(2, np.float32)], 10, 10, 4))
    assert batch.shape == (1, 10)
    assert np.array_equal(batch[0], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


# -- tagging ---------------------------------------------------------------------------------------------------------

def test_song_scores_are_the_mean_of_the_segment_outputs(ckpt_path):
    signal = music_like(4.5 * SEG / SR)  # 4 full segments + a dropped half-segment tail
    result = samplecnn.load(ckpt_path).tag(signal, sr=SR)
    expected = _expected_taggram(ckpt_path, signal)
    assert result.taggram.shape == (4, 50)
    np.testing.assert_allclose(result.taggram, expected, atol=1e-5)
    np.testing.assert_allclose(result.scores, expected.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(result.segment_starts, np.arange(4) * SEG / SR)
    assert result.duration == pytest.approx(len(signal) / SR)
    assert not result.padded


def test_batch_size_does_not_change_the_result(ckpt_path):
    signal = music_like(5 * SEG / SR, seed=3)
    one = samplecnn.load(ckpt_path, batch_size=1).tag(signal, sr=SR)
    many = samplecnn.load(ckpt_path, batch_size=3).tag(signal, sr=SR)
    np.testing.assert_allclose(one.taggram, many.taggram, atol=1e-5)


def test_overlapping_hop(ckpt_path):
    signal = music_like(3 * SEG / SR)
    result = samplecnn.load(ckpt_path).tag(signal, sr=SR, hop=SEG / 2 / SR)
    assert len(result.segment_starts) == 5  # starts at 0, .5, 1, 1.5, 2 segments
    np.testing.assert_allclose(result.segment_starts, np.arange(5) * (SEG // 2 + 0.5) / SR, atol=1e-4)
    with pytest.raises(SampleCNNError, match="--hop"):
        samplecnn.load(ckpt_path).tag(signal, sr=SR, hop=0)


def test_a_song_shorter_than_one_segment_is_padded(ckpt_path):
    signal = music_like(1.0)
    result = samplecnn.load(ckpt_path).tag(signal, sr=SR)
    assert result.padded and result.taggram.shape == (1, 50)
    np.testing.assert_allclose(result.taggram, _expected_taggram(ckpt_path, signal), atol=1e-5)


def test_file_and_in_memory_signal_agree_at_any_rate_and_channel_count(ckpt_path, tmp_path):
    stereo = music_like(8.0, sr=44100, channels=2)
    sf.write(tmp_path / "song.wav", stereo, 44100, subtype="FLOAT")
    tagger = samplecnn.load(ckpt_path)
    from_file = tagger.tag(tmp_path / "song.wav")
    from_array = tagger.tag(stereo, sr=44100)
    assert from_file.path.endswith("song.wav") and from_array.path is None
    assert from_file.taggram.shape == from_array.taggram.shape == (2, 50)
    np.testing.assert_allclose(from_file.taggram, from_array.taggram, atol=1e-4)
    # the same as tagging the mono mix at 22050 Hz with the checkpoint's own rate
    mono = samplecnn.audio.to_mono_resampled(stereo, 44100, SR)
    np.testing.assert_allclose(from_array.taggram, _expected_taggram(ckpt_path, mono), atol=1e-5)
    torch_input = tagger.tag(torch.from_numpy(stereo), sr=44100)
    np.testing.assert_allclose(torch_input.taggram, from_array.taggram, atol=1e-6)


def test_top_decisions_and_to_dict(tmp_path):
    thresholds = [0.0 if i % 2 == 0 else 1.01 for i in range(50)]  # even tags always on, odd tags never
    path = write_checkpoint(tmp_path / "t.safetensors", thresholds=thresholds)
    result = samplecnn.load(path).tag(music_like(6.0), sr=SR)
    top = result.top(5)
    assert len(top) == 5 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert top[0][1] == pytest.approx(result.scores.max())
    assert len(result.top(0)) == 50
    even = {result.tags[i] for i in range(0, 50, 2)}
    assert set(result.decisions) == even
    scores = dict(zip(result.tags, result.scores))
    assert [scores[t] for t in result.decisions] == sorted((scores[t] for t in even), reverse=True)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["segments"] == 2 and len(d["taggram"]) == 2 and len(d["taggram"][0]) == 50
    assert d["top"][0]["tag"] == top[0][0] and set(d["decisions"]) == even
    assert d["scores"]["guitar"] == pytest.approx(scores["guitar"], abs=1e-4)
    assert "taggram" not in result.to_dict(taggram=False)


def test_embed_returns_the_song_mean_of_segment_features(ckpt_path):
    signal = music_like(3 * SEG / SR)
    tagger = samplecnn.load(ckpt_path)
    per_segment = tagger.embed(signal, sr=SR, per_segment=True)
    assert per_segment.shape == (3, 512)
    np.testing.assert_allclose(tagger.embed(signal, sr=SR), per_segment.mean(axis=0), atol=1e-6)
    model, _ = checkpoint.read(ckpt_path)
    with torch.no_grad():
        first = model.embed(torch.from_numpy(signal[:SEG]).view(1, 1, SEG)).numpy()[0]
    np.testing.assert_allclose(per_segment[0], first, atol=1e-5)


def test_bad_in_memory_signals_are_user_errors(ckpt_path):
    tagger = samplecnn.load(ckpt_path)
    with pytest.raises(SampleCNNError, match="sample rate"):
        tagger.tag(music_like(3.0))
    bad = music_like(3.0)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        tagger.tag(bad, sr=SR)
    with pytest.raises(AudioError, match="silent"):
        tagger.tag(np.zeros(SR * 3, np.float32), sr=SR)
    with pytest.raises(AudioError):
        tagger.tag(np.zeros(0, np.float32), sr=SR)


def test_load_finds_the_default_and_names_the_problem_otherwise(tmp_path):
    assert samplecnn.load().name == "default"
    with pytest.raises(SampleCNNError, match="no such checkpoint"):
        samplecnn.load(tmp_path / "missing.safetensors")
    with pytest.raises(SampleCNNError, match="unknown model"):
        samplecnn.load("fancy-model")
