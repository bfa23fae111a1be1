"""Keras -> samplecnn import: a Keras 3 (torch backend) build of the notebook's model, saved as .h5 and .keras,
must give the same tag probabilities after import; foreign files and other layouts are refused in one line."""

import json
import os
import zipfile

os.environ["KERAS_BACKEND"] = "torch"  # keras 3 defaults to TensorFlow, which is not installed

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")

from samplecnn import checkpoint, models  # noqa: E402
from samplecnn.errors import SampleCNNError  # noqa: E402
from samplecnn.keras_import import convert, import_keras  # noqa: E402
from samplecnn.tags import MTAT_TOP50  # noqa: E402

# Keras 3 on NumPy 2 warns about __array__(copy=...) thousands of times; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SEG = models.SEGMENT_SAMPLES
TOL = 1e-4


def build_keras(first_stride=1, channels=models.BLOCK_CHANNELS, n_tags=50, relu_layer=False, conv_relu=False,
                out_activation="sigmoid", separate_sigmoid=False, eps=1e-3, prefix=None, pool_padding="valid"):
    """The notebook's Sequential model, with knobs to build look-alikes of another layout."""
    from keras import layers

    def name(base):
        return f"{prefix}_{base}" if prefix else None

    def act():
        return layers.ReLU(name=name(f"relu{len(m.layers)}")) if relu_layer else layers.Activation("relu")

    m = keras.Sequential()
    m.add(keras.Input((SEG, 1)))
    for i, c in enumerate((128, *channels)):
        stride = first_stride if i == 0 else 1
        m.add(layers.Conv1D(c, 3, strides=stride, padding="same" if stride == 1 else "valid",
                            activation="relu" if conv_relu else None, name=name(f"conv{i}")))
        m.add(layers.BatchNormalization(epsilon=eps, name=name(f"bn{i}")))
        m.add(act())
        if not (i == 0 and first_stride != 1):  # the paper's strided first conv has no pooling
            m.add(layers.MaxPool1D(3, padding=pool_padding, name=name(f"pool{i}")))
    m.add(layers.Conv1D(512, 1, padding="same", name=name("head_conv")))
    m.add(layers.BatchNormalization(epsilon=eps, name=name("head_bn")))
    m.add(act())
    m.add(layers.Dropout(0.1))
    m.add(layers.Flatten())
    if separate_sigmoid:
        m.add(layers.Dense(n_tags, name=name("out")))
        m.add(layers.Activation(out_activation))
    else:
        m.add(layers.Dense(n_tags, activation=out_activation, name=name("out")))
    return m


def randomise(m, seed=0):
    """Non-trivial weights everywhere, BatchNorm statistics included (variances positive)."""
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            c = ws[0].shape[0]
            ws = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.3, c), rng.uniform(0.3, 2.0, c)]
        else:
            kernel = ws[0]
            fan_in = int(np.prod(kernel.shape[:-1]))
            scale = 0.4 if isinstance(layer, keras.layers.Dense) else np.sqrt(2.0)  # Dense: logits of a few units
            ws = [rng.normal(0, scale / np.sqrt(fan_in), kernel.shape), rng.normal(0, 0.05, ws[1].shape)]
        layer.set_weights([w.astype(np.float32) for w in ws])
    return m


def make_audio(n_segments=2, seed=1):
    """A few seconds of tones + a chirp + noise with an envelope, cut into segments: (n, 59049)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_segments * SEG) / models.SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t + 0.5)
         + 0.1 * np.sin(2 * np.pi * (100 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t) ** 2
    return x.reshape(n_segments, SEG).astype(np.float32)


def torch_probs(model, audio):
    with torch.no_grad():
        return torch.sigmoid(model.eval()(torch.from_numpy(audio)[:, None, :])).numpy()


def keras_probs(m, audio):
    return np.asarray(m.predict(audio[:, :, None], batch_size=len(audio), verbose=0))


@pytest.fixture(scope="module")
def audio():
    return make_audio()


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory):
    """The notebook's model with random weights, saved both ways, and its Keras predictions."""
    d = tmp_path_factory.mktemp("keras")
    m = randomise(build_keras())
    m.save(d / "seed.h5")
    m.save(d / "seed.keras")
    return m, {"h5": d / "seed.h5", "keras": d / "seed.keras"}


@pytest.fixture(scope="module")
def keras_reference(seed_files, audio):
    return keras_probs(seed_files[0], audio)


def test_notebook_model_parameter_count(seed_files):
    m = seed_files[0]
    assert m.count_params() == 1_875_762
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == 1_869_874
    assert models.count_parameters(models.build("seed")) == (1_869_874, 5_888)


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_import_matches_keras(seed_files, keras_reference, audio, fmt):
    path = seed_files[1][fmt]
    model, info = import_keras(path)
    assert info.arch == "seed" and info.config["n_tags"] == 50 and info.config["bn_eps"] == 1e-3
    assert info.tags == list(MTAT_TOP50) and info.thresholds == [0.5] * 50
    assert {k: info.provenance[k] for k in ("source", "file", "format")} == {
        "source": "keras import", "file": path.name, "format": fmt}
    assert not model.training
    ours = torch_probs(model, audio)
    assert ours.shape == keras_reference.shape == (2, 50)
    # the comparison means something: most outputs are far from saturation
    assert ((keras_reference > 0.01) & (keras_reference < 0.99)).mean() > 0.8
    diff = float(np.abs(ours - keras_reference).max())
    print(f"max |keras - samplecnn| ({fmt}): {diff:.2e}")
    assert diff < TOL


def test_convert_writes_loadable_checkpoint(seed_files, audio, tmp_path):
    model, _ = import_keras(seed_files[1]["keras"])
    out = tmp_path / "seed.safetensors"
    info = convert(seed_files[1]["keras"], out)
    assert info.provenance["format"] == "keras"
    loaded, loaded_info = checkpoint.read(out)
    assert loaded_info.tags == info.tags and loaded_info.config == info.config
    assert loaded_info.provenance["source"] == "keras import"
    assert np.array_equal(torch_probs(loaded, audio), torch_probs(model, audio))

    with pytest.raises(SampleCNNError, match="already exists"):
        convert(seed_files[1]["h5"], out)
    assert convert(seed_files[1]["h5"], out, overwrite=True).provenance["format"] == "h5"


def test_keras2_style_h5(seed_files, audio, tmp_path):
    """A legacy file as Keras 2 writes it: bytes attributes, 'name/kernel:0' weights, the input shape on the first
    layer instead of an InputLayer, BatchNormalization axis as a list."""
    src = seed_files[1]["h5"]
    dst = tmp_path / "keras2.h5"
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        config = json.loads(f.attrs["model_config"])
        layers = [entry for entry in config["config"]["layers"] if entry["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, SEG, 1]
        for entry in layers:
            entry.pop("module", None)
            if entry["class_name"] == "BatchNormalization":
                entry["config"]["axis"] = [2]
        config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers}}
        g.attrs["keras_version"] = b"2.2.4"
        g.attrs["backend"] = b"tensorflow"
        g.attrs["model_config"] = json.dumps(config).encode()
        mw = g.create_group("model_weights")
        names = [n for n in f["model_weights"].attrs["layer_names"]]
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        for n in names:
            group = mw.create_group(n)
            weight_names = []
            for w in f["model_weights"][n].attrs["weight_names"]:
                new = f"{n}/{w.rsplit('/', 1)[-1]}:0"
                group.create_dataset(new, data=f["model_weights"][n][w][()])
                weight_names.append(new.encode())
            group.attrs["weight_names"] = np.array(weight_names, dtype="S")
    model, info = import_keras(dst)
    assert info.provenance["format"] == "h5" and info.provenance.get("keras_version") == "2.2.4"
    reference, _ = import_keras(src)
    assert np.array_equal(torch_probs(model, audio[:1]), torch_probs(reference, audio[:1]))


def test_relu_layers_named_layers_other_eps_and_tag_count(audio, tmp_path):
    """ReLU layers instead of Activation('relu'), custom layer names (the .keras weights are addressed by class, not
    name), a separate sigmoid Activation, epsilon 1e-5 and 10 outputs."""
    m = randomise(build_keras(n_tags=10, relu_layer=True, separate_sigmoid=True, eps=1e-5, prefix="my"), seed=3)
    m.save(tmp_path / "variant.keras")
    reference = keras_probs(m, audio[1:])
    model, info = import_keras(tmp_path / "variant.keras")
    assert info.tags == [f"tag{i}" for i in range(10)] and info.config["bn_eps"] == 1e-5
    assert float(np.abs(torch_probs(model, audio[1:]) - reference).max()) < TOL

    names = [f"t{i}" for i in range(10)]
    assert import_keras(tmp_path / "variant.keras", tags=names)[1].tags == names
    with pytest.raises(SampleCNNError, match="10 outputs but 3 tags"):
        import_keras(tmp_path / "variant.keras", tags=["a", "b", "c"])


def assert_refused(path, *fragments):
    with pytest.raises(SampleCNNError) as e:
        import_keras(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "cannot import" in message, message
    assert e.value.path == str(path)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_refuses_files_that_are_not_keras_models(tmp_path, seed_files):
    (tmp_path / "noise.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_refused(tmp_path / "noise.h5", "not a Keras model file")
    (tmp_path / "notes.keras").write_text("this is a text file\n")
    assert_refused(tmp_path / "notes.keras", "not a Keras model file")
    (tmp_path / "empty.h5").write_bytes(b"")
    assert_refused(tmp_path / "empty.h5")
    assert_refused(tmp_path / "missing.h5", "no such file")
    assert_refused(tmp_path)

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    assert_refused(tmp_path / "other.keras", "config.json")

    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"] = np.zeros(3)
    assert_refused(tmp_path / "data.h5", "no model_config")

    for fmt in ("h5", "keras"):  # cut short: h5py / zipfile errors must not escape
        blob = seed_files[1][fmt].read_bytes()
        cut = tmp_path / f"truncated.{fmt}"
        cut.write_bytes(blob[: len(blob) // 2])
        assert_refused(cut, *(["truncated"] if fmt == "keras" else []))

    model, info = import_keras(seed_files[1]["h5"])  # a samplecnn checkpoint is not a Keras file either
    checkpoint.save(tmp_path / "ours.safetensors", model, info)
    assert_refused(tmp_path / "ours.safetensors", "not a Keras model file")


@pytest.mark.parametrize("variant, fmt, fragment", [
    (dict(first_stride=3), "h5", "strided"),                                     # the paper's 3^9 model
    (dict(channels=models.BLOCK_CHANNELS[:-1]), "keras", "block 9"),              # 8 blocks
    (dict(channels=(*models.BLOCK_CHANNELS, 512), pool_padding="same"), "h5", "more than 9 blocks"),
    (dict(conv_relu=True), "keras", "not the seed SampleCNN layout"),             # ReLU before BatchNorm
    (dict(out_activation="softmax"), "h5", "softmax"),
    (dict(out_activation=None), "keras", "sigmoid output"),  # logits out
])
def test_refuses_other_layouts(variant, fmt, fragment, tmp_path):
    m = build_keras(**variant)
    path = tmp_path / f"other.{fmt}"
    m.save(path)
    assert_refused(path, fragment)
