"""`samplecnn export-onnx`: the ONNX model computes what PyTorch computes and carries the checkpoint's metadata."""

import numpy as np
import pytest
import torch

from samplecnn import checkpoint
from samplecnn.cli import main

from conftest import SEG, SR, music_like, write_checkpoint

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = write_checkpoint(folder / "model.safetensors")
    out = folder / "model.onnx"
    assert main(["export-onnx", str(ckpt), str(out)]) == 0
    return ckpt, out


def test_onnx_outputs_match_pytorch(exported):
    ckpt, out = exported
    model, info = checkpoint.read(ckpt)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 3):  # the batch axis is dynamic
        x = np.stack([music_like(SEG / SR, seed=i) for i in range(n)])[:, None, :]
        probs, emb = session.run(["probabilities", "embedding"], {"audio": x})
        with torch.no_grad():
            ref_emb = model.embed(torch.from_numpy(x))
            ref = torch.sigmoid(model.classifier(ref_emb)).numpy()
        assert probs.shape == (n, len(info.tags))
        assert np.abs(probs - ref).max() < 1e-4
        assert np.abs(emb - ref_emb.numpy()).max() < 1e-4 * max(1.0, float(np.abs(emb).max()))


def test_onnx_file_carries_the_tags_and_rates(exported):
    from samplecnn.onnx_export import read_metadata

    ckpt, out = exported
    info = checkpoint.read_info(ckpt)
    meta = read_metadata(out)
    assert meta["tags"] == info.tags
    assert meta["thresholds"] == pytest.approx(info.thresholds)
    assert meta["sample_rate"] == info.sample_rate and meta["segment_samples"] == info.segment_samples
    assert meta["arch"] == info.arch


def test_export_refuses_to_overwrite(exported, capsys):
    ckpt, out = exported
    assert main(["export-onnx", str(ckpt), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
