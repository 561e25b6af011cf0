"""What the toolkit's center crop costs and buys: top-1 of one artifact at several crop fractions (and with the
whole frame squashed, as MediaPipe's ImageClassifier and ML Model Binding resize by default), and how often each
agrees with the whole-frame prediction.

    python scripts/crop_fraction_sweep.py --model artifacts/nasnet_mobile_edge_int8.tflite \
        --data ../shared/data/imagenette/val --json results/clients/crop_fraction_int8.json

The label of an image is its WordNet id (file-name prefix or folder), as in ``benchmarks.clients``. Every image is
preprocessed as the toolkit does (bilinear resize, the artifact's scale and offset), only the crop changes.
docs/clients.md section 4 (issue 19).
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="a .tflite or .pte made by the converters")
    p.add_argument("--data", type=Path, help="folder of labelled images (default: the shipped validation photos)")
    p.add_argument("--crops", default="0.875,0.95,1.0", help="crop fractions (default 0.875,0.95,1.0)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import cv2
    import numpy as np
    from tqdm import tqdm

    from benchmarks.clients import true_label
    from converters.common import package_folder
    from edge.preprocessing import list_images, load_rgb, preprocess
    from edge.runtime.runners import ModelError, open_model

    try:
        crops = [float(c) for c in args.crops.split(",")]
        assert all(0 < c <= 1 for c in crops)
    except (ValueError, AssertionError):
        sys.exit(f"error: --crops {args.crops!r}: give fractions in (0, 1], e.g. 0.875,1.0")
    try:
        runner = open_model(args.model, threads=2)
    except ModelError as e:
        sys.exit(f"error: {e}")
    images = list_images(args.data or package_folder("validation"))
    if not images:
        sys.exit(f"error: no images in {args.data}")
    pre = runner.preprocessing
    modes = [*crops, "whole frame"]

    def prep(path):
        rgb = load_rgb(path)
        # the toolkit's own preprocessing at each crop, and the whole frame squashed as MediaPipe resizes it
        out = [preprocess(rgb, replace(pre, crop_fraction=m), bgr=False) for m in crops]
        px = cv2.resize(rgb, (pre.size, pre.size), interpolation=cv2.INTER_LINEAR)
        return out + [px.astype(np.float32) * np.float32(pre.scale) + np.float32(pre.offset)]

    truth = [true_label(f, runner.labels) for f in images]
    preds: dict = {m: [] for m in modes}
    with ThreadPoolExecutor(2) as ex:
        for xs in tqdm(ex.map(prep, images, chunksize=16), total=len(images), unit="img", file=sys.stderr):
            for m, x in zip(modes, xs):
                preds[m].append(int(runner.predict(x[None]).argmax()))
    known = [i for i, t in enumerate(truth) if t is not None]
    rows = []
    for m in modes:
        labels = [runner.labels[k] for k in preds[m]]
        rows.append({"crop": m, "top1": sum(labels[i] == truth[i] for i in known) / len(known) if known else None,
                     "agreement_with_whole_frame": float(np.mean([a == b for a, b in
                                                                  zip(preds[m], preds["whole frame"])]))})
    sample = images[:: max(1, len(images) // 200)]  # are the photos square? (then the whole frame is crop 1.0)
    square = sum(1 for shape in (load_rgb(f).shape for f in sample) if shape[0] == shape[1])
    res = {"model": str(args.model), "images": len(images), "labelled": len(known), "manifest_crop": pre.crop_fraction,
           "square_photos": f"{square} of {len(sample)} sampled", "rows": rows}
    print(f"{args.model.name}: {len(images)} images ({len(known)} labelled, square: {res['square_photos']}); "
          f"the artifact's own crop {pre.crop_fraction}")
    print("| crop | top-1 | agrees with the whole frame |\n|---|---|---|")
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}%" if r["top1"] is not None else "-"
        print(f"| {r['crop']} | {top1} | {100 * r['agreement_with_whole_frame']:.1f}% |")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
