"""What a converter reports about an artifact's GPU readiness (``converters.tflite --target gpu``).

Two parts: a static check of the flatbuffer (:func:`pad_pool_pairs`: every PAD that feeds a pooling op,
which LiteRT's GPU merges into the pool with the wrong border semantics, ``docs/gpu.md``), which needs no
GPU; and, where a GPU adapter exists, the accelerator's own answer (fully accelerated or not, and the
ops it names if not) with the artifact's agreement with the CPU on validation images, fp32 and fp16.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

POOLS = ("MAX_POOL_2D", "AVERAGE_POOL_2D")
PADS = ("PAD", "PADV2")


def pad_pool_pairs(path: Path) -> list[dict]:
    """Every PAD (or PADV2) whose only consumer is a pooling op, in the first subgraph: the pattern LiteRT's
    GPU computes wrong.

    Its graph compiler (``merge_padding_with.cc``) merges a zero PAD into the next POOLING_2D's padding when
    the PAD's output feeds that one node (``model_transformer.cc`` extends a sequence only through single
    consumers), and the GPU pooling kernels leave out-of-bounds taps out (max: as -inf; average: not
    counted), so the zeros no longer take part. A PAD read by two ops (the stock graph's, read by a max
    and an average pool) is not merged.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.Subgraphs(0)
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        ops.append((names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?"),
                    [int(op.Inputs(j)) for j in range(op.InputsLength())],
                    [int(op.Outputs(j)) for j in range(op.OutputsLength())]))
    padded = {o: i for i, (name, _, outs) in enumerate(ops) if name in PADS for o in outs}
    readers: dict[int, int] = {}
    for _, ins, _ in ops:
        for t in set(ins):
            readers[t] = readers.get(t, 0) + 1
    graph_outputs = {int(sg.Outputs(i)) for i in range(sg.OutputsLength())}
    pairs = []
    for j, (name, ins, _) in enumerate(ops):
        if name in POOLS and ins and ins[0] in padded and readers[ins[0]] == 1 and ins[0] not in graph_outputs:
            pairs.append({"pad_op": padded[ins[0]], "pool_op": j, "pool": name,
                          "tensor": sg.Tensors(ins[0]).Name().decode(errors="replace")})
    return pairs


def gpu_report(path: Path, images: np.ndarray, cpu_logits: np.ndarray, precisions=("fp32", "fp16")) -> dict:
    """The GPU delegation report of a float classifier ``.tflite``: static pad/pool check, then per precision
    whether LiteRT's GPU accelerator takes every op, and its agreement with ``cpu_logits`` on ``images``.
    Where no GPU adapter exists, ``status`` is 'unavailable' with the reason (the artifact is still written)."""
    from converters.common import compare
    from edge.runtime.gpu import GpuUnavailable, LiteRTGpuRunner

    pairs = pad_pool_pairs(path)
    report: dict = {"accelerator": "LiteRT GPU (WebGPU over Vulkan)", "pad_pool_pairs": len(pairs),
                    "pad_pool_ops": pairs[:8], "images": int(len(images)), "precisions": {}}
    for precision in precisions:
        try:
            runner = LiteRTGpuRunner(path, precision)
        except GpuUnavailable as e:
            report.update({"status": "unavailable", "reason": str(e)})
            return report
        try:
            logits = runner.predict(images) if len(images) else np.zeros((0, 1), np.float32)
            d = runner.describe()
        finally:
            runner.close()
        entry = {"fully_accelerated": d["fully_accelerated"], "not_supported": d["not_supported"],
                 "first_run_ms": d["first_run_ms"], "load_ms": d["load_ms"]}
        if len(images):
            entry["agreement_with_xnnpack"] = compare(cpu_logits, logits)
        report["precisions"][precision] = entry
        report.update({"status": "ok", "adapter": d["adapter"], "label": d["label"]})
    report["fully_accelerated"] = all(p["fully_accelerated"] for p in report["precisions"].values())
    if not report["fully_accelerated"]:
        report["why_not"] = sorted({ln for p in report["precisions"].values() for ln in p["not_supported"]}) or [
            "the accelerator did not name the ops it left to the CPU"]
    return report


def summary_line(report: dict) -> str:
    pairs = report["pad_pool_pairs"]
    head = f"GPU: {pairs} PAD -> pool pair(s) (LiteRT's GPU computes those wrong)" if pairs else \
        "GPU: no PAD -> pool pairs"
    if report.get("status") != "ok":
        return f"{head}; accelerator not run here: {report.get('reason', '?')}"
    parts = []
    for precision, p in report["precisions"].items():
        a = p.get("agreement_with_xnnpack")
        parts.append(f"{precision} {'fully accelerated' if p['fully_accelerated'] else 'NOT fully accelerated'}"
                     + (f", top-1 agreement with XNNPACK {100 * a['top1_agreement']:.1f}% on {a['images']} images, "
                        f"logit SQNR {a['logit_sqnr_db']:.1f} dB" if a else ""))
    return f"{head}; {report['adapter']['name']} [{report['label']}]: " + "; ".join(parts)
