"""``python -m benchmarks.gpu_machine``: the prepared GPU check for a machine with a real GPU.

    bash scripts/gpu_machine/prepare.sh              # here: gpu_bundle/ (wheels, models, Vulkan loader)
    bash scripts/gpu_machine/run.sh results/gpu_h200 # there: installs from the bundle, runs this, writes results

Made for a machine that has Python 3.12 and a CUDA PyTorch but no TensorFlow, LiteRT, OpenCV or internet:
what it needs comes in ``gpu_bundle/`` (``scripts/gpu_machine/prepare.sh``, at most 64 MiB). On the 200
shipped validation photos (decoded with Pillow there when OpenCV is missing; both sides of every
comparison get the same inputs), it measures

- LiteRT's GPU accelerator (fp16, and fp32 with ``enforce_f32``) on the GPU form of the default model
  (and the stock graph when bundled) against XNNPACK fp32 on the same machine: top-1 agreement, logit
  SQNR, fully accelerated or not;
- PyTorch on CUDA against PyTorch on the CPU (the bundled default model): agreement and SQNR;
- latency of each row: load, first run (shader compilation / CUDA warm-up) apart, then steady-state runs
  timed through the output read (CUDA synchronized).

It writes ``gpu_machine.json`` and ``gpu_machine.md`` into ``--output``, and never stops at the first
failure: a row that cannot run records why. Exit 1 when a GPU row failed or missed the gates of
:mod:`benchmarks.gpu_check` (fp32 100% top-1 and 80 dB, fp16 99.5%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edge.errors import UsageError


def load_photos(folder: Path, pre, limit: int = 0) -> tuple[np.ndarray, str]:
    """Preprocessed photos: the toolkit's OpenCV pipeline when cv2 imports, else the same crop and bilinear
    resize with Pillow (a few grey levels apart from OpenCV; every comparison here uses one of the two)."""
    from edge.preprocessing import list_images

    files = list_images(folder)
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    try:
        import cv2  # noqa: F401

        from edge.preprocessing import preprocess

        return np.stack([preprocess(f, pre) for f in files]), "opencv (edge.preprocessing)"
    except ImportError:
        pass
    from PIL import Image

    out = []
    for f in files:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        side = min(w, h) * pre.crop_fraction
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        img = img.resize((pre.size, pre.size), Image.BILINEAR, box=box)
        out.append(np.asarray(img, np.float32) * pre.scale + pre.offset)
    return np.stack(out).astype(np.float32), "pillow (bilinear; OpenCV not installed)"


def _timed(runner, images: np.ndarray, runs: int) -> tuple[np.ndarray, dict]:
    from benchmarks.stats import summarize

    t = time.perf_counter()
    logits = [runner.predict(images[:1])[0]]
    first = (time.perf_counter() - t) * 1000
    logits += [runner.predict(x[None])[0] for x in images[1:]]
    times = []
    for i in range(runs):
        t = time.perf_counter()
        runner.predict(images[i % len(images)][None])
        times.append((time.perf_counter() - t) * 1000)
    return np.stack(logits), {"first_ms": first, "latency_ms": summarize(times), "times_ms": times}


def _row(name: str, fn) -> dict:
    try:
        return {"name": name, "status": "ok", **fn()}
    except Exception as e:  # a GPU machine's time is short: record why, go on with the next row
        from edge.runtime.gpu import GpuUnavailable

        status = "unavailable" if isinstance(e, GpuUnavailable) or "no CUDA" in str(e) else "error"
        return {"name": name, "status": status, "reason": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=6) if status == "error" else None}


def litert_rows(model: Path, images: np.ndarray, runs: int) -> list[dict]:
    from converters.common import compare
    from edge.runtime.gpu import LiteRTGpuRunner
    from edge.runtime.runners import LiteRTRunner

    rows, ref = [], {}

    def cpu():
        r = LiteRTRunner(model, threads=min(8, os.cpu_count() or 1))
        logits, t = _timed(r, images, runs)
        ref["logits"] = logits
        return {"model": model.name, "runtime": "litert", "delegate": "xnnpack", **t}

    rows.append(_row(f"{model.name} LiteRT XNNPACK fp32 (reference)", cpu))
    for precision in ("fp32", "fp16"):
        def gpu(precision=precision):
            r = LiteRTGpuRunner(model, precision)
            try:
                t0 = time.perf_counter()
                logits, t = _timed(r, images, runs)
                d = r.describe()
            finally:
                r.close()
            out = {"model": model.name, "runtime": "litert", "delegate": "gpu", "gpu_precision": precision, **t,
                   "load_ms": d["load_ms"], "adapter": d["adapter"], "label": d["label"],
                   "fully_accelerated": d["fully_accelerated"], "not_supported": d["not_supported"],
                   "wall_s": time.perf_counter() - t0}
            if "logits" in ref:
                out["agreement"] = compare(ref["logits"], logits)
            return out

        rows.append(_row(f"{model.name} LiteRT GPU {precision}", gpu))
    return rows


def torch_rows(images: np.ndarray, runs: int, weights: str = "default") -> list[dict]:
    from converters.common import compare
    from edge.runtime.runners import TorchRunner

    ref = {}

    def run(device):
        def fn():
            r = TorchRunner(weights, threads=0, device=device)
            logits, t = _timed(r, images, runs)
            if device == "cpu":
                ref["logits"] = logits
            out = {"model": weights, "runtime": "torch", "device": device, **t}
            if device != "cpu" and "logits" in ref:
                out["agreement"] = compare(ref["logits"], logits)
            if device == "cuda":
                import torch

                out["cuda_device"] = torch.cuda.get_device_name(0)
            return out
        return fn

    return [_row(f"PyTorch {weights} CPU fp32 (reference)", run("cpu")),
            _row(f"PyTorch {weights} CUDA fp32", run("cuda"))]


def environment() -> dict:
    from converters.common import tool_versions

    env = {"host": platform.node(), "machine": platform.machine(), "os": platform.platform(),
           "python": platform.python_version(), "cores": os.cpu_count(),
           "versions": tool_versions("ai-edge-litert", "torch", "numpy", "pillow", "opencv-python-headless"),
           "vk_driver_files": os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")}
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["nvidia_smi"] = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return env


def failures(rows: list[dict]) -> list[str]:
    from benchmarks.gpu_check import GATES

    out = []
    for r in rows:
        if r["status"] != "ok":
            if r["name"].endswith(("GPU fp32", "GPU fp16", "CUDA fp32")):
                out.append(f"{r['name']}: {r['status']}: {r['reason']}")
            continue
        a, g = r.get("agreement"), GATES.get(r.get("gpu_precision", ""), {})
        if a and "agreement" in g and a["top1_agreement"] < g["agreement"]:
            out.append(f"{r['name']}: top-1 agreement {100 * a['top1_agreement']:.1f}% < {100 * g['agreement']:.1f}%")
        if a and "sqnr" in g and a["logit_sqnr_db"] < g["sqnr"]:
            out.append(f"{r['name']}: logit SQNR {a['logit_sqnr_db']:.1f} dB < {g['sqnr']:.0f} dB")
    return out


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# GPU machine check: {env.get('nvidia_smi') or 'no nvidia-smi'}", "",
             f"{env.get('cpu', '?')}, {env['cores']} cores, Python {env['python']}, {env['os']}; {res['created']}",
             f"Command: `{res['command']}`; images: {res['images']} ({res['decoder']})", "",
             "| row | status | top-1 agreement | logit SQNR dB | fully accelerated | load ms | first ms | median ms "
             "| p90 ms | label |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']}: {' '.join(str(r['reason']).split())[:160]} | | | | | | | | |")
            continue
        a = r.get("agreement") or {}
        lat = r["latency_ms"]
        agree = f"{100 * a['top1_agreement']:.1f}%" if a else ""
        sqnr = f"{a['logit_sqnr_db']:.1f}" if a else ""
        lines.append(f"| {r['name']} | ok | {agree} | {sqnr} | {r.get('fully_accelerated', '')} | "
                     f"{r.get('load_ms', 0):.0f} | {r['first_ms']:.0f} | {lat['median']:.2f} | {lat['p90']:.2f} | "
                     f"{r.get('label', r.get('cuda_device', ''))} |")
    lines += ["", "Gates: " + ("passed" if not res["failed"] else "FAILED"), ""] + [f"- {f}" for f in res["failed"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_machine", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, required=True, help="folder with the bundled .tflite models")
    p.add_argument("--output", type=Path, required=True, help="results folder (gpu_machine.json, gpu_machine.md)")
    p.add_argument("--data", type=Path, default=None, help="photos (default: the 200 shipped validation photos)")
    p.add_argument("--limit", type=int, default=0, help="use N photos")
    p.add_argument("--runs", type=int, default=50, help="timed steady-state runs per row")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    return p


def main(argv: list[str] | None = None) -> int:
    from converters.common import command_line, now_iso, package_folder, write_json_atomic
    from edge.cli import run_cli
    from edge.runtime.runners import read_artifact_info

    args = build_parser().parse_args(argv)

    def go() -> int:
        models = sorted(args.models.glob("*.tflite"), key=lambda p: ("gpu" not in p.name, p.name))
        if not models:
            raise UsageError(f"{args.models}: no .tflite models here (bash scripts/gpu_machine/prepare.sh makes them)")
        pre = read_artifact_info(models[0]).preprocessing
        images, decoder = load_photos(args.data or package_folder("validation"), pre, args.limit)
        print(f"{len(images)} photos ({decoder}); {len(models)} model(s)", flush=True)
        rows = []
        for m in models:
            rows += litert_rows(m, images, args.runs)
            print(f"{m.name}: " + "; ".join(f"{r['name'].split(' ', 1)[1]} {r['status']}" for r in rows[-3:]),
                  flush=True)
        if not args.no_torch:
            rows += torch_rows(images, args.runs)
            print("torch: " + "; ".join(f"{r['name']} {r['status']}" for r in rows[-2:]), flush=True)
        res = {"schema": "nasnet-edge-gpu-machine/1", "created": now_iso(), "command": command_line(),
               "environment": environment(), "images": int(len(images)), "decoder": decoder, "rows": rows}
        res["failed"] = failures(rows)
        args.output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.output / "gpu_machine.json", res)
        md = markdown(res)
        tmp = args.output / ".gpu_machine.md.tmp"
        tmp.write_text(md)
        tmp.replace(args.output / "gpu_machine.md")
        print(md)
        if res["failed"]:
            print(f"error: {len(res['failed'])} GPU row(s) failed or missed a gate, first: {res['failed'][0]}",
                  file=sys.stderr)
            return 1
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
