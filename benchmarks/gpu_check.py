"""``python -m benchmarks.gpu_check``: does a ``.tflite`` compute on LiteRT's GPU what it computes on the CPU?

    python -m benchmarks.gpu_check --model artifacts/nasnet_mobile_edge_gpu_fp32.tflite \\
        --cells artifacts/cells --compare artifacts/nasnet_mobile_stock_fp32.tflite --output results/gpu

Whole models: logits of each ``--model`` on the GPU (``--precision fp32,fp16``: ``enforce_f32`` and the
accelerator's default fp16) against the same file on XNNPACK fp32, on real images (default: the 200
shipped validation photos): top-1 agreement, logit SQNR, max difference, first-run and steady-state time.
Per part: every part of a converter's ``--cells`` export on the GPU against XNNPACK on the same random
inputs of its real shapes (two draws, :data:`PROBES`), SQNR per part (the worse draw), so a wrong op shows
up as one low row.

Gates (exit 1 when missed, for CI): ``--min-agreement-fp32`` (default 100%), ``--min-agreement-fp16``
(99.5%), ``--min-sqnr-fp32`` (80 dB) for ``--model``, ``--min-part-sqnr-fp32`` (80 dB) for ``--cells``.
``--compare`` models and ``--compare-cells`` folders are measured and reported beside them, not gated.
``--output DIR`` writes ``gpu_check.json`` and ``gpu_check.md``. Timings on a software adapter (lavapipe)
are labelled as functional checks, not GPU timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import UsageError

# The Done-when gates of issue 16 (the CLI's defaults): fp32 = enforce_f32, fp16 = the accelerator's default
GATES = {"fp32": {"agreement": 1.0, "sqnr": 80.0, "part_sqnr": 80.0}, "fp16": {"agreement": 0.995}}

# Per-part inputs: two random draws of each input's real shape; the part's SQNR is the worse of the two.
# Centred inputs exercise every op; mostly negative ones make border effects visible (a max pool whose
# padding is taken as -inf instead of 0 only differs where a whole border window is negative).
PROBES = {"uniform(-1,1)": lambda rng, shape: rng.uniform(-1, 1, shape),
          "normal(-1,1)": lambda rng, shape: rng.normal(-1, 1, shape)}


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    noise = float(np.sum((ref - got) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref ** 2) / noise))


def _cpu_part_runner(path: Path):
    from edge.runtime.runners import _litert
    from edge.quiet import captured_fds

    Interpreter, OpResolverType = _litert()
    with captured_fds():
        it = Interpreter(model_path=str(path), num_threads=2, experimental_op_resolver_type=OpResolverType.AUTO)
        it.allocate_tensors()
    return it


def part_agreement(folder: Path, precision: str = "fp32", seed: int = 0, progress: bool = True) -> dict:
    """Every part of a ``--cells`` export (``.tflite`` parts) on the GPU against XNNPACK: SQNR per part."""
    from tqdm import tqdm

    from edge.runtime.gpu import open_gpu_model

    folder = Path(folder)
    mp = folder / "cells.json"
    if not mp.is_file():
        raise UsageError(f"{folder}: no cells.json here; export parts with python -m converters.tflite --cells")
    manifest = json.loads(mp.read_text())
    if not manifest["parts"][0]["file"].endswith(".tflite"):
        raise UsageError(f"{folder}: these parts are not .tflite files (the GPU check runs LiteRT parts)")
    rng = np.random.default_rng(seed)
    rows = []
    for p in tqdm(manifest["parts"], desc=f"parts on GPU ({precision})", unit="part", disable=not progress):
        path = folder / p["file"]
        it = _cpu_part_runner(path)
        details = it.get_input_details()
        for d in details:
            if d["dtype"] != np.float32:
                raise UsageError(f"{path.name}: {np.dtype(d['dtype']).name} input; the per-part GPU check takes "
                                 "float parts (export with --precision fp32)")
        gpu = open_gpu_model(path, precision)
        try:
            per_probe = {}
            for probe, draw in PROBES.items():
                inputs = [draw(rng, d["shape"]).astype(np.float32) for d in details]
                for d, x in zip(details, inputs):
                    it.set_tensor(d["index"], x)
                it.invoke()
                ref = it.get_tensor(it.get_output_details()[0]["index"]).copy()
                got = gpu.run(inputs)[0].reshape(ref.shape)
                per_probe[probe] = {"sqnr_db": sqnr_db(ref, got), "max_abs_diff": float(np.abs(ref - got).max()),
                                    "max_abs": float(np.abs(ref).max())}
            worst = min(per_probe.values(), key=lambda r: r["sqnr_db"])
            rows.append({"name": p["name"], "file": p["file"], **worst, "probes": per_probe,
                         "fully_accelerated": gpu.fully_accelerated, "first_run_ms": round(gpu.first_run_ms, 1)})
            adapter = gpu.adapter
        finally:
            gpu.close()
    return {"folder": str(folder), "precision": precision, "lowered": manifest.get("lowered"),
            "parts": rows, "min_sqnr_db": min(r["sqnr_db"] for r in rows), "adapter": adapter}


def model_agreement(model: Path, images: np.ndarray, precisions: list[str], limit: int = 0,
                    progress: bool = True) -> dict:
    """``model`` on the GPU in each precision against the same file on XNNPACK fp32, on ``images``."""
    from tqdm import tqdm

    from converters.common import compare
    from edge.runtime.gpu import LiteRTGpuRunner
    from edge.runtime.runners import LiteRTRunner

    if limit and len(images) > limit:
        images = images[np.linspace(0, len(images) - 1, limit).round().astype(int)]
    cpu = LiteRTRunner(model, threads=2).predict(images)
    out = {"model": str(model), "images": int(len(images)), "reference": "the same file on LiteRT XNNPACK fp32",
           "precisions": {}}
    for precision in precisions:
        runner = LiteRTGpuRunner(model, precision)
        try:
            times, logits = [], []
            for x in tqdm(images, desc=f"{Path(model).name} GPU {precision}", unit="img", disable=not progress):
                t = time.perf_counter()
                logits.append(runner.predict(x[None])[0])
                times.append((time.perf_counter() - t) * 1000)
            d = runner.describe()
        finally:
            runner.close()
        steady = times[1:] or times
        out["precisions"][precision] = {
            **compare(cpu, np.stack(logits)), "fully_accelerated": d["fully_accelerated"],
            "not_supported": d["not_supported"], "load_ms": d["load_ms"], "first_run_ms": d["first_run_ms"],
            "steady_median_ms": float(np.median(steady)), "adapter": d["adapter"], "label": d["label"]}
    return out


def gate(result: dict, gates: dict) -> list[str]:
    """The gates a result misses, one line each (empty: passed)."""
    failed = []
    for m in result["models"]:
        for precision, r in m["precisions"].items():
            g = gates.get(precision, {})
            if "agreement" in g and r["top1_agreement"] < g["agreement"]:
                failed.append(f"{Path(m['model']).name} GPU {precision}: top-1 agreement "
                              f"{100 * r['top1_agreement']:.1f}% < {100 * g['agreement']:.1f}%")
            if "sqnr" in g and r["logit_sqnr_db"] < g["sqnr"]:
                failed.append(f"{Path(m['model']).name} GPU {precision}: logit SQNR {r['logit_sqnr_db']:.1f} dB "
                              f"< {g['sqnr']:.0f} dB")
            if not r["fully_accelerated"]:
                failed.append(f"{Path(m['model']).name} GPU {precision}: not fully accelerated")
    for c in result["cells"]:
        g = gates.get(c["precision"], {})
        for p in c["parts"]:
            if "part_sqnr" in g and p["sqnr_db"] < g["part_sqnr"]:
                failed.append(f"{c['folder']} {p['name']} GPU {c['precision']}: SQNR {p['sqnr_db']:.1f} dB "
                              f"< {g['part_sqnr']:.0f} dB")
    return failed


def _f(x: float, nd: int = 1) -> str:
    return "inf" if x == float("inf") else f"{x:.{nd}f}"


def markdown(result: dict) -> str:
    env = result["environment"]
    label = result.get("label") or ""
    lines = [f"# LiteRT GPU against XNNPACK fp32 ({label})", "",
             f"Adapter: {result.get('adapter_name', '?')}; CPU: {env['cpu']}, {env['cores']} cores; {env['os']}; "
             f"{result['created']}", f"Command: `{result['command']}`", "",
             "## Whole models", "",
             "| model | gated | GPU precision | images | top-1 agreement | logit SQNR dB | max abs logit diff | "
             "fully accelerated | first run s | steady median ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for group, gated in (("models", True), ("compare", False)):
        for m in result[group]:
            for precision, r in m["precisions"].items():
                lines.append(f"| {Path(m['model']).name} | {'yes' if gated else 'no (reported)'} | {precision} | "
                             f"{r['images']} | {100 * r['top1_agreement']:.1f}% | {_f(r['logit_sqnr_db'])} | "
                             f"{r['max_abs_logit_diff']:.2e} | {r['fully_accelerated']} | "
                             f"{r['first_run_ms'] / 1000:.1f} | {r['steady_median_ms']:.0f} |")
    for group, gated in (("cells", True), ("compare_cells", False)):
        for c in result[group]:
            lines += ["", f"## Per part: `{c['folder']}` ({c['precision']}, {'gated' if gated else 'reported'})", "",
                      "| part | SQNR dB | max abs diff | max abs value | fully accelerated |", "|---|---|---|---|---|"]
            for p in c["parts"]:
                lines.append(f"| {p['name']} | {_f(p['sqnr_db'])} | {p['max_abs_diff']:.2e} | {p['max_abs']:.2f} | "
                             f"{p['fully_accelerated']} |")
    lines += ["", "Gates: " + ("passed" if not result["failed"] else "FAILED"), ""]
    lines += [f"- {f}" for f in result["failed"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, action="append", default=[], help="float .tflite to gate (repeatable)")
    p.add_argument("--compare", type=Path, action="append", default=[],
                   help="float .tflite measured the same way and reported, not gated (e.g. the stock graph)")
    p.add_argument("--cells", type=Path, action="append", default=[], help="fp32 --cells export to gate per part")
    p.add_argument("--compare-cells", type=Path, action="append", default=[], help="--cells export, reported only")
    p.add_argument("--data", type=Path, default=None,
                   help="images (recursive; default: the 200 shipped validation photos)")
    p.add_argument("--limit", type=int, default=0, help="use N images spread over the set (default: all)")
    p.add_argument("--compare-limit", type=int, default=0, help="images for the --compare models (default: --limit)")
    p.add_argument("--precision", default="fp32,fp16", help="GPU precisions for whole models: fp32 (enforce_f32), fp16")
    p.add_argument("--min-agreement-fp32", type=float, default=100.0, help="percent")
    p.add_argument("--min-agreement-fp16", type=float, default=99.5, help="percent")
    p.add_argument("--min-sqnr-fp32", type=float, default=80.0, help="dB, whole-model logits")
    p.add_argument("--min-part-sqnr-fp32", type=float, default=80.0, help="dB, every part of --cells")
    p.add_argument("--output", type=Path, default=None, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--quiet", action="store_true")
    return p


def check(args: argparse.Namespace) -> dict:
    from benchmarks.run import environment
    from converters.common import command_line, load_images, now_iso, package_folder
    from edge.model.config import Preprocessing
    from edge.runtime.gpu import check_precision, timing_label
    from edge.runtime.runners import read_artifact_info

    if not (args.model or args.cells or args.compare or args.compare_cells):
        raise UsageError("give --model FILE.tflite and/or --cells DIR to check")
    precisions = [check_precision(p.strip()) for p in args.precision.split(",") if p.strip()]
    for m in args.model + args.compare:
        if m.suffix != ".tflite" or not m.is_file():
            raise UsageError(f"{m}: no such .tflite file")
    models = args.model + args.compare
    images = None
    if models:
        pres = {read_artifact_info(m).preprocessing for m in models}
        if len(pres) > 1:
            raise UsageError("the models have different preprocessing; check them one at a time")
        data = args.data or package_folder("validation")
        images = load_images(data, pres.pop() if pres else Preprocessing(), what="validation").batch
    progress = not args.quiet
    result = {"schema": "nasnet-edge-gpu-check/1", "created": now_iso(), "command": command_line(),
              "environment": environment(), "data": str(args.data or "package validation photos"),
              "models": [model_agreement(m, images, precisions, args.limit, progress) for m in args.model],
              "compare": [model_agreement(m, images, precisions, args.compare_limit or args.limit, progress)
                          for m in args.compare],
              "cells": [part_agreement(c, "fp32", progress=progress) for c in args.cells],
              "compare_cells": [part_agreement(c, "fp32", progress=progress) for c in args.compare_cells]}
    adapter = next((r["adapter"] for m in result["models"] + result["compare"] for r in m["precisions"].values()),
                   None) or next((c["adapter"] for c in result["cells"] + result["compare_cells"]), None)
    result["adapter"] = adapter
    result["adapter_name"] = adapter["name"] if adapter else None
    result["label"] = timing_label(adapter)
    gates = {"fp32": {"agreement": args.min_agreement_fp32 / 100, "sqnr": args.min_sqnr_fp32,
                      "part_sqnr": args.min_part_sqnr_fp32}, "fp16": {"agreement": args.min_agreement_fp16 / 100}}
    result["gates"] = gates
    result["failed"] = gate({"models": result["models"], "cells": result["cells"]}, gates)
    return result


def main(argv: list[str] | None = None) -> int:
    from converters.common import write_json_atomic
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        result = check(args)
        md = markdown(result)
        print(md)
        if args.output:
            args.output.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.output / "gpu_check.json", result)
            tmp = args.output / ".gpu_check.md.tmp"
            tmp.write_text(md)
            tmp.replace(args.output / "gpu_check.md")
            print(f"wrote {args.output}/gpu_check.json and gpu_check.md")
        if result["failed"]:
            print(f"error: {len(result['failed'])} GPU gate(s) missed, first: {result['failed'][0]}", file=sys.stderr)
            return 1
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
