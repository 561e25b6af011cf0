"""One entry point for "a NASNet with these weights", shared by every CLI.

``weights`` may be ``None``/"random" (random init), "default" (the model bundled in the package),
"imagenet" (the official file in the Keras cache), a path to a Keras ``.h5`` (official layout), or a
path to a ``.pt`` written by this toolkit. The result carries the configuration, labels and a short
description of the source, so converters and benchmarks can write manifests without guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge.model.config import NASNetConfig, Pooling, nasnet_mobile
from edge.labels import imagenet_labels
from edge.model.weights import (KerasWeights, WeightsError, find_imagenet_weights, is_legacy_state_dict,
                                load_toolkit_weights, read_keras_h5, sha256, translate_legacy_state_dict)

DEFAULT_MODEL = "nasnet_mobile_imagenette"


@dataclass
class WeightsSource:
    """Where weights come from and what they imply about the network."""

    kind: str  # random | default | imagenet | keras_h5 | toolkit
    path: Path | None
    config: NASNetConfig
    labels: list[str]
    keras_weights: KerasWeights | None = None
    state_dict: dict | None = None
    meta: dict = field(default_factory=dict)

    def describe(self) -> dict:
        d = {"kind": self.kind, "path": str(self.path) if self.path else None,
             "num_classes": self.config.num_classes, "meta": self.meta}
        if self.path and self.path.is_file():
            d["sha256"] = sha256(self.path)
            d["bytes"] = self.path.stat().st_size
        return d


def default_model_path() -> Path:
    return Path(str(resources.files("edge").joinpath(f"assets/models/{DEFAULT_MODEL}.pt")))


def config_from_dict(d: dict) -> NASNetConfig:
    """A configuration saved by the toolkit (see :meth:`NASNetConfig.from_dict`)."""
    return NASNetConfig.from_dict(d)


WEIGHTS_KEYWORDS = ("random", "none", "default", "imagenet")


def check_weights_argument(weights: str | Path | None) -> Path | None:
    """The weights file a ``--weights`` argument names (None for a keyword), or WeightsError when there is no such
    file: a check that reads nothing, so a typo is answered before anything heavy is imported."""
    if weights is None or str(weights) in WEIGHTS_KEYWORDS:
        return None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file (pass a Keras .h5, a toolkit .pt, "
                           "'imagenet' or 'default')")
    return path


def resolve_weights(weights: str | Path | None, num_classes: int | None = None,
                    pooling: Pooling | str | None = None) -> WeightsSource:
    """Read a weights argument into a :class:`WeightsSource` (nothing is built yet)."""
    if weights is None or str(weights) in ("random", "none"):
        cfg = nasnet_mobile(num_classes=num_classes or 1000)
        labels = imagenet_labels() if cfg.num_classes == 1000 else [f"class_{i}" for i in range(cfg.num_classes)]
        src = WeightsSource("random", None, cfg, labels)
    elif str(weights) == "default":
        path = default_model_path()
        if not path.is_file():
            raise WeightsError(f"the bundled default model is missing ({path}); reinstall the package "
                               "or pass --weights PATH")
        from edge.artifact.integrity import verify_against_manifest

        verify_against_manifest(path)
        src = _from_toolkit(path, "default")
    elif str(weights) == "imagenet":
        src = _from_h5(find_imagenet_weights(), "imagenet")
    else:
        path = check_weights_argument(weights)
        from edge.artifact.integrity import verify_against_manifest

        verify_against_manifest(path)  # a damaged copy that would still load is named, not used
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"\x89HDF"):
            src = _from_h5(path, "keras_h5")
        elif path.suffix.lower() in (".h5", ".hdf5"):
            raise WeightsError(f"{path}: not an HDF5 file (it does not start with the HDF5 signature); is it a "
                               "complete Keras .h5 weights file?")
        else:
            src = _from_toolkit(path, "toolkit")
    if pooling is not None:
        src.config = src.config.with_(pooling=pooling)
    return src


def _from_h5(path: Path, kind: str) -> WeightsSource:
    weights = read_keras_h5(path)
    n = weights["predictions"][1].shape[0] if "predictions" in weights else 1000
    cfg = nasnet_mobile(num_classes=n)
    labels = imagenet_labels() if n == 1000 else [f"class_{i}" for i in range(n)]
    return WeightsSource(kind, path, cfg, labels, keras_weights=weights)


def _from_toolkit(path: Path, kind: str) -> WeightsSource:
    payload = load_toolkit_weights(path)
    sd = payload["state_dict"]
    if payload["config"]:
        cfg = config_from_dict(payload["config"])
    else:
        fc = sd.get("head.fc.weight", sd.get("head.layers.predictions.weight"))
        cfg = nasnet_mobile(num_classes=int(fc.shape[0]) if fc is not None else 1000)
    if is_legacy_state_dict(sd):  # written before the compiled plan (the shipped default model among them)
        sd = translate_legacy_state_dict(sd, cfg)
    meta = payload.get("meta", {})
    labels = meta.get("labels") or (imagenet_labels() if cfg.num_classes == 1000 else
                                    [f"class_{i}" for i in range(cfg.num_classes)])
    return WeightsSource(kind, path, cfg, list(labels), state_dict=sd, meta=meta)


def load_torch_model(weights: str | Path | None = "default", *, num_classes: int | None = None,
                     input_size: int | None = None, pooling: Pooling | str | None = None,
                     include_top: bool = True, source: WeightsSource | None = None):
    """(PyTorch NASNet in eval mode, its WeightsSource).

    ``num_classes`` different from the weights' gives a new, randomly initialised head (fine-tuning).
    """
    from edge.model.torch_emit import build_torch_model

    src = source or resolve_weights(weights, num_classes, pooling)
    cfg = src.config
    new_head = num_classes is not None and num_classes != cfg.num_classes
    if new_head:
        cfg = cfg.with_(num_classes=num_classes)
    if input_size:
        cfg = cfg.with_(input_size=input_size)
    model = build_torch_model(cfg, include_top=include_top)
    if src.keras_weights is not None:
        w = dict(src.keras_weights)
        if new_head or not include_top:
            w.pop("predictions", None)
        missing = model.load_keras_weights(w, strict=False)
        expected_missing = {"predictions"} if (new_head and include_top) else set()
        if set(missing) - expected_missing:
            raise WeightsError(f"{src.path}: {len(missing)} layers of NASNet-Mobile are not in the file "
                               f"(first: {missing[0]}); is it a NASNet-Mobile weights file?")
    elif src.state_dict is not None:
        sd = {k: v for k, v in src.state_dict.items()
              if include_top and not new_head or not k.startswith("head.")}
        result = model.load_state_dict(sd, strict=False)
        bad = [k for k in result.missing_keys if not (k.startswith("head.") and (new_head or not include_top))]
        if bad or result.unexpected_keys:
            raise WeightsError(f"{src.path}: state dict does not fit NASNet-Mobile "
                               f"({len(bad)} missing, {len(result.unexpected_keys)} unexpected keys)")
    if new_head:
        src = WeightsSource(src.kind, src.path, cfg, [f"class_{i}" for i in range(num_classes)],
                            src.keras_weights, src.state_dict, src.meta)
    model.eval()
    return model, src


def reference_weights(src: WeightsSource) -> KerasWeights:
    """The Keras-layout weights of the reference network from any source (what every target's plan lowers with
    :meth:`~edge.model.plan.Plan.lower_weights`)."""
    if src.keras_weights is not None:
        return dict(src.keras_weights)
    model, _ = load_torch_model(source=src)
    return model.keras_weights()


def load_keras_model(weights="default", *, include_top: bool = True, input_size: int | None = None,
                     pooling=None, classifier_activation: str | None = "softmax", source=None):
    """(Keras NASNet with ``weights``, its WeightsSource); same weight choices as :func:`load_torch_model`."""
    from edge.model.keras_emit import build_keras_model, load_keras_weights

    src = source or resolve_weights(weights, pooling=pooling)
    cfg = src.config if not input_size else src.config.with_(input_size=input_size)
    model = build_keras_model(cfg, include_top=include_top, classifier_activation=classifier_activation)
    if src.keras_weights is None and src.state_dict is None:
        return model, src
    w = reference_weights(src)
    if not include_top:
        w = {k: v for k, v in w.items() if k != "predictions"}
    load_keras_weights(model, w)
    return model, src


def read_manifest(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)
