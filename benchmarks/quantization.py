"""``python -m benchmarks.quantization``: where int8 loses the float model's predictions, cell by cell.

    python -m benchmarks.quantization --weights default --data ../shared/data/imagenette/val --images 300 \\
        --output results/quantization

Two views of the same question, both on held-out real images against the float (edge-form) network:

- **per cell**: the network is quantized as the ExecuTorch converter does (PT2E, XNNPACK quantizer,
  per-channel weights, calibrated on the package's calibration images) with every cell's output exposed,
  and the SQNR of each cell output says where the noise grows;
- **noise budget**: one class of tensors at a time is rounded to int8 (weights per channel; or activations
  per tensor with calibrated min/max: depthwise outputs, BatchNorm outputs, cell outputs) while the rest
  stays float, and the logits' SQNR and top-1 agreement say what each class costs.

Writes ``quantization.json`` and ``quantization.md`` into ``--output``. Read ``docs/quantization.md``
for what the numbers led to.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(((reference - other) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((reference ** 2).sum()) / noise)


def _nchw(batch: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def _batched(fn, images: np.ndarray, size: int = 25):
    import torch

    with torch.no_grad():
        outs = [fn(_nchw(images[i:i + size])) for i in range(0, len(images), size)]
    if isinstance(outs[0], (tuple, list)):
        return [torch.cat([o[k] for o in outs]).numpy() for k in range(len(outs[0]))]
    return torch.cat(outs).numpy()


def per_cell_sqnr(model, calibration: np.ndarray, images: np.ndarray) -> list[dict]:
    """SQNR of every cell output and the logits, PT2E-int8 (XNNPACK quantizer) vs float."""
    import torch

    from converters.executorch import nasnet_xnnpack_quantizer
    from edge.quiet import quiet_executorch_import

    with quiet_executorch_import():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class AllOutputs(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            outs = self.m.forward_features(x, return_cells=True)
            return (*outs, self.m.head(outs[-1]))

    wrapped = AllOutputs(model).eval()
    size = model.config.input_size
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(wrapped, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: batch},), strict=False)
    prepared = prepare_pt2e(ep.module(), nasnet_xnnpack_quantizer())
    _batched(prepared, calibration, 10)
    quantized = convert_pt2e(prepared)
    ref = _batched(wrapped, images)
    got = _batched(quantized, images)
    names = ["stem"] + [s.name for s in model.specs] + ["logits"]
    return [{"name": n, "sqnr_db": round(sqnr_db(a, b), 2), "min": float(a.min()), "max": float(a.max()),
             **({"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())} if n == "logits" else {})}
            for n, a, b in zip(names, ref, got)]


def _fake_quant(x, lo: float, hi: float):
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    if scale == 0:
        return x
    zp = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale


def noise_budget(model, calibration: np.ndarray, images: np.ndarray) -> list[dict]:
    """Logit SQNR / agreement when only one class of tensors is int8 (the rest float)."""
    import copy

    import torch

    from edge.model.plan import Kind

    ref = _batched(model, images)

    def points(kind: str):
        """(name, module, pre-hook?) of the tensors of one class, found from the plan's nodes."""
        for i, part in enumerate(model.cells):
            if kind == "cell outputs":
                yield f"cells.{i}", part, False
        for part in [model.stem, *model.cells]:
            for n in part.nodes:
                if kind == "depthwise outputs" and n.kind is Kind.SEPARABLE:
                    yield n.name, part.layers[n.weights].pointwise, True
                elif kind == "depthwise outputs" and n.kind is Kind.CONV and n.weights.endswith("_pw"):
                    yield n.name, part.layers[n.weights], True  # a split separable's pointwise conv
                elif kind == "BatchNorm outputs" and n.kind is Kind.BATCH_NORM:
                    yield n.name, part.layers[n.weights], False

    def run_with(kinds: list[str]) -> np.ndarray:
        ranges: dict[str, list[float]] = {}
        pts = [p for k in kinds for p in points(k)]

        def observe(name):
            def f(t):
                r = ranges.setdefault(name, [float("inf"), float("-inf")])
                r[0], r[1] = min(r[0], float(t.min())), max(r[1], float(t.max()))
            return f

        def attach(fn_for):
            hs = []
            for name, mod, pre in pts:
                f = fn_for(name)
                if pre:
                    hs.append(mod.register_forward_pre_hook(lambda m, a, f=f: f(a[0])))
                else:
                    hs.append(mod.register_forward_hook(lambda m, a, o, f=f: f(o)))
            return hs

        hs = attach(observe)
        _batched(model, calibration, 10)
        for h in hs:
            h.remove()
        hs = attach(lambda name: (lambda t, r=ranges[name]: _fake_quant(t, *r)))
        try:
            return _batched(model, images)
        finally:
            for h in hs:
                h.remove()

    rows = []
    weights_only = copy.deepcopy(model)
    with torch.no_grad():
        for mod in weights_only.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                w = mod.weight
                s = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
                w.copy_(torch.round(w / s) * s)
    cases = [("weights (per channel)", lambda: _batched(weights_only, images))]
    for kind in ("depthwise outputs", "BatchNorm outputs", "cell outputs"):
        cases.append((f"activations: {kind}", lambda kind=kind: run_with([kind])))
    cases.append(("activations: all three", lambda: run_with(["depthwise outputs", "BatchNorm outputs",
                                                                "cell outputs"])))
    for what, fn in cases:
        got = fn()
        rows.append({"int8": what, "logit_sqnr_db": round(sqnr_db(ref, got), 2),
                     "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean())})
    return rows


def to_markdown(result: dict) -> str:
    lines = [f"# Where int8 loses the float model ({result['weights']})", "",
             f"`{result['command']}`", "",
             f"{result['images']} held-out images from `{result['data']}`; calibration: "
             f"{result['calibration'].get('count')} images ({result['calibration'].get('folder', '?')}).",
             "", "## Per cell (PT2E int8, XNNPACK quantizer, vs float)", "",
             "| output | SQNR (dB) | float range |", "|---|---:|---|"]
    for r in result["per_cell"]:
        lines.append(f"| {r['name']} | {r['sqnr_db']:.2f} | [{r['min']:.2f}, {r['max']:.2f}] |")
    logits = result["per_cell"][-1]
    lines += ["", f"Top-1 agreement of the int8 network with the float one: {logits['top1_agreement']:.2%}.", "",
              "## Noise budget (only this class int8, the rest float)", "",
              "| int8 | logit SQNR (dB) | top-1 agreement |", "|---|---:|---:|"]
    for r in result["noise_budget"]:
        lines.append(f"| {r['int8']} | {r['logit_sqnr_db']:.2f} | {r['top1_agreement']:.2%} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from edge.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(prog="python -m benchmarks.quantization", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--weights", default="default", help="default | imagenet | PATH.h5 | PATH.pt")
    p.add_argument("--data", type=Path, default=None,
                   help="held-out real images (folder, recursive); default: the package's sample images")
    p.add_argument("--images", type=int, default=300, help="use at most this many (spread over the classes)")
    p.add_argument("--calibration", type=Path, default=None, help="default: the package's calibration images")
    p.add_argument("--output", type=Path, default=Path("results/quantization"))
    p.add_argument("--skip-per-cell", action="store_true", help="only the (fast) noise budget")
    return p


def run(args: argparse.Namespace) -> dict:
    from converters.common import (command_line, load_images, now_iso, package_folder, write_json_atomic)
    from edge.model.sources import load_torch_model
    from edge.model.torch_emit import build_torch_model

    reference, src = load_torch_model(args.weights)
    cfg = src.config
    model = build_torch_model(cfg, "xnnpack_fp32")  # the edge form ExecuTorch's PT2E quantizer takes
    model.load_keras_weights(model.plan.lower_weights(reference.keras_weights()))
    data = args.data or package_folder("samples")
    images = load_images(data, cfg.preprocessing, limit=args.images, what="validation")
    calibration = load_images(args.calibration or package_folder("calibration"), cfg.preprocessing,
                              exclude={f.resolve() for f in images.files})
    args.output.mkdir(parents=True, exist_ok=True)
    log.info("noise budget on %d images ...", len(images.files))
    result = {"weights": src.describe().get("path") or args.weights, "data": str(data), "images": len(images.files),
              "calibration": calibration.describe(args.calibration), "command": command_line(), "created": now_iso(),
              "noise_budget": noise_budget(model, calibration.batch, images.batch)}
    if not args.skip_per_cell:
        log.info("per-cell SQNR (PT2E int8) ...")
        result["per_cell"] = per_cell_sqnr(model, calibration.batch, images.batch)
    write_json_atomic(args.output / "quantization.json", result)
    if "per_cell" in result:
        (args.output / "quantization.md").write_text(to_markdown(result))
    for r in result["noise_budget"]:
        print(f"{r['int8']:40s} logit SQNR {r['logit_sqnr_db']:6.2f} dB  top-1 agreement {r['top1_agreement']:.2%}")
    for r in result.get("per_cell", []):
        print(f"{r['name']:28s} SQNR {r['sqnr_db']:6.2f} dB")
    print(f"wrote {args.output / 'quantization.json'}")
    return result


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
