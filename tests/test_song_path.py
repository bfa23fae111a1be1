"""One song-level path: every consumer runs segments through Tagger.run_segments and builds a song with
Tagger.song_result, so the library index stores exactly what Tagger.tag answers (not merely close values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import samplecnn
from samplecnn import checkpoint
from samplecnn.inference import SegmentOutputs, song_embedding, song_scores
from samplecnn.library import index, store
from samplecnn.segments import SampleCounter, segment_batches

from conftest import SEG, SR, music_like, write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained checkpoint whose thresholds sit at its own scores of a reference signal, so that the other
    files' decisions hold some tags and not others (the 0.5 default may decide all or none)."""
    folder = tmp_path_factory.mktemp("song-path")
    plain = write_checkpoint(folder / "plain.safetensors")
    reference = samplecnn.load(plain, device="cpu").tag(music_like(2 * SEG / SR, seed=7), sr=SR).scores
    return write_checkpoint(folder / "spread.safetensors", thresholds=[float(s) for s in reference])


def test_run_segments_gives_the_rows_of_tags_taggram_and_embeds_embeddings(ckpt):
    tagger = samplecnn.load(ckpt, device="cpu", batch_size=3)
    signal = music_like(7.3 * SEG / SR, seed=4)  # 7 segments: batches of 3, 3 and 1, and a dropped tail
    result = tagger.tag(signal, sr=SR)
    batches = list(segment_batches([signal], SEG, SEG, tagger.batch_size))
    outs = [tagger.run_segments(b) for b in batches]
    assert all(isinstance(o, SegmentOutputs) for o in outs)
    # the same batches as tag's: the very same numbers
    np.testing.assert_array_equal(np.concatenate([o.probabilities for o in outs]), result.taggram)
    np.testing.assert_array_equal(np.concatenate([o.embeddings for o in outs]),
                                  tagger.embed(signal, sr=SR, per_segment=True))
    np.testing.assert_array_equal(np.concatenate([o.probabilities for o in outs]), tagger.taggram(signal))

    whole = tagger.run_segments(np.concatenate(batches))  # one batch of 7: equal up to float summation order
    assert whole.probabilities.shape == (7, 50) and whole.probabilities.dtype == np.float32
    assert whole.embeddings.shape == (7, tagger.embed_dim) and whole.embeddings.dtype == np.float32
    np.testing.assert_allclose(whole.probabilities, result.taggram, atol=1e-5)
    # the probabilities are the model's own (the checkpoint's network, unfolded, no inference module)
    model, _ = checkpoint.read(ckpt)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(np.concatenate(batches)).unsqueeze(1))).numpy()
    np.testing.assert_allclose(whole.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(song_embedding(whole.embeddings), tagger.embed(signal, sr=SR), atol=1e-5)

    for bad in (np.zeros((2, SEG - 1), np.float32), np.zeros(SEG, np.float32)):
        with pytest.raises(ValueError, match="run_segments wants"):
            tagger.run_segments(bad)


def test_song_result_is_what_tag_gives(ckpt):
    tagger = samplecnn.load(ckpt, device="cpu")
    for seconds, hop in ((3.5 * SEG / SR, None), (0.4, None), (4 * SEG / SR, SEG / 2 / SR)):
        signal = music_like(seconds, seed=5)
        result = tagger.tag(signal, sr=SR, hop=hop)
        hop_samples = None if hop is None else int(round(hop * SR))
        again = tagger.song_result(result.taggram, len(signal), hop_samples)
        np.testing.assert_array_equal(again.scores, result.scores)
        np.testing.assert_array_equal(again.scores, song_scores(result.taggram))
        np.testing.assert_array_equal(again.segment_starts, result.segment_starts)
        assert again.decisions == result.decisions
        assert (again.duration, again.padded, again.model) == (result.duration, result.padded, result.model)
        assert result.padded == (len(signal) < SEG)


def test_the_index_stores_exactly_what_tag_gives(tmp_path, ckpt):
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "three.wav", music_like(3.4 * SEG / SR, seed=1), SR)             # 3 segments + a tail
    sf.write(music / "jingle.flac", music_like(0.5, seed=2), SR)                       # zero-padded
    sf.write(music / "cd.wav", music_like(6.0, sr=44100, channels=2, seed=3), 44100)  # resampled, stereo
    db = tmp_path / "library.sqlite"
    # Exact equality needs the same batches: batch 1 (the CPU default in fp32) makes the index's batches, which
    # mix files, the same as tag's.
    report = index.index([music], db, model=str(ckpt), workers=2, batch_size=1, device="cpu", taggrams=True,
                         progress=False)
    assert report.new == 3 and not report.failures
    tagger = samplecnn.load(ckpt, device="cpu", batch_size=1)
    with store.Library(db) as lib:
        model = lib.model()
        tracks = {Path(t.path).name: t for t in lib.tracks(model.model_id, taggram=True)}
    assert sorted(tracks) == ["cd.wav", "jingle.flac", "three.wav"]
    for t in tracks.values():
        result = tagger.tag(t.path)
        np.testing.assert_array_equal(t.scores, result.scores)
        assert t.decisions == result.decisions
        assert t.duration == result.duration and t.padded == result.padded
        assert t.segments == len(result.taggram)
        np.testing.assert_array_equal(t.embedding, tagger.embed(t.path))
        np.testing.assert_array_equal(t.taggram, result.taggram.astype(np.float16))  # stored as float16
    assert tracks["jingle.flac"].padded and tracks["jingle.flac"].segments == 1
    assert tracks["three.wav"].segments == 3 and not tracks["three.wav"].padded
    assert any(0 < len(t.decisions) < len(model.tags) for t in tracks.values())  # the decisions were a real test


def test_one_sample_counter_counts_what_flows_through():
    counter = SampleCounter()
    blocks = [np.ones(5, np.float32), np.ones(7, np.float32), np.ones(0, np.float32)]
    batches = list(segment_batches(counter.count(blocks), 4, 4, 2))
    assert counter.n == 12 and sum(len(b) for b in batches) == 3
