"""The musicnn teacher against the original TensorFlow outputs saved beside the checkout (the musicnn-reference
folder of the shared data; skipped where absent), and the NumPy reader of TF checkpoints on its own (real
checkpoints, then damaged copies of them).

Tolerances, by what each stage can differ in: network only 1e-5, log-mel patches 5e-4 (float16 rounding may flip a value
into the next bin), mel power rtol 1e-5, end to end from the .wav 1e-4."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn import audio
from samplecnn.errors import SampleCNNError
from samplecnn.tags import MTAT_TOP50
from samplecnn.teachers import musicnn as M
from samplecnn.teachers import tf_checkpoint as tfc

from conftest import music_like

REF = Path(__file__).parents[2] / "shared" / "musicnn-reference"
CLIPS = {"stk_skyvibe": 5, "hw_fruit": 5, "sonicpi_amen": 2}   # name: number of patches


def _installed() -> bool:
    try:
        return all(M.checkpoint_dir(n) for n in M.TEACHERS)
    except SampleCNNError:
        return False


needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference outputs not found at {REF}")
NOT_INSTALLED = f"musicnn's checkpoints are not installed ({M.INSTALL_HINT}, done by scripts/setup.sh)"
needs_musicnn = pytest.mark.skipif(not _installed(), reason=NOT_INSTALLED)
WEIGHT_TOTALS = {"MTT_musicnn": 792_079, "MTT_vgg": 607_030}   # parameters of the two TF checkpoints as shipped


def ref(name: str) -> np.ndarray:
    return np.load(REF / name)


@pytest.fixture(scope="module")
def teachers():
    return {name: M.load_teacher(name) for name in M.TEACHERS}


# ----------------------------------------------------------------------------------------------------------------
# TF checkpoint reader


def test_crc32c_known_values():
    assert tfc.crc32c(b"") == 0
    assert tfc.crc32c(b"123456789") == 0xE3069283          # the standard check value
    assert tfc.crc32c(bytes(32)) == 0x8A9136AA              # RFC 3720 B.4 test vectors
    assert tfc.crc32c(b"\xff" * 32) == 0x62A8AB43


def test_crc32c_lanes_agree_with_the_byte_loop():
    data = np.random.default_rng(0).integers(0, 256, 3 * tfc._SERIAL_MAX + 17, dtype=np.uint8)
    for n in (tfc._SERIAL_MAX - 1, tfc._SERIAL_MAX, len(data)):
        assert tfc.crc32c(data[:n]) == tfc._serial(0xFFFFFFFF, data[:n].tobytes()) ^ 0xFFFFFFFF


def test_protobuf_varints():
    assert tfc._varint(b"\x96\x01", 0) == (150, 2)
    minus_one = b"\xff" * 9 + b"\x01"
    assert tfc._signed64(tfc._varint(minus_one, 0)[0]) == -1
    with pytest.raises(ValueError):
        tfc._varint(b"\x80\x80", 0)


@needs_musicnn
@pytest.mark.parametrize("name", M.TEACHERS)
def test_reader_names_shapes_totals(name):
    folder = M.checkpoint_dir(name)
    entries, shards, order = tfc.read_index(folder)
    assert (shards, order) == (1, "<")
    assert {"beta1_power", "beta2_power"} <= set(entries)          # the bundle holds Adam state too
    weights = tfc.read_checkpoint(folder, weights_only=True)
    assert not any(tfc.is_training_state(n) for n in weights)
    assert all(v.dtype == np.float32 for v in weights.values())
    assert sum(v.size for v in weights.values()) == WEIGHT_TOTALS[name]
    everything = tfc.read_checkpoint(folder)
    assert set(everything) == set(entries)
    assert len(everything) > len(weights)
    if name == "MTT_musicnn":
        assert weights["conv2d/kernel"].shape == (7, 38, 1, 204)
        assert weights["conv2d_5/kernel"].shape == (7, 561, 1, 64)
        assert weights["dense/kernel"].shape == (1506, 200)
        assert len(weights) == 64
    else:
        assert weights["1CNN/kernel"].shape == (3, 3, 1, 128)
        assert weights["dense/kernel"].shape == (256, 50)
        assert len(weights) == 36
    assert weights["batch_normalization/moving_variance"].shape == (1,)


@needs_musicnn
def test_reader_selects_by_name():
    folder = M.checkpoint_dir("MTT_vgg")
    got = tfc.read_checkpoint(folder / ".index", ["dense/bias", "1CNN/kernel"])
    assert sorted(got) == ["1CNN/kernel", "dense/bias"] and got["dense/bias"].shape == (50,)
    with pytest.raises(tfc.TFCheckpointError, match="no tensor 'nope'"):
        tfc.read_checkpoint(folder, ["nope"])


@pytest.fixture()
def vgg_copy(tmp_path):
    """A writable copy of the MTT_vgg bundle, to damage."""
    if not _installed():
        pytest.skip(NOT_INSTALLED)
    src = M.checkpoint_dir("MTT_vgg")
    for f in (".index", ".data-00000-of-00001"):
        shutil.copy(src / f, tmp_path / f)
    return tmp_path


def _index_block_end(index: bytes) -> int:
    """Offset of the index block's trailer (its compression byte), from the footer's handle."""
    footer = index[-tfc._FOOTER_SIZE:]
    _, _, pos = tfc._handle(footer)
    offset, size, _ = tfc._handle(footer, pos)
    return offset + size


def test_reader_refuses_compressed_blocks(vgg_copy):
    index = bytearray((vgg_copy / ".index").read_bytes())
    index[_index_block_end(bytes(index))] = 1          # snappy
    (vgg_copy / ".index").write_bytes(bytes(index))
    with pytest.raises(tfc.TFCheckpointError, match="snappy-compressed"):
        tfc.read_checkpoint(vgg_copy)


def test_reader_detects_a_damaged_index(vgg_copy):
    index = bytearray((vgg_copy / ".index").read_bytes())
    index[40] ^= 0x01                                  # inside the first data block
    (vgg_copy / ".index").write_bytes(bytes(index))
    with pytest.raises(tfc.TFCheckpointError, match="CRC-32C"):
        tfc.read_index(vgg_copy)


def test_reader_detects_a_damaged_tensor(vgg_copy):
    entry = tfc.read_index(vgg_copy)[0]["dense/kernel"]
    data = bytearray((vgg_copy / ".data-00000-of-00001").read_bytes())
    data[entry.offset + 100] ^= 0x40
    (vgg_copy / ".data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(tfc.TFCheckpointError, match="'dense/kernel' fails its CRC-32C"):
        tfc.read_checkpoint(vgg_copy, weights_only=True)
    assert tfc.read_checkpoint(vgg_copy, ["dense/kernel"], verify=False)["dense/kernel"].shape == (256, 50)


def test_reader_one_line_errors(vgg_copy, tmp_path):
    data = vgg_copy / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(tfc.TFCheckpointError, match="truncated"):
        tfc.read_checkpoint(vgg_copy)
    data.unlink()
    with pytest.raises(tfc.TFCheckpointError, match="data file is missing"):
        tfc.read_checkpoint(vgg_copy)
    (vgg_copy / ".index").write_bytes(b"\0" * 100)
    with pytest.raises(tfc.TFCheckpointError, match="wrong magic number"):
        tfc.read_index(vgg_copy)
    with pytest.raises(tfc.TFCheckpointError, match="no such TensorFlow checkpoint index") as err:
        tfc.read_index(tmp_path / "missing")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------------------------
# input pipeline without the reference


def test_mel_filterbank_is_slaney_area_normalised():
    w = M.mel_filterbank()
    assert w.shape == (96, 257) and w.dtype == np.float32
    assert abs(float(w.max()) - 0.0320) < 5e-5                # the largest weight, per the reference README
    assert (np.count_nonzero(w, axis=1) > 0).all()            # no empty band at 16 kHz / 512 points


def test_patches_drop_the_tail():
    assert M.to_patches(np.zeros((938, 96), np.float32)).shape == (5, 187, 96)
    assert M.to_patches(np.zeros((429, 96), np.float32)).shape == (2, 187, 96)
    assert M.to_patches(np.zeros((186, 96), np.float32)).shape == (0, 187, 96)
    assert len(M.melpower(np.zeros(M.MIN_SAMPLES, np.float32))) == M.PATCH_FRAMES


# ----------------------------------------------------------------------------------------------------------------
# against the TensorFlow reference


@needs_ref
def test_tag_order_matches_reference():
    assert (REF / "tags.txt").read_text().splitlines() == list(MTAT_TOP50)


@needs_ref
@needs_musicnn
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", M.TEACHERS)
def test_network_only(teachers, name, clip):
    out = teachers[name].patch_outputs(ref(f"{clip}_patches.npy"))
    assert out.shape == (CLIPS[clip], 50)
    np.testing.assert_allclose(out, ref(f"{clip}_{name}_taggram.npy"), rtol=0, atol=1e-5)


@needs_ref
@pytest.mark.parametrize("clip", CLIPS)
def test_features_from_the_16k_waveform(clip):
    wave = ref(f"{clip}_wave16k.npy")
    power = M.melpower(wave)
    np.testing.assert_allclose(power, ref(f"{clip}_melpower.npy"), rtol=1e-5, atol=0)
    patches = M.to_patches(M.log_compress(power))
    assert patches.shape == (CLIPS[clip], 187, 96)
    np.testing.assert_allclose(patches, ref(f"{clip}_patches.npy"), rtol=0, atol=5e-4)


@needs_ref
@needs_musicnn
@pytest.mark.parametrize("name", M.TEACHERS)
def test_intermediate_layers_of_patch0(teachers, name):
    layers = {}
    teachers[name].patch_outputs(ref("stk_skyvibe_patches.npy")[:1], layers=layers)
    expected = np.load(REF / f"stk_skyvibe_{name}_layers_patch0.npz")
    for key in expected.files:
        want = expected[key]
        got = layers[key].reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=key)


@needs_ref
@pytest.mark.parametrize("clip", CLIPS)
def test_samplecnn_audio_reproduces_the_16k_waveform(clip):
    """samplecnn.audio (streaming soxr HQ) gives librosa's waveform, except the one trailing zero that librosa's
    ceil(N * 16000 / sr) length rule may append (sonicpi_amen: 109,714 + 1); a file's source length is not known."""
    wave, want = audio.decode_mono(REF / f"{clip}.wav", sr=16000), ref(f"{clip}_wave16k.npy")
    assert 0 <= len(want) - len(wave) <= 1 and not want[len(wave):].any()
    np.testing.assert_allclose(wave, want[:len(wave)], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def tagged(teachers):
    """End-to-end results, decoded from the .wav files by samplecnn.audio (soxr HQ)."""
    return {(name, clip): teachers[name].tag(REF / f"{clip}.wav") for name in M.TEACHERS for clip in CLIPS}


@needs_ref
@needs_musicnn
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", M.TEACHERS)
def test_end_to_end_from_wav(tagged, name, clip):
    result = tagged[name, clip]
    assert result.tags == list(MTAT_TOP50) and result.model == name and not result.padded
    np.testing.assert_allclose(result.taggram, ref(f"{clip}_{name}_taggram.npy"), rtol=0, atol=1e-4)
    mean = ref(f"{clip}_{name}_mean.npy")
    np.testing.assert_allclose(result.scores, mean, rtol=0, atol=1e-4)
    assert [t for t, _ in result.top(5)] == [MTAT_TOP50[i] for i in np.argsort(-mean, kind="stable")[:5]]
    np.testing.assert_allclose(result.segment_starts, 2.992 * np.arange(CLIPS[clip]), atol=1e-9)


@needs_ref
@needs_musicnn
def test_in_memory_signal_matches_the_file(teachers):
    samples, sr = sf.read(REF / "sonicpi_amen.wav", dtype="int16")
    result = teachers["MTT_musicnn"].tag(samples, sr=sr)
    assert result.duration == pytest.approx(109_715 / 16000)         # librosa's ceil(N * 16000 / sr) rule
    np.testing.assert_allclose(result.taggram, ref("sonicpi_amen_MTT_musicnn_taggram.npy"), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# behaviour


@needs_musicnn
def test_short_signal_is_padded_to_one_patch(teachers):
    result = teachers["MTT_vgg"].tag(music_like(1.0), sr=22050)
    assert result.padded and result.taggram.shape == (1, 50)
    assert np.isfinite(result.taggram).all()


@needs_musicnn
def test_user_errors_are_one_line(teachers, monkeypatch):
    with pytest.raises(SampleCNNError, match="needs its sample rate"):
        teachers["MTT_vgg"].tag(music_like(4.0))
    with pytest.raises(SampleCNNError, match="unknown musicnn teacher 'MSD_vgg'"):
        M.load_teacher("MSD_vgg")
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SampleCNNError, match="not installed: pip install --no-deps musicnn==0.1.0"):
        M.load_teacher("MTT_musicnn")


@needs_musicnn
def test_wrong_checkpoint_for_the_model_is_refused():
    with pytest.raises(tfc.TFCheckpointError, match="not a musicnn checkpoint of this model"):
        M.load_teacher("MTT_musicnn", path=M.checkpoint_dir("MTT_vgg"))
