"""Import a saved Keras SampleCNN of the `seed` layout (the original notebook's model) without TensorFlow or Keras.

Two file formats are read, with h5py only:

* legacy HDF5 (`model.save("m.h5")`, Keras 2 or 3): the architecture is the JSON in the `model_config` attribute,
  the weights live under `model_weights/<layer>/` listed by the `layer_names` / `weight_names` attributes;
* the Keras 3 `.keras` zip: `config.json` holds the architecture, `model.weights.h5` the weights under
  `layers/<class-derived name>/vars/0..n` (Keras addresses a layer's weights by its snake-cased class name made
  unique in layer order, `conv1d`, `conv1d_1`, ..., not by the layer's own name).

The layer list is checked against the notebook's layout (Conv1D 'same' + BN + ReLU + MaxPool(3), nine such blocks,
Conv1D(512, 1) + BN + ReLU, Dropout, Flatten, Dense(sigmoid)) before any weight is copied, so a model of another
layout (a paper-style strided first conv, a different block count, another activation) is refused rather than
imported into the wrong network. Every failure is a single-line `SampleCNNError("cannot import: ...", path)`.

Weight mapping (Keras is channels-last): Conv1D kernel (k, in, out) -> torch (out, in, k); Dense kernel
(in, out) -> (out, in); BatchNormalization gamma, beta, moving_mean, moving_variance -> weight, bias,
running_mean, running_var. Keras' Dense(sigmoid) output equals sigmoid(our logits).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, models
from .checkpoint import ModelInfo
from .errors import SampleCNNError
from .tags import MTAT_TOP50

__all__ = ["import_keras", "convert"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_WEIGHTS_BYTES = 1 << 30  # a seed model's weights are ~7.6 MB; refuse to inflate anything absurd into memory

# Layers that do nothing at inference time (Dropout) or only carry the input shape.
_NOOP_LAYERS = {"Dropout", "SpatialDropout1D", "GaussianDropout", "AlphaDropout", "InputLayer",
                "ActivityRegularization"}


class _Reject(Exception):
    """Internal: the reason an import fails (turned into a SampleCNNError with the path)."""


@dataclass
class _Layer:
    """One Keras layer: its class, config, and weights by role (kernel, bias, gamma, ...)."""

    cls: str
    name: str
    config: dict
    weights: dict[str, np.ndarray] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- public API

def import_keras(path: str | os.PathLike, tags: list[str] | tuple[str, ...] | None = None
                 ) -> tuple[models.SampleCNN, ModelInfo]:
    """Read a Keras SampleCNN (`seed` layout, .h5 or .keras) into an eval-mode SampleCNN and its ModelInfo.

    `tags` names the outputs in order (default: the MagnaTagATune top-50 for 50 outputs, else tag0..tagN-1).
    Raises SampleCNNError("cannot import: <reason>", path) on any problem.
    """
    path = Path(path)
    try:
        return _import(path, tags)
    except SampleCNNError:
        raise
    except _Reject as e:
        raise SampleCNNError(f"cannot import: {_one_line(str(e))}", path) from None
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
            zipfile.BadZipFile, UnicodeDecodeError) as e:
        detail = _one_line(str(e)) or type(e).__name__
        raise SampleCNNError(f"cannot import: unreadable Keras file ({type(e).__name__}: {detail})", path) from None


def convert(src: str | os.PathLike, out: str | os.PathLike, tags: list[str] | tuple[str, ...] | None = None,
            overwrite: bool = False) -> ModelInfo:
    """Import the Keras model at `src` and save it as a samplecnn checkpoint at `out`; returns its ModelInfo."""
    model, info = import_keras(src, tags=tags)
    checkpoint.save(out, model, info, overwrite=overwrite)
    return info


# ------------------------------------------------------------------------------------------------------ reading

def _import(path: Path, tags) -> tuple[models.SampleCNN, ModelInfo]:
    if not path.exists():
        raise _Reject("no such file")
    if not path.is_file():
        raise _Reject("not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        fmt, (layers, meta) = "h5", _read_h5(path)
    elif zipfile.is_zipfile(path):
        fmt, (layers, meta) = "keras", _read_keras_zip(path)
    elif head.startswith(b"PK\x03\x04"):
        raise _Reject("a truncated or damaged zip (.keras) file")
    else:
        raise _Reject("not a Keras model file (neither HDF5 .h5 nor a .keras zip)")

    n_tags, bn_eps, state = _map_seed(layers)

    if tags is None:
        tags = list(MTAT_TOP50) if n_tags == len(MTAT_TOP50) else [f"tag{i}" for i in range(n_tags)]
    else:
        tags = [str(t) for t in tags]
        if len(tags) != n_tags:
            raise _Reject(f"the model has {n_tags} outputs but {len(tags)} tags were given")
    overrides = {} if bn_eps == models.ARCHITECTURES["seed"]["bn_eps"] else {"bn_eps": bn_eps}
    model = models.build("seed", n_tags=n_tags, **overrides)
    result = model.load_state_dict(state, strict=False)  # Keras has no num_batches_tracked; the rest must fit
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:  # a bug in the mapping, not a user error
        raise AssertionError(f"keras import mapping mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    model.eval()

    provenance = {"source": "keras import", "file": path.name, "format": fmt}
    if meta.get("keras_version"):
        provenance["keras_version"] = meta["keras_version"]
    info = ModelInfo(arch="seed", config=models.config_for("seed", n_tags=n_tags, **overrides), tags=tags,
                     thresholds=[0.5] * n_tags, provenance=provenance)
    return model, info


def _read_h5(path: Path) -> tuple[list[_Layer], dict]:
    import h5py

    with h5py.File(path, "r") as f:
        meta = {"keras_version": _text(f.attrs.get("keras_version", ""))}
        raw_config = f.attrs.get("model_config")
        if raw_config is None:
            if "layer_names" in f.attrs or "layers" in f:
                raise _Reject("a weights-only file (model.save_weights) has no architecture to check; "
                              "save the whole model with model.save()")
            raise _Reject("an HDF5 file without a Keras model in it (no model_config)")
        if meta["keras_version"].startswith("1."):
            raise _Reject(f"Keras {meta['keras_version']} files are not supported (Keras 2 or 3 only)")
        layers = _layers_from_config(json.loads(_text(raw_config)))
        if "model_weights" not in f:
            raise _Reject("the file has a model_config but no model_weights")
        group = f["model_weights"]
        names = [_text(n) for n in group.attrs.get("layer_names", [])]
        for layer in layers:
            if layer.name not in names or layer.name not in group:
                if layer.cls in _WEIGHTED:
                    raise _Reject(f"no weights for layer {layer.name!r}")
                continue
            lg = group[layer.name]
            for wname in (_text(n) for n in lg.attrs.get("weight_names", [])):
                # 'conv1d_1/kernel:0' (Keras 2) or 'sequential/conv1d_1/kernel' (Keras 3) -> 'kernel'
                role = wname.rsplit("/", 1)[-1].split(":", 1)[0]
                layer.weights[role] = np.asarray(lg[wname], dtype=np.float32)
    return layers, meta


def _read_keras_zip(path: Path) -> tuple[list[_Layer], dict]:
    import h5py

    with zipfile.ZipFile(path) as z:
        members = set(z.namelist())
        if "config.json" not in members:
            raise _Reject("a zip file without config.json (not a .keras model)")
        config = json.loads(z.read("config.json").decode("utf-8"))
        meta = json.loads(z.read("metadata.json").decode("utf-8")) if "metadata.json" in members else {}
        if "model.weights.h5" not in members:
            other = sorted(m for m in members if m.startswith("model.weights"))
            raise _Reject(f"no model.weights.h5 in the archive (found {', '.join(other) or 'no weights'}; "
                          "npz or sharded weights are not supported)")
        if z.getinfo("model.weights.h5").file_size > _MAX_WEIGHTS_BYTES:
            raise _Reject("model.weights.h5 is implausibly large for a SampleCNN")
        blob = z.read("model.weights.h5")
    if not isinstance(meta, dict):
        meta = {}
    layers = _layers_from_config(config)

    with h5py.File(io.BytesIO(blob), "r") as f:
        root = next((f[r] for r in ("layers", "_layer_checkpoint_dependencies") if r in f), None)
        if root is None:
            raise _Reject("model.weights.h5 has no 'layers' group")
        by_meta_name = {}
        for key in root:
            vars_ = root[key].get("vars") if isinstance(root[key], h5py.Group) else None
            if vars_ is not None and "name" in vars_.attrs:
                by_meta_name[_text(vars_.attrs["name"])] = key
        used: dict[str, int] = {}
        for layer in layers:
            if layer.cls not in _WEIGHTED:  # Dropout etc. may hold RNG state; nothing we need
                continue
            # Keras' own addressing: snake-cased class name, made unique in layer order.
            key = _unique_name(_snake_case(layer.cls), used)
            candidates = [key, by_meta_name.get(layer.name), layer.name]
            group = next((root[c]["vars"] for c in candidates
                          if c and c in root and "vars" in root[c]
                          and _text(root[c]["vars"].attrs.get("name", layer.name)) == layer.name), None)
            if group is None:  # no name metadata to cross-check: fall back to Keras' addressing alone
                group = root[key]["vars"] if key in root and "vars" in root[key] else None
            if group is None:
                raise _Reject(f"no weights for layer {layer.name!r}")
            values = [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]
            layer.weights.update(_roles_by_order(layer, values))
    return layers, {"keras_version": str(meta.get("keras_version", ""))}


def _roles_by_order(layer: _Layer, values: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The .keras format stores a layer's variables as vars/0..n in creation order; name them."""
    c = layer.config
    if layer.cls in ("Conv1D", "Dense"):
        roles = ["kernel"] + (["bias"] if c.get("use_bias", True) else [])
    elif layer.cls == "BatchNormalization":
        roles = (["gamma"] if c.get("scale", True) else []) + (["beta"] if c.get("center", True) else []) + \
                ["moving_mean", "moving_variance"]
    else:
        roles = []
    if len(values) != len(roles):
        raise _Reject(f"layer {layer.name!r} ({layer.cls}) has {len(values)} weight arrays, expected {len(roles)}")
    return dict(zip(roles, values))


def _layers_from_config(config) -> list[_Layer]:
    """The flat layer list of a Sequential or linear Functional model config."""
    if not isinstance(config, dict):
        raise _Reject("the model config is not a JSON object")
    kind = config.get("class_name")
    if kind not in ("Sequential", "Functional", "Model"):
        raise _Reject(f"the saved object is a {kind!r}, not a Sequential or Functional model")
    inner = config.get("config")
    raw = inner if isinstance(inner, list) else (inner or {}).get("layers")  # Keras 2.0-2.1 Sequential: a list
    if not isinstance(raw, list) or not raw:
        raise _Reject("the model config lists no layers")
    layers = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise _Reject("malformed layer entry in the model config")
        cls = str(entry.get("class_name"))
        if cls in ("Sequential", "Functional", "Model"):
            raise _Reject("nested models are not supported; save the SampleCNN itself")
        name = str(entry["config"].get("name", entry.get("name", cls)))
        if kind != "Sequential":
            inbound = entry.get("inbound_nodes") or []
            if len(inbound) > 1 or _count_inputs(inbound) > 1:
                raise _Reject(f"layer {name!r} has several inputs: not a plain chain of layers")
        layers.append(_Layer(cls, name, entry["config"]))
    return layers


def _count_inputs(inbound) -> int:
    """Number of tensors a Functional layer reads (Keras 2 and 3 configs spell inbound nodes differently)."""
    text = json.dumps(inbound)
    return max(text.count("keras_history"), len(re.findall(r'\[\s*"[^"]+",\s*\d+,\s*\d+', text)))


# ------------------------------------------------------------------------------------------ layout and weights

_WEIGHTED = {"Conv1D", "Convolution1D", "BatchNormalization", "Dense"}
_CHANNELS = (128, *models.BLOCK_CHANNELS)  # the stem's conv and the nine blocks' convs


def _tokens(layers: list[_Layer]) -> list[tuple]:
    """Each layer as a normalised step; folded activations become their own 'act' step."""
    out = []
    for layer in layers:
        c = layer.config
        if layer.cls in _NOOP_LAYERS:
            if layer.cls == "InputLayer":
                _check_input(c.get("batch_shape") or c.get("batch_input_shape"))
            continue
        if "batch_input_shape" in c:  # Keras 2 Sequential: the first layer carries the input shape
            _check_input(c["batch_input_shape"])
        if c.get("data_format", "channels_last") != "channels_last":
            raise _Reject(f"layer {layer.name!r} is {c.get('data_format')}; only channels_last is supported")
        if layer.cls in ("Conv1D", "Convolution1D"):
            if layer.cls == "Convolution1D":
                raise _Reject("Keras 1 layers (Convolution1D) are not supported")
            if int(_one(c.get("dilation_rate", 1))) != 1 or int(c.get("groups", 1)) != 1:
                raise _Reject(f"layer {layer.name!r} is dilated or grouped")
            out.append(("conv", layer, int(c["filters"]), int(_one(c["kernel_size"])), int(_one(c.get("strides", 1))),
                        str(c.get("padding", "valid")).lower()))
            out += _activation(c.get("activation"), layer)
        elif layer.cls == "BatchNormalization":
            axis = c.get("axis", -1)
            if _one(axis) not in (-1, 2):
                raise _Reject(f"layer {layer.name!r} normalises axis {axis}, not the channels")
            if c.get("renorm"):
                raise _Reject(f"layer {layer.name!r} uses batch renormalisation")
            out.append(("bn", layer, float(c.get("epsilon", 1e-3))))
        elif layer.cls in ("Activation", "ReLU"):
            if layer.cls == "ReLU":
                if (c.get("max_value") is not None or float(c.get("negative_slope", 0) or 0) != 0
                        or float(c.get("threshold", 0) or 0) != 0):
                    raise _Reject(f"layer {layer.name!r} is a clipped or leaky ReLU")
                out.append(("act", layer, "relu"))
            else:
                out += _activation(c.get("activation"), layer)
        elif layer.cls in ("MaxPooling1D", "MaxPool1D"):
            size = int(_one(c.get("pool_size", 2)))
            strides = c.get("strides")
            out.append(("pool", layer, size, int(_one(strides)) if strides is not None else size))
        elif layer.cls == "Flatten":
            out.append(("flatten", layer))
        elif layer.cls == "Dense":
            out.append(("dense", layer, int(c["units"])))
            out += _activation(c.get("activation"), layer)
        else:
            raise _Reject(f"layer {layer.name!r} is a {layer.cls}, which the seed SampleCNN does not have")
    return out


def _activation(act, layer: _Layer) -> list[tuple]:
    if isinstance(act, dict):  # Keras 3 may serialise activations as objects
        act = act.get("config", {}).get("name") or act.get("class_name")
    act = "linear" if act in (None, "linear") else str(act).lower()
    return [] if act == "linear" else [("act", layer, act)]


def _check_input(shape) -> None:
    if not shape:
        return
    shape = list(shape)
    if len(shape) != 3 or shape[1] not in (None, models.SEGMENT_SAMPLES) or shape[2] != 1:
        raise _Reject(f"input shape {tuple(shape[1:])} is not ({models.SEGMENT_SAMPLES}, 1) mono audio")


def _one(v):
    return v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v


def _map_seed(layers: list[_Layer]) -> tuple[int, float, dict[str, torch.Tensor]]:
    """Check `layers` is the seed layout and return (n_tags, BatchNorm epsilon, torch state dict)."""
    steps = _tokens(layers)
    i = 0

    def take(kind: str, what: str) -> tuple:
        nonlocal i
        if i >= len(steps):
            raise _Reject(f"the model ends where the seed layout expects {what}")
        step = steps[i]
        if step[0] != kind:
            found = (f"the {step[2]} activation of layer {step[1].name!r}" if step[0] == "act" and
                     step[1].cls not in ("Activation", "ReLU") else f"layer {step[1].name!r} ({step[1].cls})")
            raise _Reject(f"not the seed SampleCNN layout: {found} where {what} was expected")
        i += 1
        return step

    convs, bns = [], []

    def conv_bn_relu(where: str, filters: int, kernel: int, same: bool) -> None:
        _, layer, f, k, s, pad = take("conv", f"the Conv1D of {where}")
        if (f, k, s) != (filters, kernel, 1) or (same and pad != "same"):
            shape = f"Conv1D({f}, {k}, strides={s}, padding={pad!r})"
            raise _Reject(f"not the seed SampleCNN layout: the Conv1D of {where} is {shape}, expected "
                          f"Conv1D({filters}, {kernel}, strides=1{', padding=' + repr('same') if same else ''})"
                          + (" (a paper-style strided first conv?)" if where == "the first layer" and s != 1 else ""))
        convs.append(layer)
        bns.append(take("bn", f"BatchNormalization after the Conv1D of {where}")[1:])
        act = take("act", f"ReLU after the BatchNormalization of {where}")
        if act[2] != "relu":
            raise _Reject(f"not the seed SampleCNN layout: {act[2]} activation after the BatchNormalization of {where}")

    def pool(where: str) -> None:
        _, layer, size, stride = take("pool", f"MaxPooling1D(3) after {where}")
        if (size, stride) != (3, 3):
            raise _Reject(f"not the seed SampleCNN layout: pool {size} stride {stride} after {where}, expected 3")

    conv_bn_relu("the first layer", 128, 3, same=True)
    pool("the first layer")
    for b, channels in enumerate(models.BLOCK_CHANNELS, 1):
        conv_bn_relu(f"block {b}", channels, 3, same=True)
        pool(f"block {b}")
    if i < len(steps) and steps[i][0] == "conv" and steps[i][3] == 3:
        raise _Reject(f"not the seed SampleCNN layout: more than {len(models.BLOCK_CHANNELS)} blocks")
    conv_bn_relu("the head", 512, 1, same=False)
    if i < len(steps) and steps[i][0] == "flatten":
        i += 1
    _, dense, n_tags = take("dense", "the output Dense layer")
    act = take("act", "a sigmoid output activation")
    if act[2] != "sigmoid":
        raise _Reject(f"the output activation is {act[2]!r}, not sigmoid (only sigmoid outputs are supported)")
    if i != len(steps):
        raise _Reject(f"not the seed SampleCNN layout: extra layer {steps[i][1].name!r} after the output")
    if n_tags < 1:
        raise _Reject(f"the output layer has {n_tags} units")

    eps = {e for _, e in bns}
    if len(eps) != 1:
        raise _Reject(f"BatchNorm layers use different epsilons {sorted(eps)}; the seed model has one")
    bn_eps = eps.pop()
    if not (0 < bn_eps < 1):
        raise _Reject(f"BatchNorm epsilon {bn_eps} is out of range")

    state: dict[str, torch.Tensor] = {}
    targets = ["stem"] + [f"blocks.{b}" for b in range(len(models.BLOCK_CHANNELS))] + ["head"]
    c_in = 1
    for t, conv, (bn, _), c_out in zip(targets, convs, bns, (*_CHANNELS, 512)):
        conv_name, bn_name = (f"{t}.0", f"{t}.1") if t in ("stem", "head") else (f"{t}.conv", f"{t}.bn")
        k = 1 if t == "head" else 3
        kernel = _weight(conv, "kernel", (k, c_in, c_out))
        state[f"{conv_name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 1, 0)))
        state[f"{conv_name}.bias"] = torch.from_numpy(_weight(conv, "bias", (c_out,), default=0.0))
        state[f"{bn_name}.weight"] = torch.from_numpy(_weight(bn, "gamma", (c_out,), default=1.0))
        state[f"{bn_name}.bias"] = torch.from_numpy(_weight(bn, "beta", (c_out,), default=0.0))
        state[f"{bn_name}.running_mean"] = torch.from_numpy(_weight(bn, "moving_mean", (c_out,)))
        var = _weight(bn, "moving_variance", (c_out,))
        if (var < 0).any():
            raise _Reject(f"layer {bn.name!r} has a negative moving variance")
        state[f"{bn_name}.running_var"] = torch.from_numpy(var)
        c_in = c_out
    kernel = _weight(dense, "kernel", (512, n_tags))
    state["classifier.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
    state["classifier.bias"] = torch.from_numpy(_weight(dense, "bias", (n_tags,), default=0.0))
    return n_tags, bn_eps, state


def _weight(layer: _Layer, role: str, shape: tuple, default: float | None = None) -> np.ndarray:
    w = layer.weights.get(role)
    if w is None:
        if default is None or _uses(layer, role):
            raise _Reject(f"layer {layer.name!r} has no {role} weights")
        return np.full(shape, default, dtype=np.float32)
    if tuple(w.shape) != tuple(shape):
        raise _Reject(f"layer {layer.name!r} {role} has shape {tuple(w.shape)}, expected {tuple(shape)}")
    if not np.isfinite(w).all():
        raise _Reject(f"layer {layer.name!r} {role} contains NaN or inf")
    return np.ascontiguousarray(w, dtype=np.float32)


def _uses(layer: _Layer, role: str) -> bool:
    """Whether the layer's config says it has this weight (a missing one is then an error, not a default)."""
    c = layer.config
    return {"bias": c.get("use_bias", True), "gamma": c.get("scale", True), "beta": c.get("center", True)}.get(role,
                                                                                                            True)


# ------------------------------------------------------------------------------------------------------- helpers

def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v.item())
    return str(v)


def _snake_case(name: str) -> str:
    """Keras' to_snake_case, which names a layer's group in model.weights.h5."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _one_line(text: str) -> str:
    return " ".join(text.split())
