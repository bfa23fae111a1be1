"""Crafted and damaged checkpoint files: every one is refused with one line naming the file and the reason, by the
library (read_info, load) and by each command that reads a checkpoint (`info`, `info --json`, `tag --model`) run as
a real program, and never with a traceback. Legitimate checkpoints keep loading as they did."""

import json
import math
import struct
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from samplecnn import checkpoint, models, pretrained
from samplecnn.errors import CheckpointError

from conftest import SR, music_like, write_checkpoint


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _pack(header: bytes, data: bytes) -> bytes:
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _header(change):
    """A builder that edits the safetensors header (a dict) and keeps the tensor bytes."""
    def build(raw):
        header, data = _split(raw)
        change(header)
        return _pack(json.dumps(header).encode(), data)
    return build


def _meta(change):
    """A builder that edits the samplecnn metadata (a dict) inside the header."""
    def edit(header):
        meta = json.loads(header["__metadata__"]["samplecnn"])
        change(meta)
        header["__metadata__"]["samplecnn"] = json.dumps(meta)
    return _header(edit)


def _raw_meta(text):
    return _header(lambda h: h["__metadata__"].update(samplecnn=text))


def _config(**values):
    return _meta(lambda m: m["config"].update(values))


def _set(**values):
    return _meta(lambda m: m.update(values))


def _tensor(name, **values):
    return _header(lambda h: h[name].update(values))


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_header(raw):
    _, data = _split(raw)
    return _pack(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", data)


def _deep_metadata_text():
    return '{"format": "samplecnn-checkpoint", "provenance": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _huge_header(raw):
    header, data = _split(raw)
    return _pack(json.dumps(header).encode() + b" " * (17 << 20), data)


def _overlap(header):
    header["stem.1.bias"]["data_offsets"] = list(header["stem.1.weight"]["data_offsets"])


def _transpose(header):
    header["classifier.weight"]["shape"] = header["classifier.weight"]["shape"][::-1]


def _grow_last(header):
    last = max((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][1])
    last["data_offsets"] = [last["data_offsets"][0] + 10 ** 12, last["data_offsets"][1] + 10 ** 12]


def _short_span(header):
    begin, end = header["classifier.bias"]["data_offsets"]
    header["classifier.bias"]["data_offsets"] = [begin, end - 4]


def _rename(header):
    header["classifier.bias2"] = header.pop("classifier.bias")


def _replace_tag(i, value):
    def change(meta):
        meta["tags"][i] = value
    return _meta(change)


def _replace_threshold(value):
    def change(meta):
        meta["thresholds"][7] = value
    return _meta(change)


# id -> (how to make the file from a good checkpoint's bytes, what the one-line reason says)
CASES = {
    # the safetensors framing
    "short file": (lambda raw: raw[:5], "no safetensors header"),
    "header truncated": (lambda raw: raw[:200], "no safetensors header"),
    "header length past the end": (lambda raw: struct.pack("<Q", len(raw)) + raw[8:], "no safetensors header"),
    "header length huge": (lambda raw: struct.pack("<Q", 2 ** 64 - 1) + raw[8:], "no safetensors header"),
    "header over the size cap": (_huge_header, "over the 16 MiB limit"),
    "header not JSON": (lambda raw: _pack(b"{not json", _split(raw)[1]), "unreadable safetensors header"),
    "header not UTF-8": (lambda raw: _pack(b'{"\xff\xfe": 1}', _split(raw)[1]), "unreadable safetensors header"),
    "header NaN constant": (lambda raw: _pack(b'{"a": NaN}', _split(raw)[1]), "unreadable safetensors header"),
    "header not an object": (lambda raw: _pack(b"[1, 2, 3]", _split(raw)[1]), "not a JSON object"),
    "header nested deeply": (_deep_header, "nested too deeply"),
    "__metadata__ not a dict": (_header(lambda h: h.update(__metadata__=["samplecnn"])), "__metadata__"),
    "__metadata__ value not a string": (_header(lambda h: h["__metadata__"].update(samplecnn={"a": 1})),
                                        "__metadata__"),
    "no samplecnn metadata": (_header(lambda h: h.pop("__metadata__")), "without samplecnn metadata"),
    "tensor entry an integer": (_header(lambda h: h.update({"classifier.bias": 7})), "classifier.bias"),
    "tensor entry extra key": (_tensor("classifier.bias", extra=1), "classifier.bias"),
    "data_offsets a string": (_tensor("classifier.bias", data_offsets="0,200"), "data_offsets"),
    "data_offsets negative": (_tensor("stem.0.bias", data_offsets=[-8, 0]), "data_offsets"),
    "data_offsets span the wrong size": (_header(_short_span), "data_offsets"),
    "data_offsets out of range": (_header(_grow_last), "truncated"),
    "data_offsets overlapping": (_header(_overlap), "overlap"),
    "trailing bytes": (lambda raw: raw + b"\0" * 16, "after the tensor data"),
    "unknown dtype": (_tensor("classifier.bias", dtype="Q8"), "dtype"),
    "shape a string": (_tensor("classifier.bias", shape="50"), "shape"),
    "shape negative": (_tensor("classifier.bias", shape=[-50]), "shape"),
    "integer weights": (_tensor("stem.0.weight", dtype="I32"), "stored as I32"),
    "float step counter": (_tensor("stem.1.num_batches_tracked", dtype="F64"), "stored as F64"),
    "shape not the model's": (_header(_transpose), "do not fit samplecnn"),
    "tensor renamed": (_header(_rename), "do not fit samplecnn"),
    # the samplecnn metadata
    "metadata not JSON": (_raw_meta("{oops"), "malformed"),
    "metadata not an object": (_raw_meta("[1, 2]"), "malformed"),
    "metadata nested deeply": (_raw_meta(_deep_metadata_text()), "nested too deeply"),
    "provenance nested deeply": (_meta(lambda m: m["provenance"].update(deep=_nested(600))), "nested too deeply"),
    "format other": (_set(format="other"), "malformed"),
    "format_version a string": (_set(format_version="1"), "format_version"),
    "format_version newer": (_set(format_version=99), "newer samplecnn"),
    "unknown field": (_set(turbo=True), "unknown metadata field"),
    "missing field": (_meta(lambda m: m.pop("tags")), "missing metadata field"),
    "arch unknown": (_set(arch="transformer"), "unknown architecture"),
    "arch not a string": (_set(arch=["samplecnn"]), "unknown architecture"),
    "config not a dict": (_set(config=[1, 2]), "config"),
    "config unknown option": (_config(turbo=True), "unknown option"),
    "config option of the wrong type": (_config(width="1.0"), "width"),
    "n_tags a boolean": (_config(n_tags=True), "n_tags"),
    "n_tags zero": (_set(config={**models.config_for("samplecnn", width=0.125), "n_tags": 0}, tags=[], thresholds=[]),
                    "n_tags"),
    "n_tags not len(tags)": (_config(n_tags=10), "metadata mismatch"),
    "width 1e6": (_config(width=1e6), "width"),
    "width zero": (_config(width=0), "width"),
    "width NaN": (_config(width=math.nan), "width"),
    "init unknown": (_config(init="zeros"), "bad architecture config"),
    "stem unknown": (_config(stem="fft"), "bad architecture config"),
    "dropout 2": (_config(dropout=2.0), "dropout"),
    "bn_eps negative": (_config(bn_eps=-1.0), "bn_eps"),
    "amplifying_ratio huge": (_config(amplifying_ratio=10 ** 6), "amplifying_ratio"),
    "tags not a list": (_set(tags="guitar"), "tags"),
    "integer tag names": (_set(tags=list(range(50))), "tags"),
    "empty tag": (_replace_tag(3, ""), "tags"),
    "tag with a newline": (_replace_tag(3, "hard\nrock"), "tags"),
    "duplicate tags": (_replace_tag(1, "guitar"), "duplicate"),
    "string thresholds": (_meta(lambda m: m.update(thresholds=["0.5"] * 50)), "thresholds"),
    "NaN threshold": (_replace_threshold(math.nan), "thresholds"),
    "negative threshold": (_replace_threshold(-0.5), "thresholds"),
    "infinite threshold": (_replace_threshold(math.inf), "thresholds"),
    "boolean threshold": (_replace_threshold(True), "thresholds"),
    "too few thresholds": (_meta(lambda m: m["thresholds"].pop()), "metadata mismatch"),
    "sample_rate 0": (_set(sample_rate=0), "sample_rate"),
    "sample_rate 16000": (_set(sample_rate=16000), "sample_rate"),
    "sample_rate a string": (_set(sample_rate="22050"), "sample_rate"),
    "segment_samples 0": (_set(segment_samples=0), "segment_samples"),
    "provenance not a dict": (_set(provenance=["trained"]), "provenance"),
}


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    """A small legitimate checkpoint (MTAT top-50 tags) as bytes: every crafted file starts from it."""
    path = write_checkpoint(tmp_path_factory.mktemp("good") / "good.safetensors", width=0.125)
    return path.read_bytes()


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, music_like(1.0), SR)
    return path


def _crafted(tmp_path, good_bytes, case):
    make, _ = CASES[case]
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(make(good_bytes))
    return path


@pytest.mark.parametrize("case", CASES)
def test_the_library_refuses_each_crafted_file_with_one_line(tmp_path, good_bytes, case):
    path = _crafted(tmp_path, good_bytes, case)
    for read in (checkpoint.read_info, checkpoint.read):
        with pytest.raises(CheckpointError) as e:
            read(path)
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        assert CASES[case][1] in e.value.reason, message


def _cli(*argv):
    return subprocess.Popen([sys.executable, "-m", "samplecnn", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# Through the command line: the audit's cases and one of each other kind (every case goes through the library above;
# a process per command and case costs seconds of start-up each).
CLI_CASES = ("header nested deeply", "__metadata__ not a dict", "data_offsets a string", "tensor entry an integer",
             "sample_rate 0", "segment_samples 0", "integer tag names", "string thresholds", "width 1e6",
             "header length huge", "data_offsets overlapping", "unknown dtype", "config unknown option",
             "tag with a newline", "provenance nested deeply")


@pytest.mark.parametrize("case", CLI_CASES)
def test_every_command_refuses_each_crafted_file_with_one_line(tmp_path, good_bytes, song, case):
    path = _crafted(tmp_path, good_bytes, case)
    commands = {"info": ("info", path), "info --json": ("info", "--json", path),
                "tag": ("tag", "--model", path, song)}
    procs = {name: _cli(*argv) for name, argv in commands.items()}  # the three run side by side
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, f"{name}: exit {proc.returncode}\n{err}"
        assert "Traceback" not in err and err.count("\n") == 1, f"{name}:\n{err}"
        assert str(path) in err and CASES[case][1] in err, f"{name}: {err}"
        assert out == "", f"{name}: {out}"


# -- legitimate checkpoints load as before


def _raw_metadata(path):
    header, _ = _split(path.read_bytes())
    return json.loads(header["__metadata__"]["samplecnn"])


def test_the_bundled_model_reads_back_its_metadata_unchanged():
    path = pretrained.checkpoint_path("default")
    assert checkpoint.read_info(path).to_json() == _raw_metadata(path)
    model, info = checkpoint.read(path)
    assert info.to_json() == _raw_metadata(path)
    assert models.count_parameters(model) == (1_869_874, 5_888)


@pytest.mark.parametrize("arch,overrides", [("seed", {}), ("samplecnn", {}), ("se", {"multi_level": True}),
                                            ("rese2", {"amplifying_ratio": 4}), ("samplecnn", {"n_tags": 1})])
@pytest.mark.parametrize("half", [False, True])
def test_what_save_writes_loads_back(tmp_path, arch, overrides, half):
    torch.manual_seed(0)
    config = models.config_for(arch, width=0.125, **overrides)
    model = models.SampleCNN(**config).eval()
    n = config["n_tags"]
    info = checkpoint.ModelInfo(arch=arch, config=config, tags=[f"tag {i}" for i in range(n)],
                                thresholds=[i / max(n - 1, 1) for i in range(n)], provenance={"nested": {"a": [1]}})
    path = checkpoint.save(tmp_path / "m.safetensors", model, info, half=half)
    loaded, info2 = checkpoint.read(path)
    assert info2 == checkpoint.read_info(path) and info2.config == config and info2.tags == info.tags
    state, state2 = model.state_dict(), loaded.state_dict()
    for name, tensor in state.items():
        expected = tensor.half().float() if half and tensor.is_floating_point() else tensor
        assert torch.equal(state2[name], expected), name


@pytest.mark.parametrize("change,match", [
    (lambda i: setattr(i, "thresholds", [math.nan] * len(i.tags)), "thresholds"),
    (lambda i: i.tags.__setitem__(1, i.tags[0]), "duplicate"),
    (lambda i: setattr(i, "sample_rate", 16000), "sample_rate"),
    (lambda i: i.config.update(width=8.0), "width"),
])
def test_save_refuses_what_load_would_refuse(tmp_path, change, match):
    config = models.config_for("samplecnn", width=0.125, n_tags=3)
    model = models.SampleCNN(**config)
    info = checkpoint.ModelInfo(arch="samplecnn", config=dict(config), tags=["a", "b", "c"], thresholds=[0.5] * 3)
    change(info)
    with pytest.raises(ValueError, match=match):
        checkpoint.save(tmp_path / "m.safetensors", model, info)
    assert not (tmp_path / "m.safetensors").exists()
