"""What both converters share: flags, precisions, calibration and validation images, metrics, the gate.

The conversion itself is one pipeline for both runtimes (:mod:`converters.pipeline`); the manifest it writes
beside every artifact is one type (:class:`edge.artifact.manifest.Manifest`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import enum
import json
import logging
import os
import platform
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from importlib import resources
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import softmax
from edge.preprocessing import ImageError, list_images, preprocess

log = logging.getLogger(__name__)

DEFAULT_NUM_CALIBRATION = 200


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # int8 weights, float activations (TFLite dynamic-range)
    INT8 = "int8"  # full-integer, calibrated activations

    @property
    def quantized(self) -> bool:
        return self in (Precision.DYNAMIC, Precision.INT8)


class ConversionError(UserError):
    """A conversion that cannot proceed; the message says what to change."""


def package_folder(name: str) -> Path:
    return Path(str(resources.files("edge").joinpath(f"assets/{name}")))


def precision_list(allowed: list[str]):
    """argparse type of ``--precision``: one precision or a comma list of them, kept as the normalized string."""
    def parse(text: str) -> str:
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"invalid choice: {bad[0] if bad else text!r} (choose from "
                                             f"{', '.join(allowed)}, or several joined by commas: fp32,fp16)")
        return ",".join(dict.fromkeys(items))  # in order, once each
    parse.__name__ = "precision"
    return parse


def precisions_of(args: argparse.Namespace) -> list[Precision]:
    """The precisions ``--precision`` asked for, in order (fp32 when none)."""
    precisions = [Precision(p) for p in (args.precision or "fp32").split(",")]
    if len(precisions) > 1 and getattr(args, "cells", False):
        raise ConversionError("--cells takes one precision at a time (its cells/cells.json lists one); run once "
                              "per precision, each with its own --output")
    return precisions


def add_common_arguments(p: argparse.ArgumentParser, precisions: list[str]) -> None:
    p.add_argument("--weights", default="default",
                   help="'default' (bundled model), 'imagenet' (Keras cache), a Keras .h5 or a toolkit .pt")
    p.add_argument("--precision", type=precision_list(precisions), default=None, metavar="P[,P...]",
                   help=f"{', '.join(precisions)}, or several at once (fp32,fp16): one artifact each, "
                        "from one build of the model (default: fp32)")
    p.add_argument("--int8", dest="precision", action="store_const", const="int8", help="= --precision int8")
    p.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="= --precision fp16")
    p.add_argument("--output", type=Path, default=Path("artifacts"), help="output folder (default: artifacts/)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="folder of images for int8 calibration, searched recursively "
                        "(default: the real photos shipped in the package)")
    p.add_argument("--num-calibration", type=int, default=DEFAULT_NUM_CALIBRATION,
                   help=f"calibration images to use (default {DEFAULT_NUM_CALIBRATION}, or all there are)")
    p.add_argument("--validation", type=Path, default=None,
                   help="held-out images for validation (default: the package's 200 validation photos, "
                        "never used for calibration or training)")
    p.add_argument("--no-lowering", action="store_true",
                   help="convert the stock graph instead of the NASNet-aware edge form (for comparison)")
    p.add_argument("--cells", action="store_true", help="also export every cell as its own model")
    p.add_argument("--fail-under-agreement", type=float, default=None, metavar="X",
                   help="exit 1 when top-1 agreement with the float model is below X (0-1 or percent)")
    p.add_argument("--crop-fraction", type=float, default=None, metavar="F",
                   help="the center square's share of the shorter side that the artifact's preprocessing takes "
                        "(default: the model's, 0.875 for NASNet-Mobile); 1.0 takes the whole square, which is what "
                        "MediaPipe's ImageClassifier sees of a square photo (docs/clients.md section 4)")
    p.add_argument("--name", default=None, help="artifact base name (default: the model's name)")
    p.add_argument("-v", "--verbose", action="store_true")


@dataclass
class ImageSet:
    files: list[Path]
    batch: np.ndarray  # NHWC float
    skipped: list[str]

    def describe(self, root: Path | None) -> dict:
        return {"folder": str(root) if root else "package", "count": len(self.files),
                "unreadable_skipped": len(self.skipped), "files": [f.name for f in self.files]}


def check_image_folder(folder: Path, what: str) -> None:
    """``folder`` exists and is a folder (ConversionError naming ``what`` otherwise)."""
    if not folder.exists():
        raise ConversionError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise ConversionError(f"{what} path {folder} is not a folder")


def load_images(folder: Path, pre, limit: int | None = None, what: str = "calibration",
                exclude: set[Path] | None = None) -> ImageSet:
    """Preprocessed images of a folder (recursive); unreadable ones are skipped and counted."""
    check_image_folder(folder, what)
    files = [f for f in list_images(folder) if not exclude or f.resolve() not in exclude]
    if not files:
        raise ConversionError(f"{what} folder {folder} holds no images (.jpg, .png, ...); "
                              f"pass --{what} DIR with real photos")
    # spread a limited selection over the sorted list so every class folder contributes
    if limit and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in idx]
    ok, arrays, skipped = [], [], []
    for f in files:
        try:
            arrays.append(preprocess(f, pre))
            ok.append(f)
        except ImageError as e:
            skipped.append(str(e))
    if skipped:
        log.warning("%s: skipped %d unreadable image(s), e.g. %s", what, len(skipped), skipped[0])
    if not ok:
        raise ConversionError(f"{what} folder {folder}: none of its {len(files)} images could be read")
    return ImageSet(ok, np.stack(arrays), skipped)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (Wilson score) interval of a proportion: honest near 100%, where the normal one is not."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# a validation whose 95% interval of agreement is wider than this (each side) cannot gate to a point
GATE_HALF_WIDTH = 0.01


def compare(reference_logits: np.ndarray, logits: np.ndarray) -> dict:
    """Agreement of an artifact's logits with the float reference on the same images (with its 95%
    interval: 200 images at 97.5% give 94.3-98.9%, which gates nothing to within a point)."""
    ref = np.asarray(reference_logits, np.float64)
    got = np.asarray(logits, np.float64)
    p, q = softmax(ref), softmax(got)
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    noise = np.sum((ref - got) ** 2)
    sqnr = float("inf") if noise == 0 else 10 * np.log10(np.sum(ref ** 2) / noise)
    same = int((ref.argmax(1) == got.argmax(1)).sum())
    return {"images": int(len(ref)), "top1_agreement": same / max(1, len(ref)),
            "top1_agreement_ci95": [round(x, 4) for x in wilson_interval(same, len(ref))],
            "max_abs_prob_diff": float(np.abs(p - q).max()), "mean_kl": float(kl.mean()),
            "logit_sqnr_db": float(sqnr), "max_abs_logit_diff": float(np.abs(ref - got).max())}


def artifact_base(config, lowered: bool, name: str | None = None) -> str:
    """The artifact name's stem for both converters: ``--name`` when given, else the configuration's name and
    the form (``nasnet_mobile_edge``, ``nasnet_large_stock``, ...), never a hard-coded network."""
    return name or f"{config.name}_{'edge' if lowered else 'stock'}"


def agreement_threshold(x: float | None) -> float | None:
    if x is None:
        return None
    if x > 1:
        x = x / 100.0
    if not 0 <= x <= 1:
        raise ConversionError(f"--fail-under-agreement {x}: give a fraction (0.97) or a percentage (97)")
    return x


def crop_fraction(x: float | None) -> float | None:
    if x is not None and not 0.25 <= x <= 1:
        raise ConversionError(f"--crop-fraction {x}: give the share of the shorter side to keep, 0.25 to 1 "
                              "(0.875: the ImageNet convention; 1: the whole square)")
    return x


def agreement_gate(validation: dict, threshold: float | None) -> dict:
    """The manifest's gate fields: passed when top-1 agreement >= threshold ({} without a threshold)."""
    if threshold is None or not validation:
        return {}
    return {"fail_under_agreement": threshold, "passed": bool(validation["top1_agreement"] >= threshold)}


def tool_versions(*names: str) -> dict:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_output_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create output folder {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ConversionError(f"output folder {folder} is not writable; pass --output DIR")
    return folder


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=json_default)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:  # name the file the user asked for (a failed write carries no file name)
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:  # a full disk or Ctrl-C leaves no partial file behind
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_json_atomic` for text (a Markdown report beside its JSON)."""
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def json_default(o):
    """``json.dump``'s ``default`` for what manifests hold: numpy scalars, paths, enums."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, enum.Enum):
        return o.value
    raise TypeError(type(o))


def command_line() -> str:
    return "python -m " + (sys.modules["__main__"].__spec__.name if getattr(sys.modules["__main__"], "__spec__", None)
                           else Path(sys.argv[0]).name) + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class Stages:
    """Prints which stage a long conversion is in, with timings kept for the manifest."""

    def __init__(self, total: int):
        self.total, self.n, self.timings = total, 0, {}

    @contextmanager
    def stage(self, name: str, key: str | None = None, record: dict | None = None):
        """``name`` is what the user reads; the time is kept under ``key`` (default ``name``), in
        :attr:`timings` and in ``record`` when given (one artifact's own stages)."""
        self.n += 1
        log.info("[%d/%d] %s ...", self.n, self.total, name)
        t = time.perf_counter()
        yield
        dt = time.perf_counter() - t
        self.timings[key or name] = round(dt, 2)
        if record is not None:
            record[key or name] = round(dt, 2)
        log.info("      %s done in %.1fs", name, dt)


def validation_table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| artifact | images | top-1 agreement (95% interval) | max abs prob diff | mean KL | logit SQNR (dB) |",
             "|---|---|---|---|---|---|"]
    for name, v in rows:
        ci = v.get("top1_agreement_ci95")
        ci_text = f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)" if ci else ""
        lines.append(f"| {name} | {v['images']} | {100 * v['top1_agreement']:.1f}%{ci_text} | "
                     f"{v['max_abs_prob_diff']:.2e} | {v['mean_kl']:.2e} | {v['logit_sqnr_db']:.1f} |")
    return "\n".join(lines)


def interval_warning(v: dict) -> str | None:
    """A warning when the validation is too small to gate to within a point, with the fix."""
    ci = v.get("top1_agreement_ci95")
    if not ci or max(v["top1_agreement"] - ci[0], ci[1] - v["top1_agreement"]) <= GATE_HALF_WIDTH:
        return None
    p = min(v["top1_agreement"], 0.995)  # at 100% observed, size it for 99.5%
    need = v["images"]
    while need < 10 ** 6:
        lo, hi = wilson_interval(round(p * need), need)
        if max(p - lo, hi - p) <= GATE_HALF_WIDTH:
            break
        need = int(need * 1.1) + 1
    return (f"validation on {v['images']} images: top-1 agreement {100 * v['top1_agreement']:.1f}% has a 95% "
            f"interval of {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%, wider than +-1 point; for a gate to a point pass "
            f"--validation DIR with at least {need} held-out images (benchmarks.accuracy measures whole folders)")


def converter_main(build_parser, convert, argv: list[str] | None = None) -> int:
    """Shared entry point of the converters: run ``convert``, then apply the --fail-under-agreement gate."""
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        result = convert(args)
        manifests = result if isinstance(result, list) else [result]  # several precisions: one each
        manifests = [m.to_dict() if hasattr(m, "to_dict") else m for m in manifests]
        failed = [m for m in manifests if m["validation"].get("passed") is False]
        for m in failed:
            v = m["validation"]
            which = f" ({m['artifact']})" if len(manifests) > 1 and "artifact" in m else ""
            print(f"error: top-1 agreement {100 * v['top1_agreement']:.1f}% is below "
                  f"--fail-under-agreement {100 * v['fail_under_agreement']:.1f}%{which}", file=sys.stderr)
        return 1 if failed else 0

    return run_cli(go, verbose=args.verbose)
