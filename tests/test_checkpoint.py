import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from samplecnn import checkpoint, models
from samplecnn.errors import CheckpointError, SampleCNNError

from conftest import SEG, write_checkpoint


def _outputs(model, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.randn(3, 1, SEG))


@pytest.mark.parametrize("arch,overrides", [("seed", {}), ("samplecnn", {}), ("rese2", {"multi_level": True})])
def test_round_trip_gives_identical_outputs(tmp_path, arch, overrides):
    torch.manual_seed(0)
    config = models.config_for(arch, n_tags=12, **overrides)
    model = models.SampleCNN(**config).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_var.uniform_(0.5, 2.0)
    info = checkpoint.ModelInfo(arch=arch, config=config, tags=[f"t{i}" for i in range(12)],
                                thresholds=[0.1 * (i % 9) for i in range(12)], provenance={"note": "test"})
    path = checkpoint.save(tmp_path / "m.safetensors", model, info)
    loaded, info2 = checkpoint.read(path)
    assert torch.equal(_outputs(model), _outputs(loaded))
    assert info2.arch == arch and info2.config == config
    assert info2.tags == info.tags and info2.thresholds == info.thresholds
    assert info2.sample_rate == 22050 and info2.segment_samples == 59049
    assert info2.provenance["note"] == "test" and "created" in info2.provenance
    assert not loaded.training


def test_half_precision_storage_halves_the_file_and_stays_close(tmp_path):
    full = write_checkpoint(tmp_path / "full.safetensors")
    model, info = checkpoint.read(full)
    half = checkpoint.save(tmp_path / "half.safetensors", model, info, half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    model_half, _ = checkpoint.read(half)
    assert next(model_half.parameters()).dtype == torch.float32
    diff = (torch.sigmoid(_outputs(model)) - torch.sigmoid(_outputs(model_half))).abs().max()
    assert 0 < diff < 1e-2


def test_save_never_replaces_an_existing_file_unless_asked(tmp_path):
    path = write_checkpoint(tmp_path / "m.safetensors")
    before = path.read_bytes()
    model, info = checkpoint.read(path)
    with pytest.raises(SampleCNNError, match="already exists"):
        checkpoint.save(path, model, info)
    assert path.read_bytes() == before
    checkpoint.save(path, model, info, overwrite=True)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def _one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        checkpoint.read(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_truncated_and_foreign_files_give_one_line_errors(tmp_path):
    good = write_checkpoint(tmp_path / "good.safetensors")
    data = good.read_bytes()
    _one_line_error(tmp_path / "nope.safetensors", "no such checkpoint")
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "half.safetensors", "truncated")
    (tmp_path / "header.safetensors").write_bytes(data[:100])
    _one_line_error(tmp_path / "header.safetensors", "not a samplecnn checkpoint")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    _one_line_error(tmp_path / "empty.safetensors", "not a samplecnn checkpoint")
    (tmp_path / "text.safetensors").write_text("hello, I am not a model\n" * 20)
    _one_line_error(tmp_path / "text.safetensors", "not a samplecnn checkpoint")
    save_file({"w": torch.zeros(3)}, tmp_path / "foreign.safetensors")
    _one_line_error(tmp_path / "foreign.safetensors", "without samplecnn metadata")
    _one_line_error(tmp_path, "not a file")


def _rewrite_metadata(src, dst, change):
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["samplecnn"])
    change(meta)
    header["__metadata__"]["samplecnn"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dst


def test_mismatched_metadata_and_weights_give_one_line_errors(tmp_path):
    good = write_checkpoint(tmp_path / "good.safetensors")
    cases = {
        "tags.safetensors": (lambda m: m["tags"].pop(), "metadata mismatch"),
        "arch.safetensors": (lambda m: m.update(arch="transformer"), "unknown architecture"),
        "rese.safetensors": (lambda m: m.update(arch="rese2", config=models.config_for("rese2")), "do not fit rese2"),
        "ntags.safetensors": (lambda m: m.update(config={**m["config"], "n_tags": 10}, tags=m["tags"][:10],
                                                 thresholds=m["thresholds"][:10]), "do not fit samplecnn"),
        "config.safetensors": (lambda m: m["config"].update(stem="fft"), "bad architecture config"),
        "format.safetensors": (lambda m: m.update(format="other"), "malformed"),
        "newer.safetensors": (lambda m: m.update(format_version=99), "newer samplecnn"),
    }
    for name, (change, match) in cases.items():
        _one_line_error(_rewrite_metadata(good, tmp_path / name, change), match)


def test_read_info_reads_the_header_only(tmp_path):
    path = write_checkpoint(tmp_path / "m.safetensors", thresholds=[0.25] * 50)
    info = checkpoint.read_info(path)
    assert info.arch == "samplecnn" and len(info.tags) == 50 and info.thresholds == [0.25] * 50
    assert info.tags[:3] == ["guitar", "classical", "slow"]


def test_model_id_names_the_file_and_its_bytes(tmp_path):
    from samplecnn.library.index import tagger_and_record

    path = write_checkpoint(tmp_path / "m.safetensors")
    first = checkpoint.model_id(path)
    assert first.startswith("m-") and len(first) == len("m-") + 16
    assert checkpoint.model_id(path, "mine").endswith(first[1:])
    _, record = tagger_and_record(str(path))
    assert record.model_id == first  # what serve reports is what a library stores
    model, info = checkpoint.read(path)
    info.provenance["note"] = "changed"
    checkpoint.save(path, model, info, overwrite=True)
    assert checkpoint.model_id(path) != first
