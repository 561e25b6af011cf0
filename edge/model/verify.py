"""Check a NASNet-Mobile port against ``keras.applications.NASNetMobile``, cell by cell.

    python -m edge.verify --weights PATH [--images DIR] [--input-size N]

Loads the weights into three networks: the reference ``keras.applications.NASNetMobile`` (an ``.h5``
is read by Keras' own loader, independently of this toolkit), this toolkit's PyTorch builder and its
Keras builder. Runs real images through all three and prints per-cell max relative error, the final
softmax difference and top-1 agreement. Exits 1 when any number is above tolerance, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

CELL_RTOL = 1e-4  # measured: ~1e-6 between faithful fp32 implementations (oneDNN vs PyTorch kernels)
SOFTMAX_ATOL = 1e-5


@dataclass
class VerifyResult:
    rows: list[dict]
    softmax_diff_torch: float
    softmax_diff_keras: float
    top1_agreement_torch: float
    top1_agreement_keras: float
    n_images: int
    include_top: bool

    @property
    def ok(self) -> bool:
        cells_ok = all(r["torch_rel"] <= CELL_RTOL and r["keras_rel"] <= CELL_RTOL for r in self.rows)
        if not self.include_top:
            return cells_ok
        return cells_ok and self.softmax_diff_torch <= SOFTMAX_ATOL and self.softmax_diff_keras <= SOFTMAX_ATOL

    def table(self) -> str:
        lines = ["| cell | output (H, W, C) | PyTorch max rel err | Keras builder max rel err |",
                 "|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['name']} | {r['shape']} | {r['torch_rel']:.2e} | {r['keras_rel']:.2e} |")
        if self.include_top:
            lines.append("")
            lines.append(f"softmax max abs diff: PyTorch {self.softmax_diff_torch:.2e}, "
                         f"Keras builder {self.softmax_diff_keras:.2e} (tolerance {SOFTMAX_ATOL:g})")
            lines.append(f"top-1 agreement on {self.n_images} images: PyTorch {100 * self.top1_agreement_torch:.1f}%, "
                         f"Keras builder {100 * self.top1_agreement_keras:.1f}%")
        lines.append(f"per-cell tolerance {CELL_RTOL:g}: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def sample_images_dir() -> Path:
    return Path(str(resources.files("edge").joinpath("assets/samples")))


def reference_model(src, input_size: int, include_top: bool):
    """keras.applications.NASNetMobile holding the same weights (Keras' own loader for .h5)."""
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()

    from edge.model.keras_emit import load_keras_weights
    from edge.model.sources import reference_weights

    kw = dict(weights=None, include_top=include_top, input_shape=(input_size, input_size, 3))
    if include_top:
        kw["classes"] = src.config.num_classes
    ref = keras.applications.NASNetMobile(**kw)
    if src.kind in ("keras_h5", "imagenet"):
        try:
            ref.load_weights(str(src.path))
        except Exception as e:  # Keras raises assorted types for a file that does not fit
            raise UserError(f"{src.path}: keras.applications.NASNetMobile cannot load it "
                             f"({str(e).splitlines()[0][:160]})") from None
    else:
        w = reference_weights(src)
        if not include_top:
            w.pop("predictions")
        load_keras_weights(ref, w)
    return ref


def verify(weights: str, images: Path | None = None, input_size: int = 224, limit: int = 0) -> VerifyResult:
    from edge.model.sources import load_torch_model, reference_weights, resolve_weights
    from edge.preprocessing import list_images, preprocess_batch

    src = resolve_weights(weights)  # bad files fail here, before the heavy imports
    import torch

    from edge.model.keras_emit import emit_keras, load_keras_weights, part_output_names
    from edge.model.plan import compile
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()
    has_top = src.keras_weights is None or "predictions" in src.keras_weights
    include_top = has_top and input_size == src.config.input_size
    files = list_images(images or sample_images_dir())
    if not files:
        raise UserError(f"{images}: no images found; give a folder of .jpg/.png photos")
    if limit:
        files = files[:limit]
    cfg = src.config.with_(input_size=input_size)
    x = preprocess_batch(files, cfg.preprocessing)

    ref = reference_model(src, input_size, include_top)
    plan = compile(cfg, include_top=include_top)
    names = part_output_names(plan)[1:]  # each cell's output layer
    ref_cells = keras.Model(ref.input, [ref.get_layer(n).output for n in names] + [ref.output])
    ours = emit_keras(plan)
    w = reference_weights(src)
    load_keras_weights(ours, {k: v for k, v in w.items() if include_top or k != "predictions"})
    ours_cells = keras.Model(ours.input, [ours.get_layer(n).output for n in names] + [ours.output])
    tm, _ = load_torch_model(source=src, input_size=input_size, include_top=include_top)

    ref_out = [np.asarray(a) for a in ref_cells.predict(x, verbose=0, batch_size=16)]
    our_out = [np.asarray(a) for a in ours_cells.predict(x, verbose=0, batch_size=16)]
    with torch.inference_mode():
        t_cells = tm.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2), return_cells=True)
        t_cells = [c.permute(0, 2, 3, 1).numpy() for c in t_cells[1:]]
        t_final = tm(torch.from_numpy(x).permute(0, 3, 1, 2))
        t_final = torch.softmax(t_final, 1).numpy() if include_top else t_final.permute(0, 2, 3, 1).numpy()

    def rel(a, b):
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))

    rows = []
    for spec, r, o, t in zip(cfg.cells(), ref_out, our_out, t_cells):
        rows.append({"name": spec.name, "shape": spec.out_shape, "torch_rel": rel(t, r), "keras_rel": rel(o, r)})
    if include_top:
        r, o = ref_out[-1], our_out[-1]
        return VerifyResult(rows, float(np.abs(t_final - r).max()), float(np.abs(o - r).max()),
                            float((t_final.argmax(1) == r.argmax(1)).mean()), float((o.argmax(1) == r.argmax(1)).mean()),
                            len(files), True)
    rows.append({"name": "features (after ReLU)", "shape": ref_out[-1].shape[1:],
                 "torch_rel": rel(t_final, ref_out[-1]) if t_final.shape == ref_out[-1].shape else float("inf"),
                 "keras_rel": rel(our_out[-1], ref_out[-1])})
    return VerifyResult(rows, 0.0, 0.0, 1.0, 1.0, len(files), False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="default",
                   help="Keras NASNet-mobile(.h5|-no-top.h5), toolkit .pt, 'imagenet' or 'default'")
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: shipped samples)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        result = verify(args.weights, args.images, args.input_size, args.limit)
        print(result.table())
        return 0 if result.ok else 1

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
