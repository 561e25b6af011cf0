"""``python -m edge.release``: make a trained checkpoint the package's default model, with its manifest.

    python -m edge.release --checkpoint runs/ft224/best.pt --accuracy results/accuracy_default.json

Copies the weights to ``edge/assets/models/<name>.pt`` (deploy configuration, labels, training history
inside) and writes ``<name>.json``: dataset, classes and labels, input size, preprocessing, accuracy
measured by ``benchmarks.accuracy``, training commands and wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.model.sources import DEFAULT_MODEL


def release(checkpoint: Path, accuracy: Path, name: str = DEFAULT_MODEL, version: str = "1",
            dataset: str = "Imagenette v2 (10 ImageNet classes), train split", extra: dict | None = None,
            with_tflite: bool = True) -> Path:
    from converters.common import now_iso, write_json_atomic
    from edge.model.sources import load_torch_model
    from edge.model.weights import save_toolkit_weights, sha256

    model, src = load_torch_model(str(checkpoint))
    acc = json.loads(Path(accuracy).read_text())
    row = acc["results"][0]
    out_dir = Path(__file__).resolve().parent / "assets" / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / f"{name}.pt"
    meta = {k: v for k, v in src.meta.items() if k != "dataset"}
    meta.update({"name": name, "version": version, "dataset": dataset})
    save_toolkit_weights(pt, model, meta)
    manifest = {
        "name": name, "version": version, "created": now_iso(), "architecture": "NASNet-A Mobile (4 @ 1056)",
        "dataset": dataset, "classes": src.meta.get("classes"), "labels": src.labels,
        "input_size": model.config.input_size, "preprocessing": model.config.preprocessing.to_dict(),
        "config": model.config.to_dict(), "val_top1": row["top1"], "val_top5": row["top5"],
        "accuracy": {"data": acc["data"], "images": acc["images"], "top1": row["top1"], "top5": row["top5"],
                     "per_class": row["per_class"], "measured_by": "python -m benchmarks.accuracy"},
        "training": extra or {}, "sha256": sha256(pt), "bytes": pt.stat().st_size,
    }
    write_json_atomic(pt.with_suffix(".json"), manifest)
    if with_tflite:
        # the demo's default: the same weights as a fully delegated int8 LiteRT model
        from converters.tflite import build_parser, convert

        convert(build_parser().parse_args(["--weights", str(pt), "--int8", "--output", str(out_dir), "--name", name]))
    return pt


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    p = argparse.ArgumentParser(prog="python -m edge.release", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--accuracy", type=Path, required=True, help="JSON from benchmarks.accuracy (first model)")
    p.add_argument("--name", default=DEFAULT_MODEL)
    p.add_argument("--version", default="1")
    p.add_argument("--training", type=Path, default=None, help="JSON with training commands and wall times")
    p.add_argument("--no-tflite", action="store_true", help="do not write the int8 .tflite beside the weights")
    args = p.parse_args(argv)
    extra = json.loads(args.training.read_text()) if args.training else None
    return run_cli(lambda: print(release(args.checkpoint, args.accuracy, args.name, args.version, extra=extra,
                                         with_tflite=not args.no_tflite)))


if __name__ == "__main__":
    sys.exit(main())
