"""Activation ranges for int8 calibration: the clipping range that minimizes quantization error.

The TFLite calibrator records each activation tensor's global min and max over the calibration images, and
the quantizer maps that whole range onto 256 levels. One outlier pixel in one image then widens the step
for every image: on NASNet-Mobile this cost 2 points of top-1 agreement with fp32 (96.6% on Imagenette val),
and calibrating on more images made it worse (more outliers), where PT2E's HistogramObserver, which
minimizes the error, kept ExecuTorch at 98%. Here:

1. the converter calibrates only (``_experimental_calibrate_only``): a float model whose tensors carry
   min/max;
2. that model runs on the same calibration images (LiteRT interpreter, every tensor kept), and each
   tensor's values are binned into a histogram over its [min, max];
3. each range is shrunk to the (lo, hi) that minimizes the expected squared error of 8-bit quantization
   on that histogram: clipping error outside, step^2 / 12 inside (:func:`mse_range`);
4. the quantizer (``mlir_quantize``, what ``convert()`` runs after calibration) quantizes with them.

Measured on the default model (``docs/quantization.md`` section 5, same graph): top-1 agreement with fp32
on the 3525 Imagenette val images 96.6% (min/max) -> 98.5%, mean KL 0.0166 -> 0.0042; the shipped edge
int8 artifact agrees on 98.3%. Same latency: the graph is unchanged.

``method="mean"`` (``--activation-ranges mean``): each tensor's range is the mean over the calibration
images of each image's own min and max (TF's quantization-aware-training convention, here post-training).
Why: a model trained without quantization in mind can have *massive activations* on a few images. On v1
(the first default model, never trained for int8), one of the 100 calibration photos drives cell 12 to
-145 where the other 99 stay within +-8; global min/max and the error-minimizing range (whose error sum
is dominated by that one image's many large values) both keep a step of ~0.6, which rounds the typical
image's cell-12 tensors (std ~0.3) to noise: -0.4 dB SQNR at the last concat, 93.6-94.1% top-1 agreement
on Imagenette val. The mean of the per-image ranges clips that one image and gives the other 99 a step
~15x finer: 97.9% agreement, top-1 81.30% against fp32 81.02% (docs/quantization.md section 6).
"""

from __future__ import annotations

import numpy as np

BINS = 8192
LEVELS = 256
# candidate shrink factors of each end of the calibrated range: log-spaced down to 1/500 of it, because
# one "massive activation" in the calibration images can set a range 100-500x the typical values (v1, cell
# 12: min -145 against a per-image std of 0.3), and the error-minimizing end then lies far inside.
_GRID = np.geomspace(0.002, 1.0, 97)


def mse_range(counts: np.ndarray, lo: float, hi: float, levels: int = LEVELS) -> tuple[float, float]:
    """(lo', hi') within [lo, hi] minimizing the expected squared error of quantizing the histogram
    ``counts`` (equal bins over [lo, hi]) with ``levels`` levels. Zero stays inside the range.

    Error of a candidate [a, b]: clipping, sum over bins outside of n_c (c - a)^2 or n_c (c - b)^2, plus
    rounding, step^2 / 12 for every value inside. With prefix sums of n, n c and n c^2 each candidate
    costs O(1), so the grid can be fine (97 x 97 candidates) at the cost of one pass over the bins.
    """
    counts = np.asarray(counts, np.float64)
    if hi <= lo or counts.sum() == 0:
        return lo, hi
    nb = len(counts)
    width = (hi - lo) / nb
    centers = lo + (np.arange(nb) + 0.5) * width
    # prefix sums with a leading 0: P[k] = sum of the first k bins
    p0 = np.concatenate([[0.0], np.cumsum(counts)])
    p1 = np.concatenate([[0.0], np.cumsum(counts * centers)])
    p2 = np.concatenate([[0.0], np.cumsum(counts * centers ** 2)])
    los = lo * _GRID if lo < 0 else np.array([lo])
    his = hi * _GRID if hi > 0 else np.array([hi])
    a, b = (g.ravel() for g in np.meshgrid(los, his, indexing="ij"))
    ok = b > a
    a, b = a[ok], b[ok]
    # bins whose center lies below a: the first ka; above b: from kb on
    ka = np.clip(np.ceil((a - lo) / width - 0.5), 0, nb).astype(np.int64)
    kb = np.clip(np.floor((b - lo) / width - 0.5) + 1, 0, nb).astype(np.int64)
    kb = np.maximum(kb, ka)
    below = p2[ka] - 2 * a * p1[ka] + a ** 2 * p0[ka]
    above = (p2[nb] - p2[kb]) - 2 * b * (p1[nb] - p1[kb]) + b ** 2 * (p0[nb] - p0[kb])
    step = (b - a) / (levels - 1)
    inside = (p0[kb] - p0[ka]) * step ** 2 / 12
    err = below + above + inside
    k = int(np.argmin(err))
    return float(a[k]), float(b[k])


class RangeHistograms:
    """Per-tensor value histograms over fixed calibrated ranges, filled image by image."""

    def __init__(self, ranges: dict[int, tuple[float, float]], bins: int = BINS):
        self.ranges = {i: r for i, r in ranges.items() if r[1] > r[0]}
        self.counts = {i: np.zeros(bins, np.int64) for i in self.ranges}
        self.bins = bins

    def add(self, index: int, values: np.ndarray) -> tuple[float, float]:
        """Add one image's values; returns that image's (min, max) to the bin (within range / bins of the
        exact values, from the same pass: a separate min() and max() doubled the range pass)."""
        lo, hi = self.ranges[index]
        v = np.asarray(values, np.float32).ravel()
        idx = np.clip(((v - lo) * (self.bins / (hi - lo))).astype(np.int64), 0, self.bins - 1)
        counts = np.bincount(idx, minlength=self.bins)
        self.counts[index] += counts
        nz = np.flatnonzero(counts)
        width = (hi - lo) / self.bins
        return (lo + nz[0] * width, lo + (nz[-1] + 1) * width) if len(nz) else (0.0, 0.0)

    def best_ranges(self) -> dict[int, tuple[float, float]]:
        return {i: mse_range(self.counts[i], *self.ranges[i]) for i in self.ranges}


def refine_calibrated_model(calibrated: bytes, samples, input_names: list[str] | None = None,
                            progress: bool = True, bar_file=None, method: str = "mse",
                            outputs: list | None = None) -> tuple[bytes, dict] | dict[str, tuple[bytes, dict]]:
    """Replace the min/max statistics of a calibrate-only TFLite model by other activation ranges.

    ``samples``: iterable of lists of float arrays (one per model input, batch 1), the calibration data the
    statistics came from. ``method``: 'mse' (error-minimizing), 'mean' (mean of per-image ranges), or
    'both', which returns {method: (model bytes, summary)} for the two from one pass over the images.
    ``outputs``, if given, receives the float model's outputs for every sample (the reference for choosing).
    Returns (model bytes, summary).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.tools import flatbuffer_utils
    from tqdm import tqdm

    if method not in ("mse", "mean", "both"):
        raise ValueError(f"activation range method {method!r}")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    stats = {i: t for i, t in enumerate(tensors)
             if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
             and t.quantization.max is not None and len(t.quantization.max) == 1}
    hist = RangeHistograms({i: (float(t.quantization.min[0]), float(t.quantization.max[0]))
                            for i, t in stats.items()})
    # the built-in kernels keep every tensor (a delegate would compute its inner tensors out of sight)
    interp = Interpreter(model_content=bytes(calibrated), num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    details = interp.get_input_details()
    order = _input_order(details, input_names)
    per_image: dict[int, list[tuple[float, float]]] = {i: [] for i in hist.ranges}
    for sample in tqdm(samples, desc="activation ranges", unit="img", disable=not progress, leave=False,
                       file=bar_file):
        for d, j in zip(details, order):
            interp.set_tensor(d["index"], np.asarray(sample[j], np.float32).reshape(d["shape"]))
        interp.invoke()
        if outputs is not None:
            outputs.append([interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()])
        for i in hist.ranges:
            v_lo, v_hi = hist.add(i, interp.get_tensor(i))
            per_image[i].append((min(0.0, v_lo), max(0.0, v_hi)))
    candidates = {}
    if method != "mean":
        candidates["mse"] = hist.best_ranges()
    if method != "mse":
        # the mean of each image's own range: one image with massive activations no longer sets the step
        candidates["mean"] = {i: (float(np.mean([r[0] for r in rs])), float(np.mean([r[1] for r in rs])))
                              for i, rs in per_image.items()}
    out = {}
    for name, best in candidates.items():
        shrink = []
        for i, (lo, hi) in best.items():
            old_lo, old_hi = hist.ranges[i]
            stats[i].quantization.min = [np.float32(lo)]
            stats[i].quantization.max = [np.float32(hi)]
            shrink.append((hi - lo) / (old_hi - old_lo))
        summary = {"method": name, "tensors": len(best), **({"bins": hist.bins} if name == "mse" else {}),
                   "median_range_fraction": round(float(np.median(shrink)), 3) if shrink else None}
        out[name] = (bytes(flatbuffer_utils.convert_object_to_bytearray(model)), summary)
    return out if method == "both" else out[method]


def median_kl(reference: list, candidate: list) -> float:
    """Median over images of the KL divergence from the reference's softmax to the candidate's (first
    output): the typical image's loss, which one clipped outlier image does not dominate."""
    from edge.labels import softmax

    p = softmax(np.concatenate([np.asarray(r[0], np.float64).reshape(1, -1) for r in reference]))
    q = softmax(np.concatenate([np.asarray(c[0], np.float64).reshape(1, -1) for c in candidate]))
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    return float(np.median(kl))


def choose_by_median_kl(reference: list, candidates: dict, images: str) -> tuple[str, dict]:
    """The candidate whose outputs are closest to ``reference`` (lowest :func:`median_kl`), and the report
    both converters record: ``candidates`` maps a method name to its outputs on the same images."""
    scored = {name: (median_kl(reference, got),
                     float(np.mean([np.argmax(r[0]) == np.argmax(g[0]) for r, g in zip(reference, got)])))
              for name, got in candidates.items()}
    best = min(scored, key=lambda k: scored[k][0])
    return best, {"method": best, "chosen_by": f"lowest median KL from the float model on {images}",
                  "chosen_from": {k: {"median_kl": float(f"{kl:.4g}"), "top1_agreement": round(agree, 4)}
                                  for k, (kl, agree) in scored.items()}}


def run_flatbuffer(flat: bytes, samples, input_names: list[str] | None = None) -> list:
    """Outputs of a TFLite model (XNNPACK, as deployed) for every sample."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flat, num_threads=2)
    interp.allocate_tensors()
    details = interp.get_input_details()
    order = _input_order(details, input_names)
    outs = []
    for sample in samples:
        for d, j in zip(details, order):
            x = np.asarray(sample[j], np.float32).reshape(d["shape"])
            if d["dtype"] != np.float32:  # int8/uint8 input: quantize as the deployed model is fed
                scale, zero = d["quantization"]
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
            interp.set_tensor(d["index"], x)
        interp.invoke()
        res = []
        for d in interp.get_output_details():
            y = interp.get_tensor(d["index"]).astype(np.float32)
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                y = (y - zero) * scale
            res.append(y)
        outs.append(res)
    return outs


def _input_order(details: list[dict], names: list[str] | None) -> list[int]:
    """For each interpreter input, the index of the sample array that feeds it (by Keras input name;
    in order when the names do not match one to one)."""
    keys = [d["name"].split(":")[0].removeprefix("serving_default_") for d in details]
    if names and len(set(names)) == len(names) and sorted(keys) == sorted(names):
        return [names.index(k) for k in keys]
    return list(range(len(details)))
