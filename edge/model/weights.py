"""Weights in and out: official Keras HDF5 files, the Keras cache, and this toolkit's own files.

The interchange format is Keras-layout: ``{keras layer name: [arrays in Keras weight order]}``. Both
builders read and write it, so any source loads into either framework.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from edge.errors import UserError

KerasWeights = dict[str, list[np.ndarray]]

# Order in which Keras lists each layer type's weights; HDF5 weight names are matched on their last
# path component without ":0" (Keras 2 files carry name-scope prefixes and the ":0" suffix).
KERAS_WEIGHT_ORDER = {
    "conv": ("kernel",),
    "separable": ("depthwise_kernel", "pointwise_kernel"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "depthwise": ("depthwise_kernel",),
}

OFFICIAL_FILES = {
    # file name Keras caches under ~/.keras/models/ -> md5 of the official release (keras nasnet.py)
    "nasnet_mobile.h5": "020fb642bf7360b370c678b08e0adf61",
    "nasnet_mobile_no_top.h5": "1ed92395b5b598bdda52abe5c0dbfd63",
}
OFFICIAL_RELEASE_NAMES = {"nasnet_mobile.h5": "NASNet-mobile.h5", "nasnet_mobile_no_top.h5": "NASNet-mobile-no-top.h5"}

TOOLKIT_FORMAT = "nasnet-edge-weights/2"  # state dict of the plan emitter (edge.model.torch_emit)
# format /1: the state dict of the builder before the compiled plan, read through translate_legacy_state_dict
LEGACY_TOOLKIT_FORMATS = ("nasnet-edge-weights/1",)


class WeightsError(UserError):
    """A weights file that cannot be used; the message says why and what to do."""


def _short_name(weight_name: str) -> str:
    return weight_name.split("/")[-1].split(":")[0]


def _decode(v) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def read_keras_h5(path: str | os.PathLike) -> KerasWeights:
    """Read a legacy Keras HDF5 weights file (``model.save_weights`` / ``model.save`` of Keras 2).

    Root attribute ``layer_names``; one group per layer with attribute ``weight_names``. Weights keep the
    order of ``weight_names``, which is Keras' own order.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e.__class__.__name__}); "
                           "expected a Keras NASNet .h5 weights file") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise WeightsError(f"{path}: HDF5 file without the Keras 'layer_names' attribute; "
                               "expected a legacy Keras weights file such as NASNet-mobile.h5")
        out: KerasWeights = {}
        for layer in root.attrs["layer_names"]:
            layer = _decode(layer)
            group = root[layer]
            names = [_decode(n) for n in group.attrs.get("weight_names", [])]
            if names:
                out[layer] = [np.asarray(group[n]) for n in names]
    return out


def write_keras_h5(path: str | os.PathLike, weights: KerasWeights, kinds: dict[str, str],
                   all_layer_names: Iterable[str] | None = None, scope_prefix: bool = False,
                   colon_suffix: bool = True) -> None:
    """Write ``weights`` in the legacy layout of the official Keras 2 files.

    ``kinds`` maps layer name to 'conv' | 'separable' | 'bn' | 'dense' (weight names follow from it).
    ``all_layer_names`` lists weightless layers too, as Keras does. ``scope_prefix`` adds a name-scope
    folder in front of each weight name, as Keras 2 did inside ``name_scope`` blocks.
    """
    import h5py

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    names = list(all_layer_names) if all_layer_names is not None else list(weights)
    with h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [n.encode("utf8") for n in names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in names:
            g = f.create_group(layer)
            arrays = weights.get(layer, [])
            wnames = []
            for short, arr in zip(KERAS_WEIGHT_ORDER[kinds[layer]] if arrays else (), arrays):
                stem = f"scope_{layer}/{layer}" if scope_prefix else layer
                wname = f"{stem}/{short}" + (":0" if colon_suffix else "")
                g.create_dataset(wname, data=np.asarray(arr, dtype=np.float32))
                wnames.append(wname.encode("utf8"))
            g.attrs["weight_names"] = wnames
    os.replace(tmp, path)


def keras_model_weights(model) -> KerasWeights:
    """``{layer name: get_weights()}`` for every Keras layer that has weights."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def keras_layer_kind(layer) -> str:
    cls = type(layer).__name__
    return {"Conv2D": "conv", "SeparableConv2D": "separable", "BatchNormalization": "bn", "Dense": "dense",
            "DepthwiseConv2D": "depthwise"}[cls]


def save_keras_model_as_h5(model, path: str | os.PathLike, **kw) -> None:
    """Save a Keras model's weights in the official legacy layout (used to make test files)."""
    weights = keras_model_weights(model)
    kinds = {name: keras_layer_kind(model.get_layer(name)) for name in weights}
    write_keras_h5(path, weights, kinds, all_layer_names=[l.name for l in model.layers], **kw)


def md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def find_imagenet_weights(include_top: bool = True) -> Path:
    """The official NASNet-Mobile file in the Keras cache, or a one-line error saying where to put it."""
    cache_name = "nasnet_mobile.h5" if include_top else "nasnet_mobile_no_top.h5"
    path = keras_cache_dir() / cache_name
    if not path.is_file():
        raise WeightsError(
            f"ImageNet weights not found: put the official {OFFICIAL_RELEASE_NAMES[cache_name]} "
            f"(md5 {OFFICIAL_FILES[cache_name]}) at {path}, or pass --weights PATH")
    return path


# ----------------------------------------------------------------------------- toolkit weight files
def save_toolkit_weights(path: str | os.PathLike, model, meta: dict | None = None, config=None) -> None:
    """Save a PyTorch NASNet as a state dict with its configuration and metadata (atomic).

    ``config`` overrides the model's own (e.g. the deploy input size of a model trained smaller).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": TOOLKIT_FORMAT, "config": (config or model.config).to_dict(), "meta": meta or {},
               "state_dict": state, "tensors_sha256": tensors_sha256(state)}
    save_torch_atomic(payload, path)


def save_torch_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary name; a full disk or Ctrl-C leaves no partial file behind.

    Serialized in memory first: torch.save reports a failed write as ``RuntimeError: ... iostream error``
    (torch 2.13, inline_container.cc), which says nothing of the cause; a plain file write raises the
    ``OSError`` (ENOSPC, EACCES, ...) that the command line turns into one clear line.
    """
    import io

    import torch

    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
        os.replace(tmp, path)
    except OSError as e:  # name the file the user asked for (a failed write carries no file name)
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def tensors_sha256(state_dict: dict) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict: torch.load does not check the zip's CRCs,
    so a bit flipped inside a tensor would load silently; this checksum, saved in the file, catches it."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def load_toolkit_weights(path: str | os.PathLike) -> dict:
    """Read a file written by :func:`save_toolkit_weights` (or a bare NASNet state dict)."""
    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError, Exception) as e:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({e.__class__.__name__}); "
                           "expected a .pt file saved by this toolkit or a Keras .h5") from None
    if isinstance(payload, dict) and payload.get("format") in (TOOLKIT_FORMAT,) + LEGACY_TOOLKIT_FORMATS:
        want = payload.get("tensors_sha256")  # files saved before the checksum existed have none
        if want and tensors_sha256(payload["state_dict"]) != want:
            raise WeightsError(f"{path}: the weights inside do not match the checksum saved with them: the file "
                               "was damaged after it was written; copy it again or retrain")
        return payload
    if isinstance(payload, dict) and all(hasattr(v, "shape") for v in payload.values()):
        return {"format": "state_dict", "config": None, "meta": {}, "state_dict": payload}
    raise WeightsError(f"{path}: not a NASNet state dict saved by this toolkit")


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def is_legacy_state_dict(state_dict: dict) -> bool:
    """A state dict of the builder before the compiled plan (``stem.conv.weight``, ``cells.0.base.conv.weight``)."""
    return "stem.conv.weight" in state_dict


def translate_legacy_state_dict(state_dict: dict, config) -> dict:
    """A state dict of the builder before the compiled plan (toolkit ``.pt`` format /1, the shipped default model
    among them) -> the plan emitter's keys.

    The old module tree named weights by position (``cells.3.ops.2.sep1.depthwise.weight``); the emitter names
    them by the Keras layer they belong to (``cells.3.layers.separable_conv_1_normal_left2_1.depthwise.weight``).
    The rule is fixed by the old tree: per cell an ``adjust`` (factorized: ``conv_1``, ``conv_2``, ``bn``;
    projection: ``conv``, ``bn``), a ``base`` (``conv``, ``bn``) and one ``ops[i]`` per genotype operation
    (separable: ``sep1``, ``bn1``, ``sep2``, ``bn2``; plain convs: ``convs.<2k+1>``, ``bn``; a stride-2 identity:
    ``conv_1``, ``conv_2``, ``bn``)."""
    specs = config.cells()
    out = {}
    for key, value in state_dict.items():
        path = key.split(".")
        if path[0] == "stem":
            layer = {"conv": "stem_conv1", "bn": "stem_bn1"}[path[1]]
            out[".".join(["stem", "layers", layer] + path[2:])] = value
            continue
        if path[0] == "head":  # head.fc.<param>
            out[".".join(["head", "layers", "predictions"] + path[2:])] = value
            continue
        i = int(path[1])
        spec = specs[i]
        bid, kind, g = spec.block_id, spec.kind.value, spec.genotype
        where, rest = path[2], path[3:]
        if where == "adjust":
            if spec.adjust == "factorized":
                layer = {"conv_1": f"adjust_conv_1_{bid}", "conv_2": f"adjust_conv_2_{bid}", "bn": f"adjust_bn_{bid}"}
            else:
                layer = {"conv": f"adjust_conv_projection_{bid}", "bn": f"adjust_bn_{bid}"}
            name, rest = layer[rest[0]], rest[1:]
        elif where == "base":
            name, rest = {"conv": f"{kind}_conv_1_{bid}", "bn": f"{kind}_bn_1_{bid}"}[rest[0]], rest[1:]
        elif where == "ops":
            j, sub, rest = int(rest[0]), rest[1], rest[2:]
            op = f"{g.keras_names[j]}_{bid}"
            if sub in ("sep1", "sep2", "bn1", "bn2"):
                name = {"sep1": f"separable_conv_1_{op}", "sep2": f"separable_conv_2_{op}",
                        "bn1": f"separable_conv_1_bn_{op}", "bn2": f"separable_conv_2_bn_{op}"}[sub]
            elif sub == "convs":
                name, rest = f"{op}_conv_{(int(rest[0]) - 1) // 2 + 1}", rest[1:]
            else:  # conv_1, conv_2, bn of a plain conv or a stride-2 identity
                name = f"{op}_{sub}"
        else:
            raise WeightsError(f"state dict key {key!r}: not a NASNet weight of this toolkit")
        out[".".join(["cells", str(i), "layers", name] + rest)] = value
    return out
