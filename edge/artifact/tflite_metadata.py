"""Standard LiteRT (TFLite) model metadata: the ``TFLITE_METADATA`` that MediaPipe Tasks, the LiteRT Support and
Task libraries and Android Studio's ML Model Binding read, written and read with the schema's own
flatbuffers code (:mod:`edge._vendor.tflite_metadata_schema_py_generated`, vendored from MediaPipe).

    python -m edge.tflite_metadata artifacts/nasnet_mobile_edge_int8.tflite      # what a client will read

A ``.tflite`` written by ``converters.tflite`` carries, beside the model:

* flatbuffer metadata ``TFLITE_METADATA`` (file identifier ``M001``, schema 1.5.0, ``min_parser_version``
  1.0.0): name, description, version, author, license; the input as an RGB image of its size with
  ``NormalizationOptions`` (mean, std) that reproduce the toolkit's value scaling; the output as logits
  with ``labels.txt`` associated as ``TENSOR_AXIS_LABELS``; ``manifest.json`` associated to the model;
* flatbuffer metadata ``nasnet_edge_manifest``: the toolkit's manifest as JSON (what ``edge.runtime`` reads);
* one zip appended to the flatbuffer holding ``labels.txt`` and ``manifest.json``: the associated files of
  the standard metadata (the convention its populators follow: interpreters ignore bytes after the model).

NormalizationOptions cannot express a crop: the toolkit takes the center square of ``crop_fraction`` of the
shorter side, MediaPipe resizes the whole frame (or a ``region_of_interest``); the input's description says
so, and ``docs/clients.md`` measures what it costs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from edge.errors import UserError

STANDARD_METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
# The schema features written here (ImageProperties, FeatureProperties, NormalizationOptions, Stats,
# TENSOR_AXIS_LABELS and DESCRIPTIONS files) all exist since metadata schema 1.0.0; tests/test_mediapipe.py
# checks the figure against MediaPipe's own GetMinimumMetadataParserVersion.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class MetadataError(UserError):
    """Metadata that cannot be written or read; the message says why."""


def _schema():
    from edge._vendor import tflite_metadata_schema_py_generated as md

    return md


# ----------------------------------------------------------------------------- what goes in
def model_about(kind: str, meta: dict | None, model: str, labels: list[str], precision: str, lowered: bool,
                io_type: str, weights_sha256: str | None = None) -> dict:
    """Name, version, author, license and description of an artifact, for its manifest and metadata."""
    meta = meta or {}
    if kind != "default" and weights_sha256 and weights_sha256 == _default_model_sha256():
        kind = "default"  # the shipped default model, given by its path
    name = meta.get("name") or model
    version = str(meta["version"]) if meta.get("version") else (
        f"weights sha256 {weights_sha256[:12]}" if weights_sha256 else "unversioned")
    authors = {
        "default": "nasnet-edge (trained by this project on Imagenette)",
        "imagenet": "Google (Keras Applications NASNetMobile ImageNet weights); converted by nasnet-edge",
        "random": "nasnet-edge (random weights, for tests)",
    }
    licenses = {
        "default": "Apache-2.0 (weights: nasnet-edge). Trained on Imagenette (Apache-2.0), a subset of ImageNet: "
                   "ImageNet terms of access (non-commercial research and education)",
        "imagenet": "Apache-2.0 (Keras Applications weights); trained on ImageNet: ImageNet terms of access",
    }
    shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
    return {
        "name": f"{name} (NASNet-Mobile {'edge form' if lowered else 'stock graph'}, {precision})",
        "version": version,
        "author": authors.get(kind, "not recorded (user-supplied weights); converted by nasnet-edge"),
        "license": licenses.get(kind, "not recorded (user-supplied weights)"),
        "description": (f"Image classifier, {len(labels)} classes ({shown}): {model} converted to LiteRT by "
                        f"nasnet-edge converters.tflite ({precision}, {io_type} input and output). Scores are "
                        f"logits. Labels: {LABELS_FILE}; the toolkit's manifest: {MANIFEST_FILE}."),
    }


def _default_model_sha256() -> str | None:
    try:
        from edge.model.sources import default_model_path

        return json.loads(default_model_path().with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def _input_description(pre: dict, io_type: str, network_input: int | None = None) -> str:
    size, crop = int(pre["size"]), float(pre["crop_fraction"])
    if network_input and network_input < size:  # frame input (converters/pipeline.py FrameInput): the model crops
        inner = network_input
        text = (f"RGB image, {size}x{size}, NHWC: the whole center square of the frame (the shorter side), resized "
                f"bilinearly. The model crops its center {inner}x{inner} itself ({100 * inner / size:.1f}% of the "
                f"side, the network's own crop), so a client that resizes the whole square frame, as MediaPipe "
                f"does, gives the network its crop; pass a non-square frame's center square as the region of "
                f"interest. Values: (pixel - {pre['mean']:g}) / {pre['std']:g}.")
    else:
        text = (f"RGB image, {size}x{size}, NHWC. The toolkit takes the center square of {100 * crop:g}% of the "
                f"shorter side and resizes it bilinearly; MediaPipe resizes the whole frame unless given a region "
                f"of interest. Values: (pixel - {pre['mean']:g}) / {pre['std']:g}.")
    if io_type == "uint8":
        text += " uint8 input: the raw pixels; the tensor's quantization applies that normalization exactly."
    elif io_type == "int8":
        text += " int8 input: pixel - 128 (MediaPipe Tasks take uint8 or float32 only)."
    return text


def _output_description(n: int, io_type: str) -> str:
    text = (f"Scores of the {n} classes as logits, not probabilities (apply softmax); one per line of "
            f"{LABELS_FILE}, in that order.")
    if io_type in ("uint8", "int8"):
        text += f" {io_type}: dequantize with the tensor's scale and zero point."
    return text


def model_metadata(manifest: dict, labels: list[str], io_type: str, network_input: int | None = None) -> bytes:
    """The ``TFLITE_METADATA`` flatbuffer (identifier ``M001``) for a toolkit classifier.

    ``manifest``: the toolkit's embedded manifest (``preprocessing``, ``about``); ``io_type``: the model's
    actual input/output type, 'float32', 'uint8' or 'int8'; ``network_input``: the side of the square the model
    slices out of its input itself (frame input), where it does.
    """
    import flatbuffers

    md = _schema()
    pre = manifest["preprocessing"]
    about = manifest.get("about") or {}
    mean, std = float(pre["mean"]), float(pre["std"])
    if not std > 0:
        raise MetadataError(f"preprocessing std must be positive, got {std}")

    image = md.TensorMetadataT()
    image.name = INPUT_NAME
    image.description = _input_description(pre, io_type, network_input)
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    props = md.ImagePropertiesT()
    props.colorSpace = md.ColorSpaceType.RGB
    props.defaultSize = md.ImageSizeT()
    props.defaultSize.width = props.defaultSize.height = int(pre["size"])
    image.content.contentProperties = props
    norm = md.ProcessUnitT()
    norm.optionsType = md.ProcessUnitOptions.NormalizationOptions
    norm.options = md.NormalizationOptionsT()
    norm.options.mean, norm.options.std = [mean], [std]
    image.processUnits = [norm]
    image.stats = md.StatsT()  # the tensor's value range, as MediaPipe's metadata writers record it
    if io_type == "uint8":
        image.stats.min, image.stats.max = [0.0], [255.0]
    elif io_type == "float32":
        image.stats.min, image.stats.max = [(0.0 - mean) / std], [(255.0 - mean) / std]

    scores = md.TensorMetadataT()
    scores.name = OUTPUT_NAME
    scores.description = _output_description(len(labels), io_type)
    scores.content = md.ContentT()
    scores.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    scores.content.contentProperties = md.FeaturePropertiesT()
    scores.stats = md.StatsT()  # logits: no fixed range
    # logits can be negative: keep every class a result by default (the LiteRT Task Library's ImageClassifier
    # otherwise drops scores <= 0); a client's own score_threshold still overrides it
    keep_all = md.ProcessUnitT()
    keep_all.optionsType = md.ProcessUnitOptions.ScoreThresholdingOptions
    keep_all.options = md.ScoreThresholdingOptionsT()
    keep_all.options.globalScoreThreshold = float(np.finfo(np.float32).min)
    scores.processUnits = [keep_all]
    label_file = md.AssociatedFileT()
    label_file.name = LABELS_FILE
    label_file.description = "Labels for categories that the model can recognize."
    label_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [label_file]

    graph = md.SubGraphMetadataT()
    graph.name = "image_classifier"
    graph.inputTensorMetadata = [image]
    graph.outputTensorMetadata = [scores]

    model = md.ModelMetadataT()
    model.name = about.get("name") or manifest.get("model")
    model.description = about.get("description")
    model.version = about.get("version")
    model.author = about.get("author")
    model.license = about.get("license")
    model.subgraphMetadata = [graph]
    manifest_file = md.AssociatedFileT()
    manifest_file.name = MANIFEST_FILE
    manifest_file.description = ("nasnet-edge manifest (JSON): labels, preprocessing with the center crop, "
                                 "precision, input/output types; the same object is the flatbuffer metadata "
                                 "'nasnet_edge_manifest'.")
    manifest_file.type = md.AssociatedFileType.DESCRIPTIONS
    model.associatedFiles = [manifest_file]
    model.minParserVersion = MIN_PARSER_VERSION

    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), FILE_IDENTIFIER)
    return bytes(b.Output())


def associated_files_zip(labels: list[str], manifest: dict) -> bytes:
    """``labels.txt`` and ``manifest.json`` as the zip appended to the model (stored, not deflated), with a
    fixed timestamp so that the same conversion writes the same bytes."""
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for name, text in ((LABELS_FILE, "\n".join(labels) + "\n"),
                           (MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True))):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)
    return z.getvalue()


# ----------------------------------------------------------------------------- what comes out
def _model_bytes(model: bytes | str | os.PathLike) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise MetadataError(f"{path}: no such model file")
    return path.read_bytes()


def metadata_buffers(model: bytes | str | os.PathLike) -> dict[str, bytes]:
    """{metadata name: buffer bytes} of a ``.tflite`` flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    data = _model_bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        where = "" if isinstance(model, (bytes, bytearray)) else f"{model}: "
        raise MetadataError(f"{where}not a LiteRT model (no TFL3 flatbuffer identifier)")
    m = schema.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        raw = m.Buffers(entry.Buffer()).DataAsNumpy()
        out[entry.Name().decode()] = raw.tobytes() if isinstance(raw, np.ndarray) else b""
    return out


def _to_plain(obj, md):
    """A flatbuffers object-API value as JSON-able data, enums as their names."""
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_to_plain(v, md) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode()
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if not hasattr(obj, "__dict__"):
        return obj
    out = {}
    enums = {"type": md.AssociatedFileType, "colorSpace": md.ColorSpaceType,
             "contentPropertiesType": md.ContentProperties, "optionsType": md.ProcessUnitOptions}
    for k, v in vars(obj).items():
        if v is None:
            continue
        if k in enums and isinstance(v, int):
            names = {val: name for name, val in vars(enums[k]).items() if not name.startswith("_")}
            v = names.get(v, v)
        out[k] = _to_plain(v, md)
    return out


def read_metadata(model: bytes | str | os.PathLike) -> dict | None:
    """The standard metadata of a ``.tflite`` as a dict (object-API field names), or None when it has none."""
    md = _schema()
    buf = metadata_buffers(model).get(STANDARD_METADATA_NAME)
    if buf is None:
        return None
    if not md.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
        raise MetadataError(f"{STANDARD_METADATA_NAME} has file identifier {buf[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    obj = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(buf, 0))
    return _to_plain(obj, md)


def associated_files(model: bytes | str | os.PathLike) -> dict[str, bytes]:
    """The files packed in the zip appended to the model ({} when there is none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(_model_bytes(model))) as z:
            return {n: z.read(n) for n in z.namelist()}
    except zipfile.BadZipFile:
        return {}


def recorded_files(meta: dict) -> list[str]:
    """Names of the associated files the metadata refers to (model, subgraph and tensor level)."""
    names = [f["name"] for f in meta.get("associatedFiles", [])]
    for g in meta.get("subgraphMetadata", []):
        names += [f["name"] for f in g.get("associatedFiles", [])]
        for t in g.get("inputTensorMetadata", []) + g.get("outputTensorMetadata", []):
            names += [f["name"] for f in t.get("associatedFiles", [])]
    return names


def describe(model: str | os.PathLike) -> dict:
    """What a metadata client finds in a model file: the standard metadata and the packed files."""
    meta = read_metadata(model)
    files = associated_files(model)
    missing = [n for n in recorded_files(meta or {}) if n not in files]
    if missing:
        raise MetadataError(f"{model}: metadata names {', '.join(missing)} but the file does not pack "
                            f"{'it' if len(missing) == 1 else 'them'}")
    return {"metadata": meta, "associated_files": {n: len(b) for n, b in files.items()},
            "other_metadata": sorted(k for k in metadata_buffers(model) if k != STANDARD_METADATA_NAME)}


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    p = argparse.ArgumentParser(prog="python -m edge.tflite_metadata",
                                description="Print the standard TFLite metadata of a .tflite as JSON.")
    p.add_argument("model", type=Path)
    args = p.parse_args(argv)

    def go() -> int:
        d = describe(args.model)
        if d["metadata"] is None:
            raise MetadataError(f"{args.model}: no {STANDARD_METADATA_NAME} metadata (not converted by "
                                "converters.tflite, or made before standard metadata was added)")
        print(json.dumps(d, indent=1))
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
