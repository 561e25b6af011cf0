"""``python -m converters.tflite``: every precision end to end on the real NASNet-Mobile (default model)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_module
from converters.common import artifact_base
from edge.model.config import NASNetConfig as Config
from edge.runtime.runners import LiteRTRunner, _litert, open_model, read_tflite_embedded_manifest, TorchRunner
from edge.preprocessing import list_images, preprocess_batch
from edge.model.verify import sample_images_dir


@pytest.fixture(scope="module")
def samples():
    return list_images(sample_images_dir())


@pytest.fixture(scope="module")
def source_probs(samples):
    runner = TorchRunner("default")
    return runner.probabilities(preprocess_batch(samples, runner.preprocessing))


def clear_cases(probs: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    return probs.max(1) >= threshold


def test_main_job_writes_a_fully_delegated_int8_model_with_manifest(tflite_int8, tflite_dir):
    m = tflite_int8
    path = tflite_dir / m["artifact"]
    # the name comes from the configuration (converters.common.artifact_base), the facts from the manifest
    assert path.is_file() and m["artifact"] == f"{artifact_base(Config.from_dict(m['config']), True)}_int8.tflite"
    for key in ("source", "precision", "calibration", "quantization", "preprocessing", "labels", "tools",
                "op_histogram", "size_bytes", "sha256", "validation", "delegation", "plan"):
        assert m[key] is not None, key
    assert m["precision"] == "int8" and m["lowered"] is True
    assert m["source"]["kind"] == "default" and len(m["source"]["sha256"]) == 64
    assert m["calibration"]["count"] > 0 and m["size_bytes"] == path.stat().st_size
    ranges = m["quantization"]["activation_ranges"]  # 'auto': both candidates measured, the closer one kept
    assert set(ranges["chosen_from"]) == {"mse", "mean"} and ranges["tensors"] > 300
    assert ranges["method"] == min(ranges["chosen_from"], key=lambda k: ranges["chosen_from"][k]["median_kl"])
    assert ranges["median_range_fraction"] < 1  # narrower than the calibrator's min/max
    assert m["tools"]["tensorflow-cpu"].startswith("2.21") and m["tools"]["ai-edge-litert"].startswith("2.3")
    # The headline of the lowering: XNNPACK runs the whole int8 graph in one partition.
    assert m["delegation"]["partitions"] == 1 and m["delegation"]["ops_outside"] == 0
    assert "AVERAGE_POOL_2D" not in m["op_histogram"] and "RELU" not in m["op_histogram"]
    v = m["validation"]
    # 200 shipped held-out photos; the default model is quantization-aware fine-tuned (docs/quantization.md)
    assert v["images"] == 200 and v["top1_agreement"] >= 0.97 and v["logit_sqnr_db"] > 12
    assert not list(tflite_dir.glob(".*.tmp"))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_no_pad_read_by_a_convolution_is_shared(precision, tflite_dir, tflite_int8, tflite_fp32):
    """Pins distinct_pads (edge/model/passes.py) in the converted file: XNNPACK folds a zero PAD into a
    convolution only where it is the PAD's single reader (xnn_subgraph_fusion, src/subgraph.c), and TFLite's
    converter merges equal PADs of one tensor; without the pass the 7x7 stride-2 separables of every reduction
    cell shared 12 PADs, which ran as copies. No PAD reads a max pool either (max_pool_border_relu in int8,
    max_pool_border_map in fp32): XNNPACK folds no pad into a max pool."""
    m = tflite_int8 if precision == "int8" else tflite_fp32
    Interpreter, _ = _litert()
    ops = Interpreter(model_path=str(tflite_dir / m["artifact"]))._get_ops_details()
    readers: dict[int, list[str]] = {}
    for o in ops:
        for t in o["inputs"]:
            readers.setdefault(int(t), []).append(o["op_name"])
    pads = [readers.get(int(o["outputs"][0]), []) for o in ops if o["op_name"] == "PAD"]
    assert len(pads) > 20
    assert all(len(r) == 1 and r[0] in ("CONV_2D", "DEPTHWISE_CONV_2D") for r in pads), pads
    assert not [r for r in pads if "MAX_POOL_2D" in r]


def test_stock_int8_falls_back_where_upstream_xnnpack_cannot_run_it(tflite_stock_int8):
    """Pins the upstream behaviour the lowering works around (TFLite XNNPACK delegate, LiteRT 2.3): in the
    stock graph in int8 XNNPACK leaves RELU, AVERAGE_POOL_2D and CONCATENATION to LiteRT. On the small network
    (the same cells' ops): 19 partitions; NASNet-Mobile's stock int8 has 37 (docs/lowering.md section 1)."""
    d = tflite_stock_int8["delegation"]
    assert tflite_stock_int8["lowered"] is False and tflite_stock_int8["config"]["penultimate_filters"] == 96
    assert d["partitions"] > 10
    assert set(d["outside"]) == {"RELU", "AVERAGE_POOL_2D", "CONCATENATION"}


def test_fp32_edge_form_is_one_partition_and_matches_keras(tflite_fp32):
    assert tflite_fp32["delegation"] == {**tflite_fp32["delegation"], "partitions": 1, "ops_outside": 0}
    assert tflite_fp32["validation"]["max_abs_prob_diff"] <= 1e-4
    assert tflite_fp32["validation"]["top1_agreement"] == 1.0


def classifies_like_the_source(m: dict, path: Path, precision: str, samples, source_probs) -> None:
    runner = open_model(path)
    assert isinstance(runner, LiteRTRunner) and m["precision"] == precision
    probs = runner.probabilities(preprocess_batch(samples, runner.preprocessing))
    clear = clear_cases(source_probs)
    assert clear.sum() >= 10
    assert (probs[clear].argmax(1) == source_probs[clear].argmax(1)).all()
    top = runner.classify(samples[0], k=3)
    assert len(top) == 3 and top[0].label in runner.labels


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_precision_classifies_the_samples_like_the_source(precision, tflite_dir, tflite_int8, tflite_fp32,
                                                                samples, source_probs):
    m = tflite_int8 if precision == "int8" else tflite_fp32
    classifies_like_the_source(m, tflite_dir / m["artifact"], precision, samples, source_probs)


def test_fp16_and_dynamic_range_classify_the_samples_like_the_source(tflite_fp16, tflite_dynamic, samples,
                                                                     source_probs):
    for precision, m in (("fp16", tflite_fp16), ("dynamic", tflite_dynamic)):  # made in the background chain
        classifies_like_the_source(m, Path(m["_path"]), precision, samples, source_probs)


def test_labels_and_preprocessing_are_embedded_in_the_tflite(tflite_int8, tflite_dir):
    path = tflite_dir / tflite_int8["artifact"]
    embedded = read_tflite_embedded_manifest(path)
    assert embedded["labels"] == tflite_int8["labels"] and len(embedded["labels"]) == 10
    # int8: mean 128 / std 127.5, the input on the pixel grid (converters/quantized_input.py, docs/clients.md)
    assert embedded["preprocessing"]["mean"] == 128.0
    # frame input (the default, issue 19): the whole square at 256 px in, the network's 224 crop sliced inside
    assert embedded["preprocessing"]["size"] == 256 and embedded["preprocessing"]["crop_fraction"] == 1.0
    interp = _litert()[0](model_path=str(path))
    assert list(interp.get_input_details()[0]["shape"]) == [1, 256, 256, 3]
    from edge.artifact.tflite_metadata import read_metadata

    image = read_metadata(path.read_bytes())["subgraphMetadata"][0]["inputTensorMetadata"][0]
    assert "The model crops its center 224x224 itself" in image["description"]  # what a metadata client reads
    with zipfile.ZipFile(path) as z:
        assert z.read("labels.txt").decode().splitlines() == tflite_int8["labels"]
    # without the manifest beside it, a runner still finds labels and preprocessing in the file
    lone = tflite_dir / "lone" / path.name
    lone.parent.mkdir(exist_ok=True)
    lone.write_bytes(path.read_bytes())
    assert open_model(lone).labels == tflite_int8["labels"]


def test_per_cell_export_lists_every_cell_with_shapes_and_macs(small_tflite_cells):
    from conftest import small_nasnet
    from converters.tflite import op_histogram
    from edge.model.config import nasnet_mobile
    from edge.model.profile import part_macs

    cfg, _ = small_nasnet()
    cells = json.loads((small_tflite_cells / "cells.json").read_text())
    names = [p["name"] for p in cells["parts"]]
    assert names[0] == "stem" and names[-1] == "head" and len(names) == len(cfg.cells()) + 2
    assert names[1] == "cell_00_reduction_stem_1" and names[2] == "cell_01_reduction_stem_2"
    specs = cfg.cells()
    assert cells["parts"][3]["inputs"] == [list(specs[2].x_shape), list(specs[2].p_shape)]
    for p in cells["parts"]:
        assert (small_tflite_cells / p["file"]).is_file()
        # each part carries its own delegation report. (On this random toy network XNNPACK leaves two int8
        # ADDs of each small reduction cell to LiteRT; the real model's single partition and zero fallback
        # ops are pinned by the main-job test.)
        d = p["delegation"]
        # the interpreter's node list (the report) against the flatbuffer's operator table (op_histogram):
        # two independent readings of the same file must count the same operators
        hist = op_histogram(small_tflite_cells / p["file"])
        assert d["partitions"] >= 1 and d["ops"] == sum(hist.values()), p["name"]
        assert d["delegated_ops"] + d["ops_outside"] == d["ops"]
        assert all(hist.get(op, 0) >= n for op, n in d["outside"].items()), (d["outside"], hist)
    # the MACs the manifest lists, on the real NASNet-Mobile: the paper's 564M multiply-adds
    # (562.58M in the body + 1.06M in a 1000-class head)
    real = part_macs(nasnet_mobile())
    assert len(real) == 18 and abs(sum(m["macs"] for m in real[:-1]) / 1e6 - 562.58) < 0.01


def test_same_inputs_give_the_same_validation_numbers_and_unreadable_images_are_skipped(tflite_small_int8,
                                                                                        tflite_small_int8_again):
    """A second int8 conversion (of the small network: the same converter path at 48 px) from the same
    calibration photos, given as a folder that also holds an unreadable file, skips and counts that file and
    reproduces the first one's validation numbers exactly. It is given the range method the first one's
    'auto' chose: 'auto' keeps what that method alone gives."""
    first, again = tflite_small_int8, tflite_small_int8_again
    first_ranges, again_ranges = (m["quantization"]["activation_ranges"] for m in (first, again))
    assert "chosen_by" in first_ranges and "chosen_by" not in again_ranges
    assert again_ranges["method"] == first_ranges["method"]
    assert again["calibration"]["unreadable_skipped"] == 1
    assert again["calibration"]["count"] == first["calibration"]["count"] == 100
    assert again["calibration"]["files"] == first["calibration"]["files"]
    for k in ("top1_agreement", "mean_kl", "logit_sqnr_db", "max_abs_prob_diff"):
        assert again["validation"][k] == first["validation"][k], k


@pytest.mark.parametrize("agreement,flag,status", [(0.965, "97", 1), (0.97, "97", 0), (0.97, "0.97", 0),
                                                   (0.995, "100", 1), (1.0, "100", 0)])
def test_agreement_gate_sets_the_exit_status(agreement, flag, status, capsys):
    """The gate of both converters: exit 1 with one line below the threshold, 0 at or above it. The conversion
    is a stand-in returning a measured agreement; the gate fields come from the real ``agreement_gate``."""
    from converters.common import agreement_gate, agreement_threshold, converter_main
    from converters.tflite import build_parser

    def stand_in_convert(args):
        val = {"top1_agreement": agreement}
        return {"validation": {**val, **agreement_gate(val, agreement_threshold(args.fail_under_agreement))}}

    rc = converter_main(build_parser, stand_in_convert, ["--fail-under-agreement", flag])
    err = capsys.readouterr().err.strip()
    assert rc == status, err
    if status:
        assert err == (f"error: top-1 agreement {100 * agreement:.1f}% is below --fail-under-agreement "
                       f"{100 * agreement_threshold(float(flag)):.1f}%")
    else:
        assert err == ""


def test_the_gate_checks_every_artifact_of_a_several_precision_run(capsys):
    """``--precision fp32,dynamic`` returns one manifest each: a failing one is named, and fails the run."""
    from converters.common import agreement_gate, converter_main
    from converters.tflite import build_parser

    def stand_in_convert(args):  # a stand-in conversion: two measured agreements, the real gate
        assert args.precision == "fp32,dynamic"
        return [{"artifact": f"m_{p}.tflite", "validation": {"top1_agreement": a, **agreement_gate(
            {"top1_agreement": a}, 0.97)}} for p, a in (("fp32", 1.0), ("dynamic", 0.96))]

    rc = converter_main(build_parser, stand_in_convert, ["--precision", "fp32,dynamic", "--fail-under-agreement", "97"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err == "error: top-1 agreement 96.0% is below --fail-under-agreement 97.0% (m_dynamic.tflite)"


def test_precision_lists_are_parsed_in_order_and_checked():
    import argparse

    from converters import executorch, tflite
    from converters.common import ConversionError, Precision, precisions_of

    args = tflite.build_parser().parse_args(["--precision", "FP16, fp32,fp16"])
    assert args.precision == "fp16,fp32" and precisions_of(args) == [Precision.FP16, Precision.FP32]
    assert precisions_of(tflite.build_parser().parse_args([])) == [Precision.FP32]
    assert precisions_of(tflite.build_parser().parse_args(["--int8"])) == [Precision.INT8]
    with pytest.raises(SystemExit):  # argparse: 'invalid choice', exit 2
        tflite.build_parser().parse_args(["--precision", "fp32,int4"])
    with pytest.raises(SystemExit):  # ExecuTorch has no dynamic-range precision
        executorch.build_parser().parse_args(["--precision", "fp32,dynamic"])
    with pytest.raises(ConversionError, match="--cells takes one precision at a time"):
        precisions_of(argparse.Namespace(precision="fp32,fp16", cells=True))


def test_one_savedmodel_serves_every_float_precision_with_the_same_bytes():
    """``KerasExport``: fp32, fp16 and dynamic of one Keras model convert from one SavedModel (written once,
    not once per conversion) into the very flatbuffers fresh conversions give. Pins the TensorFlow converter's
    private SavedModel step this relies on (TensorFlow 2.21)."""
    from unittest import mock

    import keras

    from converters.common import Precision
    from converters.tflite import KerasExport, convert_keras

    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3)(x)
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    # keras.export.ExportArchive() is a TFExportArchive, whose write_out is SavedModelExportArchive's (Keras 3.x)
    from keras.src.export.saved_model_export_archive import SavedModelExportArchive as archive

    precisions = (Precision.FP32, Precision.FP16, Precision.DYNAMIC)
    with mock.patch.object(archive, "write_out", autospec=True, side_effect=archive.write_out) as written:
        export = KerasExport(model)
        shared = {p: convert_keras(model, p, export=export) for p in precisions}
        assert written.call_count == 1
        folder = Path(export._dir)
        assert (folder / "saved_model.pb").is_file()
        fresh = {p: convert_keras(model, p) for p in precisions}
        assert written.call_count == 1 + len(precisions)
    export.close()
    assert not folder.exists()
    for p in precisions:
        assert shared[p] == fresh[p], p
    assert len({*shared.values()}) == 3  # three different artifacts, not one thrice
    with pytest.raises(ValueError, match="another model"):
        convert_keras(keras.Model(inp, out), Precision.FP32, export=KerasExport(model))


def test_agreement_gate_is_recorded_in_the_manifest():
    from converters.common import agreement_gate

    assert agreement_gate({"top1_agreement": 0.97}, None) == {}
    assert agreement_gate({"top1_agreement": 0.97}, 0.97) == {"fail_under_agreement": 0.97, "passed": True}
    assert agreement_gate({"top1_agreement": 0.9699}, 0.97)["passed"] is False


def test_an_agreement_threshold_above_100_percent_is_rejected_before_converting(tmp_path):
    r = run_module("converters.tflite", "--precision", "dynamic", "--output", tmp_path, "--fail-under-agreement", "100.1")
    assert_one_line_error(r)
    assert "give a fraction (0.97) or a percentage (97)" in r.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["missing_weights", "corrupt_weights", "empty_calibration", "output_is_a_file",
                                  "calibration_missing"])
def test_bad_inputs_give_one_line_errors_and_leave_nothing(tmp_path, case):
    out = tmp_path / "out"
    args = ["--int8", "--output", out]
    if case == "missing_weights":
        args += ["--weights", tmp_path / "nope.h5"]
    elif case == "corrupt_weights":
        (tmp_path / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
        args += ["--weights", tmp_path / "w.h5"]
    elif case == "empty_calibration":
        (tmp_path / "empty").mkdir()
        args += ["--calibration", tmp_path / "empty"]
    elif case == "calibration_missing":
        args += ["--calibration", tmp_path / "missing"]
    elif case == "output_is_a_file":
        out.write_text("a file")
    r = run_module("converters.tflite", *args)
    assert_one_line_error(r)
    if out.is_dir():
        assert not list(out.glob("*.tflite")) and not list(out.glob(".*"))


def test_unknown_precision_is_rejected():
    r = run_module("converters.tflite", "--precision", "int4")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_elementwise_tiles_finds_the_int8_forms_one_and_two_tile_operators(tflite_int8, tflite_dir, tmp_path):
    """scripts/elementwise_tiles.py (docs/benchmarking.md, issue 20): XNNPACK splits elementwise ops into 16 KiB
    tiles, so the default model's int8 form has adds and concatenation copies of one tile (the 7x7 cells: no second
    thread can help) where fp32, four times the bytes, has none; a file that is no model is one line, exit 2."""
    import importlib.util
    import math
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("elementwise_tiles", repo / "scripts" / "elementwise_tiles.py")
    tiles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiles)
    ops = tiles.tiles_per_op(str(tflite_dir / tflite_int8["artifact"]))
    assert {"ADD", "MUL", "copy (a CONCATENATION input)"} <= set(ops), set(ops)
    for name, items in ops.items():
        assert all(t == math.ceil(b / tiles.TILE_BYTES) for b, t in items), name
    assert sum(t == 1 for _, t in ops["ADD"]) > 0 and sum(t == 1 for _, t in ops["copy (a CONCATENATION input)"]) > 0
    assert tiles.best_speedup(8 * 1024, 2) == 1.0 and tiles.best_speedup(32 * 1024, 2) == 2.0
    assert 1.0 < tiles.best_speedup(48 * 1024, 2) < 2.0  # three tiles: 2:1
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, str(repo / "scripts" / "elementwise_tiles.py"), str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "cannot read it" in r.stderr, r.stderr
