"""``python -m converters.tflite``: NASNet to LiteRT ``.tflite`` in fp32, fp16, dynamic-range or full int8.

    python -m converters.tflite --int8                      # bundled default model, shipped calibration set
    python -m converters.tflite --precision fp16 --weights imagenet --output out/
    python -m converters.tflite --precision fp32,fp16,dynamic  # three artifacts from one build of the model

One run of the conversion pipeline (:mod:`converters.pipeline`) with :class:`LiteRTBackend`: the Keras NASNet
emitted from the plan of the target (the NASNet-aware edge form unless ``--no-lowering``), converted with the
TensorFlow Lite converter, the manifest's labels and preprocessing embedded in the file, validated on held-out
real images against the float Keras model, with the ops XNNPACK runs and those it leaves to LiteRT; writes
``<name>_<precision>.tflite`` and its manifest ``<name>_<precision>.tflite.json`` (``<name>``: the
configuration's, ``nasnet_mobile_edge``, or ``--name``).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from converters import pipeline
from converters.common import ConversionError, Precision, add_common_arguments, write_json_atomic
from converters.pipeline import Backend, Built, Converted, Job, Loaded, Reference
from converters.quantized_input import input_grid, shift_stem_input
from edge.artifact.manifest import IO, CellsManifest, Converter, Delegation, Format, PartEntry, Quantization
from edge.cli import DefaultsHelpFormatter
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


def frame_input_model(model, frame):
    """``model`` behind a center crop: it takes ``frame.frame`` pixels square and gives ``model`` the center
    ``frame.size`` (one STRIDED_SLICE in the flatbuffer, run by XNNPACK; :class:`converters.pipeline.FrameInput`)."""
    import tensorflow as tf

    x = tf.keras.Input((frame.frame, frame.frame, int(model.inputs[0].shape[-1])), name="frame")
    y = tf.keras.layers.Cropping2D(frame.pad, name="center_crop")(x)
    return tf.keras.Model(x, model(y), name=f"{model.name}_frame_input")


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
    standard = model_metadata(manifest, labels, io_type, network_input=_sliced_input(model))
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


def _sliced_input(model) -> int | None:
    """The side of the square the graph slices out of its input first (frame input: 224 of 256), following a
    QUANTIZE of the input; None when the input is not sliced."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = model.subgraphs[0]
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    tensor = graph.inputs[0]
    for _ in range(2):
        op = next((o for o in graph.operators if o.inputs is not None and tensor in list(o.inputs)), None)
        if op is None:
            return None
        code = model.operatorCodes[op.opcodeIndex]
        name = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        if name in ("STRIDED_SLICE", "SLICE"):
            shape = list(graph.tensors[op.outputs[0]].shape)
            return int(shape[1]) if len(shape) == 4 and shape[1] == shape[2] else None
        if name != "QUANTIZE":
            return None
        tensor = op.outputs[0]
    return None


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


def delegation_report(path: Path, threads: int = 1) -> Delegation:
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
    inside = collections.Counter(o["op_name"] for o in original if o["index"] in covered)
    fallback = collections.Counter(o["op_name"] for o in original if o["index"] not in covered)
    return Delegation.from_counts("xnnpack", len(delegates), inside, fallback)


# ----------------------------------------------------------------------------- per-cell export
def export_cells(plan, weights, precision: Precision, calibration: np.ndarray | None, io: str,
                 out_dir: Path, whole_model, ranges: str = "mse", backend: str = "xnnpack") -> CellsManifest:
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
        listing.append(PartEntry(index=k, name=name, file=path.name, precision=precision.value,
                                 inputs=[list(t.shape[1:]) for t in model.inputs], layout="NHWC",
                                 output=list(model.outputs[0].shape[1:]), macs=macs[name]["macs"],
                                 params=macs[name]["params"], size_bytes=path.stat().st_size,
                                 delegation=delegation_report(path)))
    manifest = CellsManifest(Format.TFLITE.value, Converter.LITERT.value, backend, cfg.name, precision.value,
                             plan.target != "reference", plan.describe(), listing)
    write_json_atomic(cell_dir / "cells.json", manifest.to_dict())
    return manifest


# ----------------------------------------------------------------------------- the backend
class LiteRTBackend(Backend):
    """LiteRT: the Keras emitter, the TFLite converter, the LiteRT interpreter, XNNPACK's partitions."""

    converter = Converter.LITERT
    format = Format.TFLITE
    reference_description = "Keras float32 model (reference network, not lowered)"
    tool_packages = ("tensorflow-cpu", "ai-edge-litert", "keras", "torch", "numpy")

    def __init__(self, io: str = "float", activation_ranges: str = "auto", target: str = "cpu", gpu_images: int = 8):
        self.io, self.activation_ranges, self.device, self.gpu_images = io, activation_ranges, target, gpu_images

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LiteRTBackend:
        return cls(args.io, args.activation_ranges, getattr(args, "target", "cpu"), getattr(args, "gpu_images", 8))

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    @property
    def backend(self) -> str:
        return "gpu" if self.gpu else "xnnpack"

    @property
    def target(self) -> str:
        return self.device

    def check(self, job: Job) -> None:
        if self.gpu and not job.lowered:
            raise ConversionError("--target gpu is a form of the edge form; the stock graph runs on LiteRT's GPU as "
                                  "it is (docs/gpu.md): drop --target gpu or --no-lowering")
        for precision in job.precisions:
            if self.gpu and precision not in (Precision.FP32, Precision.FP16):
                raise ConversionError(f"--target gpu takes --precision fp32 or fp16, not {precision.value} (the GPU "
                                      "computes in float)")
        quiet_tensorflow()
        from edge.runtime.runners import _litert

        _litert()  # import LiteRT now: a Ctrl-C inside its import later would read as "no LiteRT runtime"

    def reference(self, source, images: np.ndarray) -> Reference:
        from edge.model.keras_emit import build_keras_model, load_keras_weights
        from edge.model.sources import reference_weights
        from edge.quiet import import_tensorflow

        weights = reference_weights(source)
        import_tensorflow()
        model = build_keras_model(source.config, classifier_activation=None)
        load_keras_weights(model, weights)
        return Reference(model, weights, np.asarray(model.predict(images, verbose=0, batch_size=16)))

    def plan_target(self, job: Job, precision: Precision) -> str:
        from edge.model.passes import GPU, REFERENCE, XNNPACK_FP32, XNNPACK_INT8

        if not job.lowered:
            return REFERENCE.name
        return (GPU if self.gpu else XNNPACK_INT8 if precision is Precision.INT8 else XNNPACK_FP32).name

    def form_key(self, job: Job, precision: Precision):
        # int8 has its own form (its target, its stem shifted to the input grid); the float precisions share one
        return self.plan_target(job, precision), precision is Precision.INT8

    def build_label(self, job: Job, precision: Precision) -> str:
        return (f"build Keras model ({'edge form' if job.lowered else 'stock graph'}"
                f"{', int8' if precision is Precision.INT8 else ''})")

    def build(self, job: Job, loaded: Loaded, plan, precision: Precision) -> Built:
        from edge.model.keras_emit import emit_keras, load_keras_weights

        grid = input_grid(loaded.config.preprocessing) if precision is Precision.INT8 else None
        model, weights = loaded.reference.model, plan.lower_weights(loaded.reference.weights)
        if grid is not None:  # int8: the quantized input holds the pixels exactly (converters/quantized_input.py)
            weights = shift_stem_input(weights, grid.delta)
        if job.lowered or grid is not None:  # else the stock float graph is the reference itself
            model = emit_keras(plan, classifier_activation=None)
            load_keras_weights(model, weights)
        pre, network = grid.preprocessing if grid else loaded.config.preprocessing, model
        if loaded.frame is not None:  # frame input: the whole square in, the network's crop sliced inside
            model, pre = frame_input_model(model, loaded.frame), loaded.frame.preprocessing(pre)
        # the float form is converted once per float precision: its SavedModel is written once (KerasExport)
        export = KerasExport(model) if grid is None else None
        return Built(plan, model, weights, pre, input_shift=grid.delta if grid else 0.0,
                     extra={"grid": grid, "export": export, "network": network})

    def artifact_name(self, job: Job, base: str, precision: Precision) -> str:
        return f"{base}{'_gpu' if self.gpu and not job.name else ''}_{precision.value}.tflite"

    def convert(self, job: Job, loaded: Loaded, built: Built, precision: Precision) -> Converted:
        grid = built.extra["grid"]
        calibration = None
        if precision is Precision.INT8:  # on the artifact's input grid, as validation
            calibration = loaded.calibration.batch + np.float32(built.input_shift)
        ranges: dict = {}
        flat = convert_keras(built.model, precision, calibration, self.io, ranges=self.activation_ranges,
                             report=ranges, input_range=grid.range if grid is not None else None,
                             export=built.extra["export"])
        io = self.io if precision is Precision.INT8 else "float"
        quantization = None
        if precision is Precision.INT8:
            quantization = Quantization(
                "TFLite full-integer post-training: per-channel int8 weights, int8 activations calibrated on real "
                "images", activation_ranges=ranges,
                input_grid={"zero_point_uint8": grid.zero_point_uint8, "range": list(grid.range),
                            "delta_folded_into_stem": grid.delta, "doc": "converters/quantized_input.py"})
        elif precision is Precision.DYNAMIC:
            quantization = Quantization("TFLite dynamic range: int8 weights, float activations")
        return Converted(flat, IO(io, io, "NHWC"), quantization)

    def about(self, loaded: Loaded, precision: Precision, lowered: bool, io: IO) -> dict:
        from edge.artifact.tflite_metadata import model_about

        src = loaded.source
        return model_about(src.kind, src.meta, src.config.name, src.labels, precision.value, lowered, io.input,
                           src.describe().get("sha256"))

    def serialize(self, converted: Converted, embedded: dict, path: Path) -> None:
        path.write_bytes(embed_metadata(converted.payload, embedded, embedded["labels"]))

    def run(self, path: Path, images: np.ndarray) -> np.ndarray:
        return LiteRTRunner(path, threads=2).predict(images)

    def report(self, path: Path, converted: Converted, built: Built, loaded: Loaded,
               logits: np.ndarray | None) -> tuple[Delegation, dict[str, int]]:
        delegation = delegation_report(path)
        if self.gpu:
            from converters.gpu import gpu_report

            n = max(0, self.gpu_images)
            gpu = gpu_report(path, loaded.validation.batch[:n], logits[:n])
            if gpu["pad_pool_pairs"]:
                raise ConversionError(f"the GPU form still has {gpu['pad_pool_pairs']} PAD -> pool pair(s); "
                                      "this is a bug in the GPU lowering")
            delegation.detail["gpu"] = gpu
        return delegation, op_histogram(path)

    def summary_lines(self, manifest) -> list[str]:
        gpu = manifest.delegation.detail.get("gpu")
        if gpu is None:
            return []
        from converters.gpu import summary_line

        return [summary_line(gpu)]

    def export_cells(self, job: Job, loaded: Loaded, built: Built, converted: Converted, precision: Precision,
                     folder: Path) -> CellsManifest:
        calibration = None
        if precision is Precision.INT8:
            calibration = loaded.calibration.batch + np.float32(built.input_shift)
            if loaded.frame is not None:  # the parts are the network's own: its input is the frames' center
                calibration = loaded.frame.center(calibration)
        # the parts take the range method the whole model's 'auto' chose
        ranges = ((converted.quantization.activation_ranges or {}) if converted.quantization else {}).get(
            "method", self.activation_ranges)
        return export_cells(built.plan, built.weights, precision, calibration, self.io, folder,
                            built.extra["network"], ranges=ranges, backend=self.backend)


# ----------------------------------------------------------------------------- the command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converters.tflite", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
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
    p.add_argument("--frame-input", action=argparse.BooleanOptionalAction, default=True,
                   help="the model takes the whole center square resized to size / crop fraction (NASNet: 256 for "
                        "its 224 crop) and crops its center inside the graph (one delegated slice), so a client "
                        "that resizes the whole frame to the model's input, as MediaPipe Tasks does, sees the "
                        "toolkit's center crop (docs/clients.md); --no-frame-input: the network's own input, the "
                        "crop left to the client")
    p.add_argument("--gpu-images", type=int, default=8,
                   help="--target gpu: validation images also run on the GPU (fp32 and fp16), where an adapter exists")
    return p




def convert(args: argparse.Namespace) -> dict | list[dict]:
    """Run the conversion (:func:`converters.pipeline.run`); returns the manifest (also written beside the
    artifact), or one manifest per precision, in order, when ``--precision`` names several
    (``fp32,fp16,dynamic``).

    Several precisions share what does not depend on the precision: the weights, the images, the Keras
    reference and its predictions, and for the float ones (fp32, fp16, dynamic) the edge-form Keras model
    and its SavedModel (:class:`KerasExport`), so each artifact after the first costs its conversion and
    validation only. Each artifact is the same file a run with that precision alone writes.
    """
    return pipeline.convert(args, LiteRTBackend.from_args(args))


def main(argv: list[str] | None = None) -> int:
    from converters.common import converter_main

    return converter_main(build_parser, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
