"""``python -m converters.tflite``: NASNet to LiteRT ``.tflite`` in fp32, fp16, dynamic-range or full int8.

    python -m converters.tflite --int8                      # bundled default model, shipped calibration set
    python -m converters.tflite --precision fp16 --weights imagenet --output out/
    python -m converters.tflite --precision fp32,fp16,dynamic  # three artifacts from one build of the model

Builds the Keras NASNet from the genotype (the NASNet-aware edge form unless ``--no-lowering``), converts
it with the TensorFlow Lite converter, embeds the manifest (labels, preprocessing) in the file, validates
the artifact on held-out real images against the float Keras model, reports which ops XNNPACK runs and
which fall back, and writes ``<name>_<precision>.tflite`` plus ``<name>_<precision>.tflite.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.common import (ConversionError, Precision, Stages, add_common_arguments, agreement_gate,
                               agreement_threshold, artifact_base, precisions_of,
                               check_output_dir, command_line, compare, load_images, now_iso, package_folder,
                               tool_versions, validation_table, write_json_atomic,
                               interval_warning)
from converters.quantized_input import input_grid, shift_stem_input
from edge.quiet import quiet_tensorflow
from edge.runtime.runners import TFLITE_METADATA_NAME, LiteRTRunner

log = logging.getLogger(__name__)


IO_TYPES = ("int8", "uint8", "float")


# ----------------------------------------------------------------------------- conversion
RANGE_METHODS = ("auto", "mse", "mean", "minmax")


class KerasExport:
    """A Keras model's SavedModel, written and loaded once for several conversions of that model.

    ``TFLiteConverter.from_keras_model(m).convert()`` (TensorFlow 2.21, ``lite.py``:
    ``TFLiteKerasModelConverterV2._convert_keras_to_saved_model``) traces the Keras model into a SavedModel in
    a new temporary folder, loads it back, converts it, and deletes it: on every call. For NASNet-Mobile that
    is ~35 s of a ~45 s fp16 conversion (2-core VM, one thread), paid again for fp32, fp16 and dynamic of the
    same model. :meth:`converter` returns the same converter, whose SavedModel step is the first call's, kept:
    the flatbuffers are byte-identical to fresh conversions (pinned by tests/test_tflite.py). Private
    attributes of the converter are set exactly as that method sets them; the test fails when they change.
    """

    def __init__(self, model):
        self.model = model
        self._dir: str | None = None
        self._loaded = None  # (graph_def, input_tensors, output_tensors), trackable object

    def converter(self):
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(self.model)
        write_and_load = conv._convert_keras_to_saved_model

        def reuse(_output_dir):  # the converter's own temporary folder is left unused
            if self._loaded is None:
                import tempfile

                self._dir = tempfile.mkdtemp(prefix="nasnet_edge_savedmodel_")
                found = write_and_load(self._dir)
                if found[0] is None:  # the export failed and the converter falls back: nothing to keep
                    return found
                self._loaded = found, conv._trackable_obj
                return found
            from tensorflow.python.saved_model import signature_constants, tag_constants

            # what _convert_keras_to_saved_model sets after writing the SavedModel
            conv.saved_model_dir = self._dir
            conv._saved_model_tags = {tag_constants.SERVING}
            conv._saved_model_exported_names = [signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
            conv._parse_saved_model_args(always_enable_saved_model_import=conv.experimental_lower_to_saved_model)
            found, conv._trackable_obj = self._loaded
            return found

        conv._convert_keras_to_saved_model = reuse
        return conv

    def close(self) -> None:
        import shutil

        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._loaded = None, None


def convert_keras(model, precision: Precision, calibration=None, io: str = "int8",
                  progress: bool = True, multi_input: bool = False, ranges: str = "auto",
                  report: dict | None = None, input_range: tuple[float, float] | None = None,
                  candidates: dict | None = None, export: KerasExport | None = None) -> bytes:
    """TFLite flatbuffer bytes for a Keras model.

    int8: ``ranges`` 'mse' quantizes activations with error-minimizing ranges (:mod:`converters.ranges`),
    'mean' with the mean of per-image ranges, 'auto' with whichever of the two keeps the int8 model closer
    to the float one on the calibration images, 'minmax' with the calibrator's own min/max. ``report``, if
    given, receives what the range pass did; ``candidates``, if given, receives every candidate's flatbuffer
    ('auto': {'mse': bytes, 'mean': bytes}, the same bytes 'mse' or 'mean' alone would give).
    ``input_range`` pins the input's quantization range (:mod:`converters.quantized_input`). ``export``, a
    :class:`KerasExport` of ``model``, lets several conversions of one model share its SavedModel.
    """
    from edge.quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf
    from tqdm import tqdm

    if export is not None and export.model is not model:
        raise ValueError("convert_keras: export= is the KerasExport of another model")
    conv = export.converter() if export is not None else tf.lite.TFLiteConverter.from_keras_model(model)
    if precision is Precision.FP16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision is Precision.DYNAMIC:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision is Precision.INT8:
        if calibration is None or not len(calibration):
            raise ConversionError("int8 needs calibration images")

        # the converter's native output is captured below; the bar writes to a duplicate of stderr
        bar_stream = os.fdopen(os.dup(2), "w")

        def samples():
            for x in calibration:
                yield x if multi_input else [x[None].astype(np.float32)]

        def representative():
            yield from tqdm(samples(), total=len(calibration), desc="calibrate", unit="img", disable=not progress,
                            leave=False, file=bar_stream)

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[io]
        if ranges not in RANGE_METHODS:
            raise ConversionError(f"unknown activation ranges '{ranges}'; use {', '.join(RANGE_METHODS)}")
        conv._experimental_calibrate_only = ranges != "minmax" or input_range is not None
        if not conv._experimental_calibrate_only:  # otherwise mlir_quantize below sets the input/output type
            conv.inference_input_type = dtype
            conv.inference_output_type = dtype
    from edge.quiet import captured_fds

    with captured_fds(not log.isEnabledFor(logging.DEBUG)) as capture:
        try:
            flat = bytes(conv.convert())
            if precision is Precision.INT8 and conv._experimental_calibrate_only:
                from tensorflow.lite.python.convert import mlir_quantize

                from converters.ranges import refine_calibrated_model

                names = [i.name for i in model.inputs]

                def finish(calibrated_flat: bytes, summary: dict) -> bytes:
                    if input_range is not None:
                        from converters.quantized_input import pin_input_range

                        calibrated_flat = pin_input_range(calibrated_flat, *input_range)
                        summary["input_range"] = [float(v) for v in input_range]
                    # what TFLiteConverter.convert() runs after calibration, with the refined statistics
                    return bytes(mlir_quantize(calibrated_flat, input_data_type=dtype, output_data_type=dtype))

                if ranges == "auto":
                    from converters.ranges import choose_by_median_kl, run_flatbuffer

                    images = list(samples())
                    reference: list = []
                    both = refine_calibrated_model(flat, images, names, progress=progress, bar_file=bar_stream,
                                                   method="both", outputs=reference)
                    quantized = {name: finish(cand, summary) for name, (cand, summary) in both.items()}
                    best, choice = choose_by_median_kl(
                        reference, {name: run_flatbuffer(q, images, names) for name, q in quantized.items()},
                        "the calibration images")
                    flat, summary = quantized[best], {**both[best][1], **choice}
                    if candidates is not None:
                        candidates.update(quantized)
                elif ranges != "minmax":
                    cand, summary = refine_calibrated_model(flat, list(samples()), names, progress=progress,
                                                            bar_file=bar_stream, method=ranges)
                    flat = finish(cand, summary)
                else:
                    summary = {"method": "minmax"}
                    flat = finish(flat, summary)
                if report is not None:
                    report.update(summary)
            elif precision is Precision.INT8 and report is not None:
                report.update({"method": "minmax"})
            return flat
        except Exception as e:
            detail = ""
            if capture is not None:
                capture.seek(0)
                lines = [ln for ln in capture.read().decode(errors="replace").splitlines() if "error" in ln.lower()]
                detail = lines[-1][:200] if lines else ""
            raise ConversionError(f"TFLite conversion failed: {str(e).splitlines()[0][:200]} {detail}".strip()) from None


def embed_metadata(flatbuffer: bytes, manifest: dict, labels: list[str]) -> bytes:
    """Embed the standard TFLite metadata and the toolkit's manifest; append labels.txt + manifest.json as a zip.

    ``TFLITE_METADATA`` (:mod:`edge.tflite_metadata`) is what MediaPipe Tasks, the LiteRT Support/Task libraries
    and ML Model Binding read; ``nasnet_edge_manifest`` is what ``edge.runtime`` reads. The appended zip holds
    the associated files the standard metadata names (interpreters ignore bytes after the flatbuffer).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from edge.artifact.tflite_metadata import STANDARD_METADATA_NAME, associated_files_zip, model_metadata

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConversionError(f"expected one input and one output, the model has {len(graph.inputs)} and "
                              f"{len(graph.outputs)}")
    classes = int(graph.tensors[graph.outputs[0]].shape[-1])
    if classes != len(labels):
        raise ConversionError(f"the model has {classes} outputs but {len(labels)} labels")
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    io_type = types[graph.tensors[graph.inputs[0]].type]
    standard = model_metadata(manifest, labels, io_type)
    taken = {m.name.decode() if isinstance(m.name, bytes) else m.name for m in model.metadata or []}
    for name, payload in ((STANDARD_METADATA_NAME, standard),
                          (TFLITE_METADATA_NAME, json.dumps(manifest, sort_keys=True).encode())):
        if name in taken:
            raise ConversionError(f"the model already carries '{name}' metadata")
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buf)
        md = schema.MetadataT()
        md.name = name
        md.buffer = len(model.buffers) - 1
        model.metadata = (model.metadata or []) + [md]
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return out + associated_files_zip(labels, manifest)


# ----------------------------------------------------------------------------- reports
def op_histogram(path: Path) -> dict[str, int]:
    """Operator counts in the flatbuffer (before any delegate)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts: collections.Counter = collections.Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            oc = model.OperatorCodes(sg.Operators(i).OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            counts[names.get(code, str(code))] += 1
    return dict(counts.most_common())


def delegation_report(path: Path, threads: int = 1) -> dict:
    """How XNNPACK partitions the model: delegate partitions and the ops left on LiteRT kernels.

    The interpreter keeps the original nodes after a delegate replaces them; the execution plan is not
    exposed to Python. A delegate node's inputs and outputs bound its partition, so walking back from
    each partition's outputs to its inputs finds the nodes it covers; the rest fall back.
    """
    runner = LiteRTRunner(path, threads=threads)
    ops = runner.interpreter._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {int(t): o["index"] for o in original for t in o["outputs"]}
    covered: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        stack, seen = [int(t) for t in d["outputs"]], set()
        while stack:
            t = stack.pop()
            if t in stop or t in seen or t not in producer:
                continue
            seen.add(t)
            n = producer[t]
            covered.add(n)
            stack.extend(int(x) for x in ops[n]["inputs"] if x >= 0)
    fallback = collections.Counter(o["op_name"] for o in original if o["index"] not in covered)
    return {"delegate": "xnnpack", "partitions": len(delegates), "ops": len(original),
            "delegated_ops": len(covered), "fallback_ops": sum(fallback.values()),
            "fallback": dict(fallback.most_common())}


# ----------------------------------------------------------------------------- per-cell export
def export_cells(plan, weights, precision: Precision, calibration: np.ndarray | None, io: str,
                 out_dir: Path, whole_model, ranges: str = "mse") -> dict:
    """Every part (stem, cells, head) as its own ``.tflite`` with its real input shapes.

    int8 parts are calibrated on the activations the whole float network produces at that point for
    the same calibration images, so each part gets the quantization statistics it has inside the
    network. Writes ``cells/cells.json`` listing the parts in order with shapes, MACs and files.
    """
    import keras
    from tqdm import tqdm

    from edge.model.keras_emit import emit_keras_parts, load_keras_weights, part_inputs, part_output_names
    from edge.model.profile import part_macs

    cfg = plan.config
    cell_dir = out_dir / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    parts = emit_keras_parts(plan)
    names = part_output_names(plan)  # the stem's and every cell's output layer
    feeds_per_image = None
    if calibration is not None:
        tap = keras.Model(whole_model.input, [whole_model.get_layer(n).output for n in names])
        acts = [np.asarray(a) for a in tap.predict(calibration, verbose=0, batch_size=16)]
        feeds_per_image = [part_inputs(plan, [a[i] for a in acts], calibration[i]) for i in range(len(calibration))]
    macs = {m["name"]: m for m in part_macs(cfg)}
    listing = []
    for k, (name, model) in enumerate(tqdm(parts, desc="cells", unit="part")):
        load_keras_weights(model, weights, strict=True)
        calib = None
        if feeds_per_image is not None:
            calib = [[f[k][j][None].astype(np.float32) for j in range(len(f[k]))] for f in feeds_per_image]
        flat = convert_keras(model, precision, calib, io, progress=False, multi_input=True, ranges=ranges)
        path = cell_dir / f"{k:02d}_{name}_{precision.value}.tflite"
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_bytes(flat)
        os.replace(tmp, path)
        listing.append({"index": k, "name": name, "file": path.name,
                        "inputs": [list(t.shape[1:]) for t in model.inputs],
                        "output": list(model.outputs[0].shape[1:]), "macs": macs[name]["macs"],
                        "params": macs[name]["params"], "size_bytes": path.stat().st_size,
                        "delegation": delegation_report(path)})
    manifest = {"model": cfg.name, "precision": precision.value, "lowered": plan.target != "reference",
                "plan": plan.describe(), "parts": listing, "total_macs": sum(p["macs"] for p in listing)}
    write_json_atomic(cell_dir / "cells.json", manifest)
    return manifest


# ----------------------------------------------------------------------------- the job
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converters.tflite", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(p, [x.value for x in Precision])
    p.add_argument("--io", choices=IO_TYPES, default="float",
                   help="int8 model input/output type. 'float' (default) keeps quantize/dequantize inside the model "
                        "(fully delegated to XNNPACK; MediaPipe Tasks and ML Model Binding take it as it is); "
                        "'uint8' takes the raw pixels (MediaPipe takes it too; XNNPACK leaves its two QUANTIZE ops "
                        "to LiteRT); 'int8' (pixel - 128) is refused by MediaPipe Tasks. README: io types")
    p.add_argument("--activation-ranges", choices=list(RANGE_METHODS), default="auto",
                   help="int8 activation ranges (converters/ranges.py): 'mse' minimizes each tensor's quantization "
                        "error on the calibration images; 'mean' is the mean of each image's own min/max (one image "
                        "with massive activations no longer sets the step); 'auto' quantizes with both and keeps the "
                        "one whose int8 model is closer to the float one on the calibration images (lowest median "
                        "KL); 'minmax' is the TFLite calibrator's own")
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu",
                   help="'gpu': the edge form for LiteRT's GPU accelerator (fp32/fp16; no PAD -> MAX_POOL_2D, "
                        "docs/gpu.md), named <model>_edge_gpu_<precision>.tflite, with a GPU delegation report")
    p.add_argument("--gpu-images", type=int, default=8,
                   help="--target gpu: validation images also run on the GPU (fp32 and fp16), where an adapter exists")
    return p


def convert(args: argparse.Namespace) -> dict | list[dict]:
    """Run the conversion; returns the manifest (also written beside the artifact), or one manifest per
    precision, in order, when ``--precision`` names several (``fp32,fp16,dynamic``).

    Several precisions share what does not depend on the precision: the weights, the images, the Keras
    reference and its predictions, and for the float ones (fp32, fp16, dynamic) the edge-form Keras model
    and its SavedModel (:class:`KerasExport`), so each artifact after the first costs its conversion and
    validation only. Each artifact is the same file a run with that precision alone writes.
    """
    from edge.quiet import import_tensorflow

    quiet_tensorflow()
    from edge.runtime.runners import _litert

    _litert()  # import LiteRT now: a Ctrl-C inside its import later would read as "no LiteRT runtime"
    from edge.model.sources import reference_weights, resolve_weights

    precisions = precisions_of(args)
    threshold = agreement_threshold(args.fail_under_agreement)
    out_dir = check_output_dir(args.output)
    lowered = not args.no_lowering
    gpu_target = getattr(args, "target", "cpu") == "gpu"
    if gpu_target and not lowered:
        raise ConversionError("--target gpu is a form of the edge form; the stock graph runs on LiteRT's GPU as it "
                              "is (docs/gpu.md): drop --target gpu or --no-lowering")
    for precision in precisions:
        if gpu_target and precision not in (Precision.FP32, Precision.FP16):
            raise ConversionError(f"--target gpu takes --precision fp32 or fp16, not {precision.value} (the GPU "
                                  "computes in float)")
    # load, reference; then per precision: build (int8 or the first float one), convert, validate, delegation
    builds = int(Precision.INT8 in precisions) + int(any(p is not Precision.INT8 for p in precisions))
    stages = Stages(2 + builds + len(precisions) * (3 + gpu_target + bool(args.cells)))

    with stages.stage("load weights"):
        src = resolve_weights(args.weights)
        cfg = src.config
        pre = cfg.preprocessing
        weights = reference_weights(src)
        calib_dir = args.calibration or package_folder("calibration")
        val_dir = args.validation or package_folder("validation")
        validation = load_images(val_dir, pre, what="validation")
        calibration = None
        if Precision.INT8 in precisions:
            calibration = load_images(calib_dir, pre, limit=args.num_calibration, what="calibration",
                                      exclude={f.resolve() for f in validation.files})

    from edge.model.keras_emit import build_keras_model, load_keras_weights

    with stages.stage("build the Keras reference and predict the validation images"):
        import_tensorflow()
        reference = build_keras_model(cfg, classifier_activation=None)
        load_keras_weights(reference, weights)
        ref_logits = np.asarray(reference.predict(validation.batch, verbose=0, batch_size=16))

    shared = _Shared(args, src, cfg, weights, reference, ref_logits, validation, calibration, lowered, gpu_target,
                     out_dir, threshold, stages)
    try:
        manifests = [_convert_one(shared, precision) for precision in precisions]
    finally:
        for _, _, _, export in shared.forms.values():
            if export is not None:
                export.close()

    print()
    print(validation_table([(m["artifact"], m["validation"]) for m in manifests]))
    for m in manifests:
        val, delegation = m["validation"], m["delegation"]
        if Precision(m["precision"]).quantized and (warning := interval_warning(val)):
            log.warning(warning)
        print(f"\nXNNPACK ({m['artifact']}): {delegation['partitions']} partition(s), {delegation['delegated_ops']}/"
              f"{delegation['ops']} ops delegated, {delegation['fallback_ops']} on LiteRT kernels"
              + (f" ({', '.join(f'{k} x{v}' for k, v in delegation['fallback'].items())})"
                 if delegation['fallback'] else ""))
        if m.get("delegation_gpu"):
            from converters.gpu import summary_line

            print(summary_line(m["delegation_gpu"]))
        print(f"wrote {out_dir / m['artifact']} ({m['size_bytes'] / 1e6:.1f} MB) and {m['artifact']}.json")
    return manifests[0] if len(manifests) == 1 else manifests


@dataclass
class _Shared:
    """What every precision of one ``convert`` run reads: the source, the images, the Keras reference."""
    args: argparse.Namespace
    src: object
    cfg: object
    weights: dict
    reference: object
    ref_logits: np.ndarray
    validation: object
    calibration: object
    lowered: bool
    gpu_target: bool
    out_dir: Path
    threshold: float | None
    stages: Stages
    # "int8" | "float" -> (Keras model, its weights, its plan, its KerasExport or None)
    forms: dict = field(default_factory=dict)


def _form(shared: _Shared, precision: Precision):
    """(model, weights, plan, export) that ``precision`` converts, built once per form: int8 has its own
    (the int8 edge form, its stem shifted to the input grid); the float precisions share one."""
    key = "int8" if precision is Precision.INT8 else "float"
    if key in shared.forms:
        return shared.forms[key]
    from edge.model.keras_emit import emit_keras, load_keras_weights
    from edge.model.passes import GPU, REFERENCE, XNNPACK_FP32, XNNPACK_INT8, build_plan

    cfg, weights = shared.cfg, shared.weights
    grid = input_grid(cfg.preprocessing) if precision is Precision.INT8 else None
    if not shared.lowered:
        target = REFERENCE
    else:
        target = GPU if shared.gpu_target else XNNPACK_INT8 if precision is Precision.INT8 else XNNPACK_FP32
    with shared.stages.stage(f"build Keras model ({'edge form' if shared.lowered else 'stock graph'}"
                             f"{', int8' if grid is not None else ''})"):
        plan = build_plan(cfg, target)
        model, model_weights = shared.reference, plan.lower_weights(weights)
        if grid is not None:  # int8: the quantized input holds the pixels exactly (converters/quantized_input.py)
            model_weights = shift_stem_input(model_weights, grid.delta)
        if shared.lowered or grid is not None:
            model = emit_keras(plan, classifier_activation=None)
            load_keras_weights(model, model_weights)
    # the float form is converted once per float precision: export its SavedModel once
    export = KerasExport(model) if key == "float" else None
    shared.forms[key] = (model, model_weights, plan, export)
    return shared.forms[key]


def _convert_one(shared: _Shared, precision: Precision) -> dict:
    args, cfg, src, stages = shared.args, shared.cfg, shared.src, shared.stages
    timings_before = set(stages.timings)
    pre, lowered, gpu_target, validation = cfg.preprocessing, shared.lowered, shared.gpu_target, shared.validation
    model, model_weights, plan, export = _form(shared, precision)
    # int8: the quantized input holds the pixels exactly (converters/quantized_input.py)
    grid = input_grid(pre) if precision is Precision.INT8 else None
    calibration = shared.calibration if precision is Precision.INT8 else None

    name = artifact_base(cfg, lowered, args.name)
    if gpu_target and not args.name:
        name += "_gpu"
    artifact = shared.out_dir / f"{name}_{precision.value}.tflite"
    # what the artifact takes: the same images on its input grid (x + delta), for calibration and validation
    shift = np.float32(grid.delta) if grid is not None else np.float32(0)
    calib_batch = calibration.batch + shift if calibration is not None else None

    with stages.stage(f"convert to {precision.value}" + (" (calibrating)" if calibration is not None else "")):
        ranges_report: dict = {}
        flat = convert_keras(model, precision, calib_batch, args.io, ranges=args.activation_ranges,
                             report=ranges_report, input_range=grid.range if grid is not None else None,
                             export=export)

    embedded = {"format": "tflite", "model": cfg.name, "precision": precision.value, "lowered": lowered,
                "labels": src.labels, "preprocessing": (grid.preprocessing if grid else pre).to_dict(),
                "io": args.io if precision is Precision.INT8
                else "float", "output": "logits (apply softmax for probabilities)",
                "target": "gpu" if gpu_target else "cpu"}
    from edge.artifact.tflite_metadata import model_about

    embedded["about"] = model_about(src.kind, src.meta, cfg.name, src.labels, precision.value, lowered,
                                    embedded["io"], src.describe().get("sha256"))
    tmp = artifact.with_name("." + artifact.name + ".tmp")
    try:
        tmp.write_bytes(embed_metadata(flat, embedded, src.labels))
        with stages.stage(f"validate {precision.value} on held-out images"):
            runner = LiteRTRunner(tmp, threads=2)
            logits = runner.predict(validation.batch + shift)
            val = compare(shared.ref_logits, logits)
        with stages.stage(f"delegation report ({precision.value})"):
            delegation = delegation_report(tmp)
            histogram = op_histogram(tmp)
        gpu = None
        if gpu_target:
            from converters.gpu import gpu_report

            with stages.stage(f"GPU delegation report ({precision.value})"):
                n = max(0, args.gpu_images)
                gpu = gpu_report(tmp, validation.batch[:n], logits[:n])
                if gpu["pad_pool_pairs"]:
                    raise ConversionError(f"the GPU form still has {gpu['pad_pool_pairs']} PAD -> pool pair(s); "
                                          "this is a bug in the GPU lowering")
        os.replace(tmp, artifact)
    finally:
        if tmp.exists():
            tmp.unlink()

    from edge.model.weights import sha256

    manifest = {
        **embedded,
        "artifact": artifact.name, "created": now_iso(), "command": command_line(),
        "source": src.describe(), "config": cfg.to_dict(), "plan": plan.describe(),
        "calibration": ({**calibration.describe(args.calibration), "activation_ranges": ranges_report}
                        if calibration is not None else None),
        "validation": {"reference": "Keras float32 model (reference network, not lowered)", **val,
                       "images_folder": str(args.validation) if args.validation else "package validation set",
                       "unreadable_skipped": len(validation.skipped)},
        "input_grid": ({"zero_point_uint8": grid.zero_point_uint8, "range": list(grid.range),
                        "delta_folded_into_stem": grid.delta, "doc": "converters/quantized_input.py"}
                       if grid is not None else None),
        "delegation": delegation, "op_histogram": histogram,
        **({"delegation_gpu": gpu} if gpu is not None else {}),
        "size_bytes": artifact.stat().st_size, "sha256": sha256(artifact),
        "tools": tool_versions("tensorflow-cpu", "ai-edge-litert", "keras", "torch", "numpy"),
        # the run's shared stages (load, reference), then this artifact's own (with the form's build if it was
        # built for it)
        "stage_seconds": {**{k: stages.timings[k] for k in list(stages.timings)[:2]},
                          **{k: v for k, v in stages.timings.items() if k not in timings_before}},
    }
    manifest["validation"].update(agreement_gate(val, shared.threshold))
    if args.cells:
        with stages.stage(f"per-cell export ({precision.value})"):
            cells = export_cells(plan, model_weights, precision, calib_batch, args.io, shared.out_dir, model,
                                 ranges=ranges_report.get("method", args.activation_ranges))
        manifest["cells"] = {"folder": "cells", "manifest": "cells/cells.json", "count": len(cells["parts"])}
    write_json_atomic(artifact.with_name(artifact.name + ".json"), manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from converters.common import converter_main

    return converter_main(build_parser, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
