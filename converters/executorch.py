"""``python -m converters.executorch``: NASNet to an ExecuTorch ``.pte`` program, fp32, fp16 or int8.

    python -m converters.executorch --int8                  # bundled default model, XNNPACK, PT2E int8
    python -m converters.executorch --precision fp32 --weights imagenet

One run of the conversion pipeline (:mod:`converters.pipeline`) with :class:`ExecuTorchBackend`: the PyTorch
NASNet emitted from the plan of the target (the NASNet-aware edge form unless ``--no-lowering``), exported with
``torch.export``, quantized in int8 with PT2E and the XNNPACK quantizer (per-channel weights, activations
calibrated on real images), lowered with ``to_edge_transform_and_lower`` and the XNNPACK partitioner, validated
through ``executorch.runtime`` on held-out real images, with what stays outside the delegate; writes
``<name>_<backend>_<precision>.pte`` and its manifest ``<name>_<backend>_<precision>.pte.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from converters import pipeline
from converters.common import ConversionError, Precision, add_common_arguments, write_json_atomic
from converters.pipeline import Backend, Built, Converted, Job, Loaded, Reference
from edge.artifact.manifest import (DELEGATE_TARGETS, IO, CellsManifest, Converter, Delegation, Format, PartEntry,
                                    Quantization)
from edge.cli import DefaultsHelpFormatter
from edge.quiet import quiet_executorch_import

log = logging.getLogger(__name__)

# int8 default: every part int8. Before ExecuTorch's int8 pads were fixed (nasnet_xnnpack_configs), each
# stride-2 pad ran in fp32 between two converts, which made the pad-heavy stem cells slower in int8 and
# keeping stem, cell_00 and cell_01 in fp32 paid (0.708x the edge fp32 program against 0.749x all-int8).
# With int8 pads the two ran the same (0.695x / 0.696x, docs/lowering.md section 4), so the default is
# plain int8; --fp32-parts stays for models whose early layers do not gain from int8.
DEFAULT_FP32_PARTS = "none"

PRECISIONS = [Precision.FP32.value, Precision.FP16.value, Precision.INT8.value]


def partitioner_for(backend: str):
    """The partitioner of ``backend``, or a clear error naming what to install."""
    with quiet_executorch_import():
        try:
            if backend == "xnnpack":
                from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

                return XnnpackPartitioner(configs=nasnet_xnnpack_configs())
            if backend == "vulkan":
                from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

                return VulkanPartitioner()
            if backend == "coreml":
                from executorch.backends.apple.coreml.partition import CoreMLPartitioner

                return CoreMLPartitioner()
            if backend == "qnn":
                from executorch.backends.qualcomm.partition.qnn_partitioner import QnnPartitioner  # noqa: F401

                raise ConversionError("the QNN partitioner needs the Qualcomm AI Engine Direct SDK "
                                      "(QNN_SDK_ROOT) and a target SoC; it is not set up on this machine")
        except (ImportError, ModuleNotFoundError, OSError) as e:
            raise ConversionError(f"backend '{backend}' is not available here ({e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0][:100]}); use --backend xnnpack") from None
    raise ConversionError(f"unknown backend '{backend}'")


def nasnet_xnnpack_configs() -> list:
    """ExecuTorch's XNNPACK partitioner configs, with the constant pad taken in int8 as well as fp32.

    Upstream cause (ExecuTorch 1.5.1, ``partition/config/generic_node_configs.py``):
    ``ConstantPadConfig.supported_precision_types`` returns ``[FP32]`` only. A quantized pad (dq -> pad -> q,
    one scale and zero point on both sides: :func:`nasnet_xnnpack_quantizer` annotates it so) is then
    lowered as an fp32 pad between two XNNPACK convert nodes: int8 -> fp32, pad in fp32, fp32 -> int8,
    and an NCHW/NHWC transpose pair around each. XNNPACK itself supports int8 static constant pad
    (``xnn_define_static_constant_pad`` quantizes the padding value with the output's zero point) and its
    subgraph optimizer folds a zero pad into the following (depthwise) convolution's padding, which it
    then does in int8 as it does in fp32. Every stride-2 separable conv of NASNet has such a pad
    ('same' padding is asymmetric at stride 2, which a PyTorch conv cannot express).
    """
    with quiet_executorch_import():
        from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
        from executorch.backends.xnnpack.partition.config.generic_node_configs import ConstantPadConfig
        from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType

    class QuantizedConstantPadConfig(ConstantPadConfig):
        def supported_precision_types(self):
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    return [QuantizedConstantPadConfig if c is ConstantPadConfig else c for c in ALL_PARTITIONER_CONFIGS]


def _half_wrapper(model):
    import copy

    import torch

    class Half(torch.nn.Module):
        """fp32 in, fp32 out, fp16 inside: XNNPACK's fp16 kernels with the same I/O as the fp32 program."""

        def __init__(self, m):
            super().__init__()
            # a copy: .half() converts in place, and the caller's network is converted again (other
            # precisions of one run, the parts of --cells)
            self.m = copy.deepcopy(m).half()

        def forward(self, *xs):
            return self.m(*(x.half() for x in xs)).float()

    return Half(model).eval()


def part_module_names(parts: str | None, n_cells: int) -> tuple[str, ...]:
    """``--fp32-parts`` ("stem,cell_00,head", "none") as module names of the PyTorch NASNet."""
    if not parts or parts.strip().lower() == "none":
        return ()
    names = []
    for part in (x.strip() for x in parts.split(",") if x.strip()):
        if part in ("stem", "head"):
            names.append(part)
            continue
        digits = part[5:7] if part.startswith("cell_") else ""
        if not digits.isdigit() or int(digits) >= n_cells:
            raise ConversionError(f"--fp32-parts: unknown part {part!r}; use stem, head or cell_00 .. "
                             f"cell_{n_cells - 1:02d} (the part names of --cells), or none")
        names.append(f"cells.{int(digits)}")
    return tuple(dict.fromkeys(names))


def part_name(module: str) -> str:
    """``cells.3`` -> ``cell_03`` (the part names of --cells); stem and head unchanged."""
    return f"cell_{int(module.split('.')[1]):02d}" if module.startswith("cells.") else module


def activation_range_config(config, ranges: str):
    """``config`` (an XNNPACK QuantizationConfig) with our activation observers (:func:`range_observer`):
    ``mse``, the range :func:`converters.ranges.mse_range` picks on the observer's histogram (the LiteRT
    converter's rule); ``mean``, the mean of each calibration image's own min and max; ``auto``, both
    recorded, the choice made after calibration (:func:`export_program`). Weights are left as they are.

    Why: PT2E's HistogramObserver searches its range greedily from both ends and stops at the first bin
    step that does not lower its norm; and one "massive activation" image among the calibration images
    (v1, cell 12: values near -145 against a typical std of 0.3) sets a step that rounds the typical
    image's tensors away, whatever the search (docs/quantization.md section 6).
    """
    import dataclasses

    observer = range_observer()

    def swap(spec):
        if spec is None or getattr(spec, "is_dynamic", False):
            return spec
        partial = getattr(spec.observer_or_fake_quant_ctr, "p", None)  # PartialWrapper of with_args
        kwargs = dict(partial.keywords) if partial is not None else {}
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=observer.with_args(**kwargs, mode=ranges))

    return dataclasses.replace(config, input_activation=swap(config.input_activation),
                               output_activation=swap(config.output_activation))


@functools.lru_cache
def range_observer():
    """The activation observer class of :func:`activation_range_config` (made once: torchao loads lazily)."""
    import torch

    with quiet_executorch_import():
        from torchao.quantization.pt2e.observer import HistogramObserver

    class RangeObserver(HistogramObserver):
        """HistogramObserver whose range is ours. ``mode``: 'mse', 'mean' or 'auto' (records both; set
        ``mode`` to 'mse' or 'mean' before ``convert_pt2e``)."""

        def __init__(self, *args, mode: str = "mse", **kwargs):
            super().__init__(*args, **kwargs)
            self.mode = mode
            self.register_buffer("call_sums", torch.zeros(2))
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            if self.mode != "mean":  # the histogram (the slow part) only where it is used
                super().forward(x_orig)
            x = x_orig.detach().float()
            self.call_sums += torch.stack([x.min().clamp(max=0), x.max().clamp(min=0)])
            self.calls += 1
            return x_orig

        def _range(self) -> tuple[float, float]:
            if self.mode == "mean":
                lo, hi = (self.call_sums / self.calls.clamp(min=1)).tolist()
                return lo, hi
            from converters.ranges import mse_range

            return mse_range(self.histogram.detach().cpu().numpy(), float(self.min_val), float(self.max_val))

        def _non_linear_param_search(self):
            lo, hi = self._range()
            return (torch.tensor(lo, dtype=torch.float32, device=self.call_sums.device),
                    torch.tensor(hi, dtype=torch.float32, device=self.call_sums.device))

        def calculate_qparams(self):
            if self.mode == "mean" and float(self.calls) > 0:  # no histogram: min_val/max_val were never set
                return self._calculate_qparams(*self._non_linear_param_search())
            return super().calculate_qparams()

    return RangeObserver


def nasnet_xnnpack_quantizer(float_modules: tuple[str, ...] = (), ranges: str = "auto"):
    """ExecuTorch's XNNPACKQuantizer, plus shared quantization for pads; ops inside ``float_modules``
    (module names such as ``cells.0``) are left unannotated, so they run in fp32 inside the same
    XNNPACK partition (quantize/dequantize at their boundary become XNNPACK convert ops).

    Upstream cause of "Failed to create StaticConstantPad node ... xnn_status_invalid_parameter" (ExecuTorch
    1.5.1): ``xnnpack_quantizer_utils._is_share_obs_or_fq_op`` does not list ``aten.pad`` /
    ``aten.constant_pad_nd``, so a pad is left unannotated and its output takes the observer of the op
    after it (a conv input), with another scale and zero point than the pad's input. The partitioner
    still lowers the pad as a quantized XNNPACK static-constant-pad, and ``xnn_define_static_constant_pad``
    rejects input/output quantization that differ. A pad only copies values (zero is representable), so
    its output must share its input's quantization: we annotate it so, as upstream does for max_pool2d.
    """
    import torch

    with quiet_executorch_import():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    pad_ops = {torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default}
    key = "quantization_annotation"

    class NASNetXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target not in pad_ops:
                    continue
                prev = n.args[0]
                ann = getattr(prev, "meta", {}).get(key)
                if ann is None or ann.output_qspec is None:
                    continue
                shared = SharedQuantizationSpec(prev)
                n.meta[key] = QuantizationAnnotation(input_qspec_map={prev: shared}, output_qspec=shared,
                                                     _annotated=True)
            # Upstream propagated shared specs before the pads had any, so a max_pool2d fed by a pad was left
            # unannotated too (XNNPACK's max pooling also requires equal input/output quantization).
            propagate_annotation(model)
            return model

    quantizer = NASNetXNNPACKQuantizer()
    config = get_symmetric_quantization_config(is_per_channel=True)
    if ranges in ("mse", "mean", "auto"):
        config = activation_range_config(config, ranges)
    elif ranges != "histogram":
        raise ValueError(f"activation ranges {ranges!r}: 'auto', 'mse', 'mean' or 'histogram'")
    quantizer.set_global(config)
    if float_modules:
        def quantize_node(node) -> bool:
            paths = [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]
            return not any(p == m or p.startswith(m + ".") for p in paths for m in float_modules)

        quantizer.set_filter_function(quantize_node)
    return quantizer


@contextlib.contextmanager
def shared_node_provenance():
    """Node provenance shared instead of deep-copied while a program is exported and lowered.

    Upstream (torch 2.13, ``torch/fx/traceback.py``): every FX interpreter step (``set_current_meta``) makes a
    ``NodeSource`` for the node it runs, and ``NodeSource.__init__`` *deep-copies* the node's whole
    ``from_node`` history into it. Each of the ~60 re-tracing passes of ``to_edge_transform_and_lower``
    (decompositions, XNNPACK's ExportPasses) adds one level, so the copying grows with passes x depth x
    nodes: about a sixth of ExecuTorch's lowering time (measured: the small test network's int8 lowering
    74.8 s -> 64.3 s, one thread, the same program). Nothing mutates a ``NodeSource`` after it is made (its
    fields are set in ``__init__`` and by deserialization only), so sharing the ancestors keeps the same
    history, which is what ExecuTorch reads (``debug_handle_utils.get_greatest_ancestor_node_identifier``).
    Pinned by tests/test_executorch.py (the upstream copy, and the same program with or without this).
    """
    from torch.fx import traceback as fx_traceback

    cls = fx_traceback.NodeSource
    original = cls.__init__

    def init(self, node=None, *args, **kwargs):
        history = node.meta.get("from_node") if node is not None else None
        if not history:
            return original(self, node, *args, **kwargs)
        node.meta["from_node"] = []  # upstream copies an empty list; the ancestors are shared below
        try:
            original(self, node, *args, **kwargs)
        finally:
            node.meta["from_node"] = history
        self.from_node = list(history)

    cls.__init__ = init
    try:
        yield
    finally:
        cls.__init__ = original


def _call_targets(gm) -> set | None:
    """The call_function targets of ``gm`` (edge ops as their ATen overloads too); None when it has control-flow
    submodules (not looked into: nothing is skipped for such graphs)."""
    from executorch.exir.graph_module import get_control_flow_submodules

    if get_control_flow_submodules(gm):
        return None
    found = set()
    for n in gm.graph.nodes:
        if n.op == "call_function":
            found.add(n.target)
            found.add(getattr(n.target, "_op", n.target))
    return found


def _xnnpack_pass_changes_nothing(transform_pass, ep) -> bool:
    """Whether an XNNPACK pass has nothing to rewrite in ``ep``: only for the passes below, each read from its
    source (executorch 1.5.1, ``backends/xnnpack/_passes``), and only when the graph lacks what it rewrites."""
    name = type(transform_pass).__name__
    targets = _call_targets(ep.graph_module)
    if targets is None:
        return False
    if name in ("ConvertToSDPAPass", "ConvertToUpsampleBilinear2d"):
        # they rewrite subgraphs that match their pattern graphs (SubgraphMatcher: every pattern node's target
        # must occur): no pattern whose ops all occur, no match
        from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

        patterns = sdpa.get_graphs() if name == "ConvertToSDPAPass" else list(bilinear_2d.get_graphs_dict())
        return not any({n.target for n in pat.graph.nodes if n.op == "call_function"} <= targets
                       for pat in patterns)
    if name == "Conv1dUnsqueezePass":  # rewrites convolutions with a rank-3 (1-D) kernel: a 3-D output
        convs = [n for n in ep.graph_module.graph.nodes if n.op == "call_function"
                 and getattr(n.target, "__name__", "") == "aten.convolution.default"]
        return all(hasattr(n.meta.get("val"), "shape") and len(n.meta["val"].shape) != 3 for n in convs)
    if name == "PReLUReshapePass":  # rewrites _prelu_kernel nodes
        from executorch.exir.dialects._ops import ops as exir_ops

        return exir_ops.edge.aten._prelu_kernel.default not in targets
    if name == "DimOrderOpsRevertPass":  # rewrites the dim-order ops of MemoryFormatOpsMap
        from executorch.exir.passes.memory_format_ops_pass import MemoryFormatOpsMap

        return not any(op in targets for op in MemoryFormatOpsMap)
    if name in ("FuseBatchNormPass", "DecomposeBatchNorm"):
        # both start from a batch-norm node (FuseBatchNormPass: a convolution or linear whose one user is one;
        # DecomposeBatchNorm: each one): PT2E folds them in int8; the fp32 graph keeps them and gets the pass
        from executorch.backends.xnnpack._passes.decompose_batch_norm import DecomposeBatchNorm

        return not (DecomposeBatchNorm.BATCH_NORM_OPS & targets)
    if name == "RemoveGetItemPass":  # rewrites max_pool2d_with_indices and max.dim (+ their getitem)
        return not any(getattr(t, "__name__", "") in ("aten.max_pool2d_with_indices.default", "aten.max.dim")
                       for t in targets)
    if name == "PropagateCustomMetaPass":  # copies a parent's meta['custom'] to its q/dq nodes: none has one
        return not any("custom" in n.meta for n in ep.graph_module.graph.nodes)
    if name == "RemoveRedundantCopyPass":  # removes aten._to_copy nodes (and the q/dq around them)
        from executorch.exir.dialects._ops import ops as exir_ops

        return exir_ops.edge.aten._to_copy.default not in targets
    return False


@contextlib.contextmanager
def skip_no_op_lowering_steps(skipped: list | None = None):
    """Steps of ExecuTorch's lowering that cannot change the program, skipped (each appended to ``skipped``).

    Upstream (executorch 1.5.1) re-traces the whole graph in steps that find nothing to do in NASNet:
    - ``_gen_edge_manager_for_partitioners`` (``exir/program/_program.py``) runs ``run_decompositions`` three
      times for a partitioner with ``check_op_support`` (XNNPACK's); the last one, with the full default table
      after the preserved ops are renamed, finds no op of its table in the graph. Upstream already skips such
      a call on its other path ("safe to skip when none of those targets occur in the graph",
      ``contains_any_call_fn_target_op``); this applies the same rule to every ``run_decompositions`` call
      with a non-empty table during the lowering.
    - XNNPACK's pass manager (``backends/xnnpack/_passes/__init__.py``) runs each pass through ``_transform``,
      which re-traces the graph (fake tensors, a new ExportedProgram) even when the pass matched nothing:
      about 2 s a pass on the small test network. SDPA, bilinear upsampling, 1-D convolution, PReLU,
      dim-order, batch-norm (fuse and decompose), max-with-indices, custom-meta and redundant-copy passes are
      skipped when the graph has none of what they rewrite (:func:`_xnnpack_pass_changes_nothing`).
    Measured on the small test network's int8 lowering, one thread: see docs/lowering.md section 5. The
    program is byte-identical with and without (pinned by tests/test_executorch.py).
    """
    import torch.export.exported_program as ep_module
    from executorch.backends.xnnpack import _passes as xnnpack_passes
    from executorch.exir.graph_module import contains_any_call_fn_target_op

    skipped = [] if skipped is None else skipped
    cls = ep_module.ExportedProgram
    original_decompose = cls.run_decompositions
    original_transform = xnnpack_passes._transform

    def run_decompositions(self, decomp_table=None, *args, **kwargs):
        if decomp_table and not args and not kwargs \
                and not contains_any_call_fn_target_op(self.graph_module, decomp_table):
            skipped.append(f"run_decompositions ({len(decomp_table)} ops, none in the graph)")
            return self
        return original_decompose(self, decomp_table, *args, **kwargs)

    def transform(ep, transform_pass, *args, **kwargs):
        if not args and not kwargs and _xnnpack_pass_changes_nothing(transform_pass, ep):
            skipped.append(type(transform_pass).__name__)
            return ep
        return original_transform(ep, transform_pass, *args, **kwargs)

    cls.run_decompositions = run_decompositions
    xnnpack_passes._transform = transform
    try:
        yield skipped
    finally:
        cls.run_decompositions = original_decompose
        xnnpack_passes._transform = original_transform


def export_program(model, example: tuple, precision: Precision, calibration, backend: str,
                   progress: bool = True, float_modules: tuple[str, ...] = (), ranges: str = "auto"):
    """ExecuTorch edge program of ``model`` lowered to ``backend``.

    ``example``: a tuple of input tensors; ``calibration`` (int8): a sequence of such tuples, one per image.
    """
    with shared_node_provenance(), skip_no_op_lowering_steps(), warnings.catch_warnings():
        # torch 2.13's own pytree pickling warns about its own API whenever upstream deep-copies a graph module or
        # a module call graph (PT2E candidates, ExecuTorch's _transform): not the user's to act on
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*", category=FutureWarning)
        return _export_program(model, example, precision, calibration, backend, progress, float_modules, ranges)


# Ops merged when they read the same tensors with the same arguments (merge_equal_ops). Not pads: a zero pad with
# two readers is one XNNPACK cannot fold into either convolution (docs/lowering.md, distinct_pads).
MERGED_OPS = ("relu", "slice")


def merge_equal_ops(gm) -> int:
    """Merge ReLUs and slices of the same tensor with the same arguments into the first; returns how many were removed.

    Every NASNet cell output is read through a ReLU by the next two cells, and the plan's ``share_relu`` merges
    ReLUs only within a part (``--cells`` exports each part alone, taking its x and p unrectified); the two 7x7
    separables of a reduction cell cut the same kernel-group slices of one input. TFLite's converter merges equal
    ops across the whole graph, so LiteRT ran one ReLU per cell output and one copy per slice; ``torch.export``
    merges nothing, and XNNPACK fuses a ReLU into its producer only when it is the producer's one reader
    (``xnn_subgraph_fusion``), so ExecuTorch ran both, as standalone Clamp nodes over the whole concatenated output
    (64 Clamp against LiteRT's 48 RELU in NASNet-Mobile) and 32 slice copies against 25. Exact: the same op on the
    same tensor."""
    first: dict = {}
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not any(k in str(node.target) for k in MERGED_OPS):
            continue
        key = (node.target, node.args, tuple(sorted(node.kwargs.items())))
        try:
            hash(key)
        except TypeError:  # an argument that is a list: not one of the ops above as NASNet uses them; leave it
            continue
        if key in first:
            node.replace_all_uses_with(first[key])
            gm.graph.erase_node(node)
            removed += 1
        else:
            first[key] = node
    if removed:
        gm.graph.lint()
        gm.recompile()
    return removed


def _export_program(model, example, precision, calibration, backend, progress, float_modules, ranges):
    import torch
    from tqdm import tqdm

    with quiet_executorch_import():
        from executorch.exir import to_edge_transform_and_lower

    timings: dict[str, float] = {}
    ranges_report = {"method": ranges} if precision is Precision.INT8 else None
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    if precision is Precision.FP16:
        model = _half_wrapper(model)
    ep = torch.export.export(model, example, strict=False)
    merge_equal_ops(ep.graph_module)
    lap("torch.export")
    if precision is Precision.INT8:
        with quiet_executorch_import():
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        quantizer = nasnet_xnnpack_quantizer(float_modules, ranges)
        prepared = prepare_pt2e(ep.module(), quantizer)
        lap("prepare_pt2e")
        with torch.no_grad():
            for inputs in tqdm(calibration, desc="calibrate", unit="img", disable=not progress, leave=False):
                prepared(*inputs)
        lap("calibrate")
        if ranges == "auto":
            quantized, ranges_report = _choose_ranges(model, prepared, calibration, convert_pt2e)
        else:
            quantized = convert_pt2e(prepared)
        lap("convert_pt2e")
        ep = torch.export.export(quantized, example, strict=False)
        lap("torch.export (quantized)")
    with why_not_partitioned() as reasons:
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner_for(backend)])
    lap("to_edge_transform_and_lower")
    edge._nasnet_why = reasons  # the partitioner's own reasons, for the delegation report
    edge._nasnet_timings = timings
    edge._nasnet_ranges = ranges_report
    return edge


CHOICE_IMAGES = 32


def _choose_ranges(model, prepared, calibration, convert_pt2e) -> tuple:
    """``--activation-ranges auto``: convert with the error-minimizing and with the mean ranges, keep the
    one whose int8 network (PT2E's reference q/dq graph) is closer to the float ``model`` on the
    calibration images (lowest median KL, as the LiteRT converter chooses). Returns (module, report)."""
    import copy

    import torch

    from converters.ranges import choose_by_median_kl

    observer = range_observer()
    # PT2E's reference int8 graph runs in eager PyTorch (~1 s an image on the 2-core VM): the choice is made
    # on at most CHOICE_IMAGES of the calibration images, spread over them (the candidates differ 4-5x)
    calibration = list(calibration)
    if len(calibration) > CHOICE_IMAGES:
        spread = np.linspace(0, len(calibration) - 1, CHOICE_IMAGES).round().astype(int)
        calibration = [calibration[i] for i in spread]
    with torch.no_grad():
        reference = [[model(*inputs).numpy()] for inputs in calibration]
    quantized, outputs = {}, {}
    for mode in ("mse", "mean"):
        candidate = copy.deepcopy(prepared)  # (torch's LeafSpec warning: filtered in export_program)
        for m in candidate.modules():
            if isinstance(m, observer):
                m.mode = mode
        quantized[mode] = convert_pt2e(candidate)
        with torch.no_grad():
            outputs[mode] = [[quantized[mode](*inputs).numpy()] for inputs in calibration]
    best, report = choose_by_median_kl(reference, outputs, f"{len(calibration)} of the calibration images")
    log.info("activation ranges: %s (median KL on the calibration images: %s)", best,
             ", ".join(f"{k} {v['median_kl']:.2e}" for k, v in report["chosen_from"].items()))
    return quantized[best], report


def image_tuples(batch: np.ndarray, layout: str = "NCHW"):
    """NHWC float images -> a list of 1-tuples of 1x3xHxW tensors (the whole model's inputs): contiguous NCHW
    copies, or for ``layout`` NHWC channels-last views of the images' own bytes."""
    from edge.artifact.pte_inputs import image_tensor

    return [(image_tensor(x, layout.upper() == "NHWC"),) for x in batch]


def serialize_program(edge, path: Path) -> None:
    """The ExecuTorch program of the lowered ``edge`` program, written to ``path``."""
    with shared_node_provenance():  # to_executorch runs its own re-tracing passes
        program = edge.to_executorch()
    with open(path, "wb") as f:
        program.write_to_file(f)


def write_program(edge, path: Path, check=None):
    """Serialize to ``path`` through a temporary name (never a partial .pte); ``check(tmp)``, when given,
    runs on the complete temporary file before it takes the final name, and its result is returned."""
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        serialize_program(edge, tmp)
        result = check(tmp) if check is not None else None
        os.replace(tmp, path)
        return result
    finally:
        if tmp.exists():
            tmp.unlink()


def export_cells(model, precision: Precision, calibration: np.ndarray | None, backend: str, out_dir: Path,
                 progress: bool = True, only: set[str] | None = None, fp32_parts: tuple[str, ...] = (),
                 ranges: str = "mse") -> CellsManifest:
    """Every part (stem, cells, head) of ``model`` as its own ``.pte`` with its real input shapes.

    int8 parts are calibrated on the activations the whole float network produces at that point for the
    same calibration images, so each part gets the quantization it has inside the network. Writes
    ``cells/cells.json`` (parts in order, NCHW input shapes, MACs, delegation) beside the artifacts.
    ``only``: export just the parts with these names. ``fp32_parts`` (``stem``, ``cell_00``, ...): parts
    exported in fp32 whatever ``precision`` says, as ``--fp32-parts`` leaves them in the whole program.
    """
    import torch
    from tqdm import tqdm

    from edge.model.profile import part_macs
    from edge.model.torch_emit import part_feeds, torch_parts

    cell_dir = out_dir / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    size = model.config.input_size
    with torch.no_grad():
        example_feeds = part_feeds(model, torch.zeros(1, 3, size, size))
        per_image = None
        if calibration is not None:
            per_image = [part_feeds(model, x) for (x,) in image_tuples(calibration)]
    macs = {m["name"]: m for m in part_macs(model.config)}
    listing = []
    for k, (name, part) in enumerate(tqdm(torch_parts(model), desc="cells", unit="part", disable=not progress)):
        if only is not None and name not in only:
            continue
        calib = [feeds[k] for feeds in per_image] if per_image is not None else None
        prec = Precision.FP32 if any(name == f or name.startswith(f + "_") for f in fp32_parts) else precision
        edge = export_program(part, example_feeds[k], prec, calib, backend, progress=False, ranges=ranges)
        path = cell_dir / f"{k:02d}_{name}_{backend}_{prec.value}.pte"
        write_program(edge, path)
        out = part(*example_feeds[k])
        listing.append(PartEntry(index=k, name=name, file=path.name, precision=prec.value,
                                 inputs=[list(t.shape[1:]) for t in example_feeds[k]], layout="NCHW",
                                 output=list(out.shape[1:]), macs=macs[name]["macs"], params=macs[name]["params"],
                                 size_bytes=path.stat().st_size, delegation=delegation_report(edge, backend),
                                 convert_seconds=edge._nasnet_timings))
    manifest = CellsManifest(Format.PTE.value, Converter.EXECUTORCH.value, backend, model.config.name,
                             precision.value, model.lowering is not None, model.plan.describe(), listing)
    write_json_atomic(cell_dir / "cells.json", manifest.to_dict())
    return manifest


class _WhyHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.reasons: collections.Counter = collections.Counter()

    def emit(self, record):
        msg = record.getMessage()
        if "WhyNoPartition" in msg and "because" in msg:
            node = msg.split("Node ", 1)[1].split(" ", 1)[0]
            op = node.rstrip("0123456789_") or node
            self.reasons[f"{op}: {msg.split('because', 1)[1].strip().rstrip('.')}"] += 1


@contextlib.contextmanager
def why_not_partitioned():
    """Collect the XNNPACK partitioner's WhyNoPartition debug messages (op: reason -> count)."""
    handler = _WhyHandler()
    loggers = [logging.getLogger(n) for n in ("executorch.backends.xnnpack.partition.config.generic_node_configs",
                                               "executorch.backends.xnnpack.partition.config.gemm_configs",
                                               "executorch.backends.xnnpack.partition.config.node_configs",
                                               "executorch.backends.xnnpack.partition.config.xnnpack_config")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    try:
        yield handler.reasons
    finally:
        for lg, (level, prop) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = prop


def edge_op_counts(edge) -> tuple[int, collections.Counter, collections.Counter]:
    """(delegate calls, ops inside delegates, ops outside) of a lowered edge program, ops by edge-op name.

    A delegate call's ``LoweredBackendModule`` keeps the partition it replaced (``original_module``): its
    ops are the ones delegated."""
    def ops(gm) -> collections.Counter:
        found: collections.Counter = collections.Counter()
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = getattr(node.target, "__name__", str(node.target))
            if name != "getitem" and "executorch_call_delegate" not in name:
                found[name.replace(".default", "")] += 1
        return found

    gm = edge.exported_program().graph_module
    calls = sum(1 for n in gm.graph.nodes if n.op == "call_function"
                and "executorch_call_delegate" in getattr(n.target, "__name__", str(n.target)))
    inside: collections.Counter = collections.Counter()
    for _, m in gm.named_children():
        original = getattr(m, "original_module", None)
        if original is not None and hasattr(m, "backend_id"):
            inside += ops(original.graph_module)
    return calls, inside, ops(gm)


def delegation_report(edge, delegate: str = "xnnpack") -> Delegation:
    """Delegate calls, the ops inside them and the ops left outside any delegate in the lowered edge program;
    ``detail``: the partitioner's reasons and, for XNNPACK, the node types its payloads hold."""
    calls, inside, outside = edge_op_counts(edge)
    why = collections.Counter(getattr(edge, "_nasnet_why", None) or {})
    detail: dict = {"why_not_delegated": dict(why.most_common(20)) if outside else {}}
    nodes = xnnpack_node_counts(edge)
    if nodes:
        # what XNNPACK will run: 'Convert' nodes are precision changes (int8 <-> fp32) inside the delegate
        detail["xnnpack_nodes"] = dict(nodes.most_common())
        detail["xnnpack_converts"] = nodes.get("Convert", 0)
    return Delegation.from_counts(delegate, calls, inside, outside, detail)


def xnnpack_node_counts(edge) -> collections.Counter:
    """XNNPACK node types (``Conv2d``, ``Convert``, ...) in the program's XNNPACK payloads.

    Decodes each delegate blob (XNNPACK header, then a flatbuffer of ``schema.fbs``) with the flatc that
    ExecuTorch serializes with. Which ops are delegated says little about what runs: an op the partitioner
    takes in fp32 only, inside an int8 graph, becomes int8 -> fp32 -> int8 converts around it.
    """
    import json
    import tempfile

    with quiet_executorch_import():
        from executorch.backends.xnnpack.serialization import xnnpack_graph_serialize as ser
        from executorch.exir._serialize._flatbuffer import _flatc_decompile

    counts: collections.Counter = collections.Counter()
    gm = edge.exported_program().graph_module
    blobs = [m.processed_bytes for _, m in gm.named_children()
             if getattr(m, "backend_id", None) == "XnnpackBackend"]
    if not blobs:
        return counts
    with tempfile.TemporaryDirectory() as d:
        schema = Path(d) / "schema.fbs"
        schema.write_bytes(ser._get_schema_bytes())
        for i, blob in enumerate(blobs):
            header = ser.XNNHeader.from_bytes(blob[:ser.XNNHeader.EXPECTED_LENGTH])
            start = header.flatbuffer_offset if header.is_valid() else 0
            size = header.flatbuffer_size if header.is_valid() else len(blob)
            bin_path = Path(d) / f"graph{i}.bin"
            bin_path.write_bytes(blob[start:start + size])
            _flatc_decompile(d, str(schema), str(bin_path))
            text = (Path(d) / f"graph{i}.json").read_text()
            # flatc writes non-finite floats (a ReLU's output_max) as bare inf / nan
            graph = json.loads(re.sub(r"(?<![\w\"])(-?)inf\b", r"\1Infinity", text).replace(": nan", ": NaN"))
            for node in graph.get("xnodes", []):
                counts[node["xnode_union_type"].removeprefix("XNN")] += 1
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converters.executorch", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    add_common_arguments(p, PRECISIONS)
    p.add_argument("--backend", default="xnnpack", choices=["xnnpack", "vulkan", "coreml", "qnn"],
                   help="ExecuTorch partitioner (the others where their packages and SDKs exist)")
    p.add_argument("--fp32-parts", default=DEFAULT_FP32_PARTS, metavar="PARTS",
                   help="int8: parts left in fp32 inside the same delegate (comma-separated part names of "
                        "--cells: stem, cell_00 .. cell_15, head; 'none' quantizes all); see docs/lowering.md")
    p.add_argument("--input-layout", choices=["nhwc", "nchw"], default=None,
                   help="the order of the image's bytes the program takes (sizes 1x3xHxW either way): 'nhwc' "
                        "(channels-last dim order; the default for xnnpack) is what a camera or decoder gives and "
                        "what XNNPACK computes in, so neither the client nor the delegate transposes the image at "
                        "every run; 'nchw' (the default for the other backends) for clients that feed contiguous "
                        "NCHW tensors. The manifest's io.layout says which; ExecuTorch copies input bytes without "
                        "checking their order (docs/manifest.md)")
    p.add_argument("--activation-ranges", choices=["auto", "mse", "mean", "histogram"], default="auto",
                   help="int8 activation ranges, as the LiteRT converter's (converters/ranges.py): 'mse' minimizes "
                        "each tensor's quantization error on the calibration images, 'mean' is the mean of each "
                        "image's own min/max, 'auto' converts with both and keeps the one closer to the float model "
                        "on the calibration images; 'histogram' is PT2E's own HistogramObserver search")
    return p


class ExecuTorchBackend(Backend):
    """ExecuTorch: the PyTorch emitter, torch.export + PT2E + lowering to a partitioner, ``executorch.runtime``."""

    converter = Converter.EXECUTORCH
    format = Format.PTE
    reference_description = "PyTorch eager float32 (reference network, not lowered)"
    tool_packages = ("executorch", "torch", "torchao", "numpy")

    def __init__(self, delegate: str = "xnnpack", fp32_parts: str = DEFAULT_FP32_PARTS,
                 activation_ranges: str = "auto", input_layout: str | None = None):
        self.delegate, self.fp32_parts, self.activation_ranges = delegate, fp32_parts, activation_ranges
        self.float_modules: tuple[str, ...] = ()  # --fp32-parts as module names, once the network is known
        # NHWC bytes for XNNPACK: the channels-last pass then inserts no transpose of the input (below)
        self.input_layout = (input_layout or ("nhwc" if delegate == "xnnpack" else "nchw")).upper()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExecuTorchBackend:
        return cls(args.backend, args.fp32_parts, args.activation_ranges, getattr(args, "input_layout", None))

    @property
    def backend(self) -> str:
        return self.delegate

    @property
    def target(self) -> str:
        return DELEGATE_TARGETS.get(self.delegate, self.delegate)

    def check(self, job: Job) -> None:
        partitioner_for(self.delegate)  # fail fast on a missing backend

    def check_source(self, job: Job, source) -> None:
        if job.calibrated:
            self.float_modules = part_module_names(self.fp32_parts, len(source.config.cells()))

    def reference(self, source, images: np.ndarray) -> Reference:
        import torch

        from edge.model.sources import load_torch_model

        model, _ = load_torch_model(source=source)
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()
        return Reference(model, model.keras_weights(), logits)

    def plan_target(self, job: Job, precision: Precision) -> str:
        from edge.model.passes import REFERENCE, XNNPACK_FP32, XNNPACK_PT2E

        # XNNPACK's float edge form; for int8 the same less the max pools' border map (PT2E's XNNPACK quantizer and
        # partitioner take MAXIMUM in fp32 only), quantized whole: PT2E's int8 quantizer takes ReLU as it is
        if not job.lowered:
            return REFERENCE.name
        return (XNNPACK_PT2E if precision is Precision.INT8 else XNNPACK_FP32).name

    def build(self, job: Job, loaded: Loaded, plan, precision: Precision) -> Built:
        from edge.model.torch_emit import emit_torch

        model = loaded.reference.model
        weights = plan.lower_weights(loaded.reference.weights)
        if plan.target != model.plan.target:  # else the stock graph is the reference network itself
            model = emit_torch(plan)
            model.load_keras_weights(weights)
        return Built(plan, model, weights, loaded.config.preprocessing)

    def artifact_name(self, job: Job, base: str, precision: Precision) -> str:
        return f"{base}_{self.delegate}_{precision.value}.pte"

    def convert_label(self, precision: Precision) -> str:
        return f"export, {'quantize, ' if precision is Precision.INT8 else ''}lower to {self.delegate}"

    def convert(self, job: Job, loaded: Loaded, built: Built, precision: Precision) -> Converted:
        import torch

        size = loaded.config.input_size
        int8 = precision is Precision.INT8
        # The example's memory format becomes the program input's dim order. Channels-last: XNNPACK's
        # ChannelsLastTaggedReshapePass (executorch/backends/xnnpack/_passes) tags an NHWC placeholder as NHWC
        # and inserts no StaticTranspose before the first conv; with an NCHW input every run transposes the
        # image inside the delegate, after the client transposed its NHWC image to NCHW.
        example = torch.zeros(1, 3, size, size)
        if self.input_layout == "NHWC":
            example = example.contiguous(memory_format=torch.channels_last)
        edge = export_program(built.model, (example,), precision,
                              image_tuples(loaded.calibration.batch, self.input_layout) if int8 else None,
                              self.delegate, float_modules=self.float_modules if int8 else (),
                              ranges=self.activation_ranges)
        quantization = None
        if int8:
            quantization = Quantization("PT2E static, XNNPACKQuantizer symmetric, per-channel weights",
                                        activation_ranges=getattr(edge, "_nasnet_ranges", None),
                                        fp32_parts=[part_name(m) for m in self.float_modules])
        return Converted(edge, IO("float", "float", self.input_layout), quantization,
                         getattr(edge, "_nasnet_timings", {}))

    def serialize(self, converted: Converted, embedded: dict, path: Path) -> None:
        serialize_program(converted.payload, path)  # a .pte carries no manifest: it lies beside it

    @property
    def validate_label(self) -> str:
        return "validate on held-out images through executorch.runtime"

    def run(self, path: Path, images: np.ndarray) -> np.ndarray | None:
        if self.delegate != "xnnpack":
            return None
        from edge.runtime.runners import ExecuTorchRunner

        return ExecuTorchRunner(path, threads=2).predict(images)

    def report(self, path: Path, converted: Converted, built: Built, loaded: Loaded,
               logits: np.ndarray | None) -> tuple[Delegation, dict[str, int]]:
        _, inside, outside = edge_op_counts(converted.payload)
        return delegation_report(converted.payload, self.delegate), dict((inside + outside).most_common())

    def export_cells(self, job: Job, loaded: Loaded, built: Built, converted: Converted, precision: Precision,
                     folder: Path) -> CellsManifest:
        int8 = precision is Precision.INT8
        # the parts take the range method the whole program's 'auto' chose
        ranges = ((converted.quantization.activation_ranges or {}) if converted.quantization else {}).get(
            "method", self.activation_ranges)
        return export_cells(built.model, precision, loaded.calibration.batch if int8 else None, self.delegate,
                            folder, fp32_parts=tuple(part_name(m) for m in self.float_modules) if int8 else (),
                            ranges=ranges)


def convert(args: argparse.Namespace) -> dict | list[dict]:
    """Run the export (:func:`converters.pipeline.run`); returns the manifest (also written beside the program),
    or one per precision, in order, when ``--precision`` names several (one load and one build for all)."""
    return pipeline.convert(args, ExecuTorchBackend.from_args(args))


def main(argv: list[str] | None = None) -> int:
    from converters.common import converter_main

    return converter_main(build_parser, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
