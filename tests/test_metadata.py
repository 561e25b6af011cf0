"""Standard TFLite model metadata (``TFLITE_METADATA``) in every ``.tflite``, read back with the schema's own code,
and the int8 input grid that lets every client feed the same tensor (converters/quantized_input.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, cell_part, run_module, small_nasnet
from converters.common import ConversionError
from converters.quantized_input import input_grid, shift_stem_input
from edge.model.config import Preprocessing
from edge.runtime.runners import read_tflite_embedded_manifest
from edge.artifact.tflite_metadata import (LABELS_FILE, MANIFEST_FILE, MIN_PARSER_VERSION, MetadataError, associated_files,
                                  describe, metadata_buffers, read_metadata)


def graph_input_quantization(path) -> tuple[str, float, int]:
    """(input type, scale, zero point) of the int8 values the graph computes on: the input tensor itself, or
    for a float input the output of the QUANTIZE op that reads it."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    g = m.Subgraphs(0)
    inp = g.Inputs(0)
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    kind = types[g.Tensors(inp).Type()]
    t = g.Tensors(inp)
    if kind == "float32":
        op = next(g.Operators(i) for i in range(g.OperatorsLength()) if g.Operators(i).Inputs(0) == inp)
        t = g.Tensors(op.Outputs(0))
    q = t.Quantization()
    return kind, float(q.Scale(0)), int(q.ZeroPoint(0))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["int8", "fp32"])
def test_artifacts_carry_standard_metadata_that_reads_back(which, tflite_int8, tflite_fp32, tflite_dir):
    m = tflite_int8 if which == "int8" else tflite_fp32
    path = tflite_dir / m["artifact"]
    md = read_metadata(path)
    assert md is not None and md["minParserVersion"] == MIN_PARSER_VERSION
    about = m["about"]
    for key in ("name", "version", "author", "license", "description"):
        assert md[key] == about[key] and md[key], key
    assert md["version"] == "3" and "Apache-2.0" in md["license"] and "logits" in md["description"]
    (graph,) = md["subgraphMetadata"]
    (image,), (scores,) = graph["inputTensorMetadata"], graph["outputTensorMetadata"]
    pre = m["preprocessing"]
    assert image["content"]["contentPropertiesType"] == "ImageProperties"
    props = image["content"]["contentProperties"]
    assert props["colorSpace"] == "RGB" and props["defaultSize"] == {"width": pre["size"], "height": pre["size"]}
    (norm,) = image["processUnits"]
    assert norm["optionsType"] == "NormalizationOptions"
    assert norm["options"] == {"mean": [pre["mean"]], "std": [pre["std"]]}
    # (x - mean) / std reproduces the toolkit's x * scale + offset on every pixel value
    p = np.arange(256, dtype=np.float64)
    np.testing.assert_allclose((p - pre["mean"]) / pre["std"], p * pre["scale"] + pre["offset"], atol=1e-12)
    assert pre["std"] == 127.5 and pre["mean"] == (128.0 if which == "int8" else 127.5)
    assert image["stats"]["min"] == pytest.approx([-pre["mean"] / pre["std"]])  # float input (default --io float)
    assert scores["name"] == "logits" and "not probabilities" in scores["description"]
    assert scores["associatedFiles"] == [{"name": LABELS_FILE, "type": "TENSOR_AXIS_LABELS",
                                          "description": "Labels for categories that the model can recognize."}]
    assert [f["name"] for f in md["associatedFiles"]] == [MANIFEST_FILE]
    # the files it names are the ones packed in the appended zip; the toolkit's manifest is there and in the
    # flatbuffer, the same object
    files = associated_files(path)
    assert sorted(files) == [LABELS_FILE, MANIFEST_FILE]
    assert files[LABELS_FILE].decode().splitlines() == m["labels"]
    embedded = read_tflite_embedded_manifest(path)
    assert json.loads(files[MANIFEST_FILE]) == embedded and embedded["about"] == about
    assert {"TFLITE_METADATA", "nasnet_edge_manifest"} <= set(metadata_buffers(path))
    d = describe(path)
    assert d["associated_files"][LABELS_FILE] == len(files[LABELS_FILE])


@pytest.mark.slow
def test_default_int8_artifact_takes_float_and_computes_on_the_exact_pixels(tflite_int8, tflite_dir):
    """--io float (the default): the graph quantizes its input to exactly pixel - 128, no half steps."""
    path = tflite_dir / tflite_int8["artifact"]
    assert tflite_int8["io"]["input"] == "float"
    kind, scale, zp = graph_input_quantization(path)
    assert kind == "float32" and scale == pytest.approx(1 / 127.5, rel=1e-6) and zp == 0
    pre = Preprocessing.from_dict(tflite_int8["preprocessing"])
    p = np.arange(256, dtype=np.float32)
    q = (p * np.float32(pre.scale) + np.float32(pre.offset)) / np.float32(scale) + zp
    assert np.abs(q - (p - 128)).max() < 1e-3  # every pixel value lands on a level, never halfway
    assert tflite_int8["quantization"]["input_grid"]["zero_point_uint8"] == 128
    assert tflite_int8["quantization"]["activation_ranges"]["input_range"] == pytest.approx([-128 / 127.5, 127 / 127.5])
    # and the int8 graph still matches the float model as before (the half step is folded into the stem)
    assert tflite_int8["validation"]["top1_agreement"] >= 0.97


def test_input_grid_of_the_nasnet_scaling():
    g = input_grid(Preprocessing())
    assert g.zero_point_uint8 == 128 and g.delta == pytest.approx(-1 / 255)
    assert g.preprocessing.mean == pytest.approx(128) and g.preprocessing.std == pytest.approx(127.5)
    assert g.range == pytest.approx((-128 / 127.5, 127 / 127.5))
    # a scaling already on a grid ([0, 1]: zero point 0) needs no shift
    g01 = input_grid(Preprocessing(scale=1 / 255, offset=0.0))
    assert g01.zero_point_uint8 == 0 and g01.delta == 0


def test_the_stem_shift_is_exact_on_a_real_nasnet_stem():
    """Folding the input shift into the BatchNorm after the 'valid' stem conv changes nothing the network computes."""
    from edge.model.keras_emit import build_keras_model, load_keras_weights

    cfg, model = small_nasnet()
    weights = model.keras_weights()
    delta = input_grid(cfg.preprocessing).delta
    x = np.random.default_rng(0).uniform(-1, 1, (4, 48, 48, 3)).astype(np.float32)
    ref = build_keras_model(cfg, classifier_activation=None)
    load_keras_weights(ref, weights)
    shifted = build_keras_model(cfg, classifier_activation=None)
    load_keras_weights(shifted, shift_stem_input(weights, delta))
    a = np.asarray(ref.predict(x, verbose=0))
    b = np.asarray(shifted.predict(x + np.float32(delta), verbose=0))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    unshifted = np.asarray(ref.predict(x + np.float32(delta), verbose=0))
    assert np.abs(unshifted - a).max() > 10 * np.abs(b - a).max()  # the shift itself is visible without the fold


@pytest.fixture(scope="module")
def head_part(small_tflite_cells):
    """A real int8 .tflite without standard metadata: the head of the small network's per-cell export (5 classes)."""
    return cell_part(small_tflite_cells, "head")


def test_metadata_round_trip_on_another_model_and_label_check(head_part, tmp_path):
    from converters.tflite import embed_metadata
    from edge.artifact.tflite_metadata import associated_files_zip, model_about

    flat = head_part.read_bytes()
    assert read_metadata(flat) is None
    labels = ["a", "b", "c", "d", "e"]
    manifest = {"model": "toy", "labels": labels, "preprocessing": Preprocessing().to_dict(), "io": "int8",
                "about": model_about("toolkit", {}, "toy", labels, "int8", True, "int8", "ab" * 32)}
    with pytest.raises(ConversionError, match="5 outputs but 4 labels"):
        embed_metadata(flat, manifest, labels[:4])
    out = embed_metadata(flat, manifest, labels)
    md = read_metadata(out)
    assert md["version"] == "weights sha256 abababababab" and "not recorded" in md["license"]
    image = md["subgraphMetadata"][0]["inputTensorMetadata"][0]
    assert "stats" not in image or not image["stats"]  # int8 input: no pixel range recorded
    assert "pixel - 128" in image["description"]
    with pytest.raises(ConversionError, match="already carries"):
        embed_metadata(out[: len(out) - len(associated_files_zip(labels, manifest))], manifest, labels)
    # metadata that names a file the model does not pack is reported, not ignored
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(out[: len(out) - len(associated_files_zip(labels, manifest))])
    with pytest.raises(MetadataError, match="labels.txt"):
        describe(bare)


def test_metadata_cli_prints_json_and_one_line_errors(head_part, tmp_path):
    r = run_module("edge.tflite_metadata", head_part)
    assert_one_line_error(r)
    assert "no TFLITE_METADATA" in r.stderr
    for bad in (tmp_path / "missing.tflite", __file__):
        assert_one_line_error(run_module("edge.tflite_metadata", bad))


@pytest.mark.slow
def test_metadata_cli_on_the_int8_artifact(tflite_int8, tflite_dir):
    r = run_module("edge.tflite_metadata", tflite_dir / tflite_int8["artifact"])
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["metadata"]["name"] == tflite_int8["about"]["name"]
    assert d["associated_files"].keys() == {LABELS_FILE, MANIFEST_FILE}
