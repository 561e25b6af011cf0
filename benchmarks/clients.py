"""``python -m benchmarks.clients``: a ``.tflite`` in MediaPipe Tasks' ImageClassifier against the toolkit's runtime.

    python -m benchmarks.clients --model artifacts/nasnet_mobile_edge_int8.tflite --model artifacts/nasnet_mobile_edge_fp32.tflite

For each model and image: the top-1 label (by name) of the toolkit's runtime (its preprocessing: center square
crop, bilinear resize) and of MediaPipe's ImageClassifier on the unchanged file, twice: as MediaPipe runs by
default (the whole frame resized to the input size) and with a region of interest that is the toolkit's crop.
Reports how often they agree, and top-1 accuracy where the images' class is known (a WordNet id at the start
of the file name, or the class folder). MediaPipe runs in its own environment (``.venv-mediapipe``, made by
``scripts/setup.sh``) through ``benchmarks/mediapipe_worker.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from edge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("mediapipe_worker.py")
MEDIAPIPE_VERSION = "1.2.3"  # what scripts/setup.sh installs and CI tests


class ClientError(UserError):
    """A client (MediaPipe) that cannot run here, or refuses the model; the message says why."""


def mediapipe_python() -> Path:
    """The interpreter of MediaPipe's environment: $NASNET_EDGE_MEDIAPIPE_PYTHON, else .venv-mediapipe."""
    env = os.environ.get("NASNET_EDGE_MEDIAPIPE_PYTHON")
    py = Path(env) if env else REPO / ".venv-mediapipe" / "bin" / "python"
    if not py.is_file():
        raise ClientError(f"no MediaPipe environment at {py}: run `bash scripts/setup.sh` (it creates "
                          f".venv-mediapipe with mediapipe=={MEDIAPIPE_VERSION}) or set NASNET_EDGE_MEDIAPIPE_PYTHON")
    return py


def mediapipe_classify(model: str | os.PathLike, images: list[Path], crop_fraction: float | None = None,
                       max_results: int = 3, timeout: int = 600) -> dict:
    """MediaPipe ImageClassifier's results for ``images`` (see benchmarks/mediapipe_worker.py)."""
    spec = {"model": str(Path(model).resolve()), "images": [str(Path(p).resolve()) for p in images],
            "crop_fraction": crop_fraction, "max_results": max_results}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run([str(mediapipe_python()), str(WORKER)], input=json.dumps(spec), capture_output=True,
                       text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        raise ClientError(f"MediaPipe ImageClassifier refused {model}: {lines[-1] if lines else r.returncode}")
    return json.loads(r.stdout)


def true_label(path: Path, labels: list[str]) -> str | None:
    """The class of an image from its WordNet id (file-name prefix or folder), if it is one of ``labels``."""
    from edge.labels import label_for_folder

    for key in (path.name.split("_")[0], path.parent.name):
        name = label_for_folder(key)
        if name in labels:
            return name
    return None


def compare_clients(model: str | os.PathLike, images: list[Path], threads: int = 1) -> dict:
    """Top-1 of the toolkit's runtime and of MediaPipe (whole frame, and the toolkit's crop) on ``images``."""
    from edge.runtime.runners import open_model

    runner = open_model(model, threads=threads)
    crop = runner.preprocessing.crop_fraction
    mp = mediapipe_classify(model, images, crop_fraction=crop, max_results=3)
    rows = []
    for path, res in zip(images, mp["results"]):
        rows.append({"image": path.name, "truth": true_label(path, runner.labels),
                     "toolkit": runner.classify(path, k=1)[0].label,
                     "mediapipe": res["whole"][0][0] if res["whole"] else None,
                     "mediapipe_crop": res["crop"][0][0] if res.get("crop") else None})
    n = len(rows)

    def share(key, other):
        return sum(r[key] == r[other] for r in rows) / n if n else float("nan")

    known = [r for r in rows if r["truth"] is not None]

    def accuracy(key):
        return sum(r[key] == r["truth"] for r in known) / len(known) if known else None

    return {
        "model": str(model), "input_dtype": runner.describe().get("input_dtype"), "mediapipe": mp["mediapipe"],
        "head": mp.get("head"), "images": n, "crop_fraction": crop,
        "agreement_whole_frame": share("mediapipe", "toolkit"), "agreement_center_crop": share("mediapipe_crop", "toolkit"),
        "labelled_images": len(known), "top1_toolkit": accuracy("toolkit"), "top1_mediapipe_whole_frame":
            accuracy("mediapipe"), "top1_mediapipe_center_crop": accuracy("mediapipe_crop"),
        "disagreements": [r for r in rows if r["mediapipe"] != r["toolkit"]], "rows": rows,
    }


def machine() -> dict:
    """CPU model and its SIMD extensions (what int8 kernels depend on), as every measurement records them."""
    import platform

    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            info = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in f if ":" in ln)}  # last CPU's
        cpu = info.get("model name") or cpu
        flags = set(info.get("flags", "").split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx")))
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": simd, "os": platform.platform()}


def markdown(results: list[dict]) -> str:
    def pct(x):
        return "" if x is None else f"{100 * x:.1f}%"

    lines = ["| model | input | images | MediaPipe = toolkit (whole frame) | MediaPipe = toolkit (toolkit's crop as ROI) "
             "| top-1 toolkit | top-1 MediaPipe whole frame | top-1 MediaPipe crop |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {Path(r['model']).name} | {r['input_dtype']} | {r['images']} | {pct(r['agreement_whole_frame'])} | "
                     f"{pct(r['agreement_center_crop'])} | {pct(r['top1_toolkit'])} | {pct(r['top1_mediapipe_whole_frame'])} | "
                     f"{pct(r['top1_mediapipe_center_crop'])} |")
    return "\n".join(lines)


def write_results(path: Path, payload: dict) -> None:
    """``path`` (JSON) and the same name with ``.md``: the table under the command and the machine."""
    from converters.common import write_json_atomic

    write_json_atomic(path, payload)
    m = payload["machine"]
    text = (f"Command: `{payload['command']}`\n\nMachine: {m['cpu']}, {m['cores']} cores ({', '.join(m['simd'])}); "
            f"{m['os']}. MediaPipe {payload['results'][0]['mediapipe']}.\n\n{markdown(payload['results'])}\n")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path.with_suffix(".md"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clients", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help=".tflite converted by converters.tflite (repeatable)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of images, searched recursively (default: the shipped validation photos)")
    p.add_argument("--limit", type=int, default=0, help="at most N images, spread over the sorted list")
    p.add_argument("--json", type=Path, default=None, help="write the results (JSON and a .md beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        from converters.common import package_folder
        from edge.preprocessing import list_images

        folder = args.data or package_folder("validation")
        images = list_images(folder) if folder.is_dir() else []
        if not images:
            raise ClientError(f"{folder}: no images (.jpg, .png, ...) found; pass --data DIR")
        if args.limit and len(images) > args.limit:
            step = len(images) / args.limit
            images = [images[int(i * step)] for i in range(args.limit)]
        for m in args.model:
            if not Path(m).is_file():
                raise ClientError(f"{m}: no such model file")
        results = [compare_clients(m, images) for m in args.model]
        table = markdown(results)
        print(table)
        if args.json:
            write_results(args.json, {"command": " ".join(["python -m benchmarks.clients", *(argv or sys.argv[1:])]),
                                      "data": str(folder), "machine": machine(),
                                      "results": [{k: v for k, v in r.items() if k != "rows"} for r in results]})
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
