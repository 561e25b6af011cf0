"""``python -m benchmarks.accuracy``: top-1/top-5 of any mix of artifacts on the same real images.

    python -m benchmarks.accuracy --data ../shared/data/imagenette/val --model default \\
        --model artifacts/nasnet_mobile_edge_int8.tflite --json results/accuracy.json

``--data`` is a folder of class subfolders. Folders named by WordNet id are matched to a model's labels
through ImageNet (a 1000-class model on Imagenette is scored on those ImageNet indices); otherwise the
folder names must be the model's labels. Reports top-1, top-5, per-class accuracy, top-1 agreement with
the first model and the mean KL divergence from it. Unreadable images are skipped and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge.data import DataError, ImageFolder
from edge.labels import label_for_folder, softmax, wnid_to_imagenet


def class_targets(folder: ImageFolder, labels: list[str], model_name: str) -> list[int]:
    """The model output index of each class folder, or a clear error when classes do not match."""
    if not labels:
        raise DataError(f"{model_name}: the model carries no labels (no manifest beside it?)")
    wn = wnid_to_imagenet()
    out = []
    for c in folder.classes:
        if len(labels) == 1000 and c in wn:
            out.append(wn[c][0])
        elif c in labels:
            out.append(labels.index(c))
        elif label_for_folder(c) in labels:
            out.append(labels.index(label_for_folder(c)))
        else:
            raise DataError(f"{model_name}: class folder '{c}' ({label_for_folder(c)}) is not one of the model's "
                            f"{len(labels)} classes ({', '.join(labels[:4])}, ...)")
    return out


def evaluate(models: list[str], data: Path, limit: int = 0, threads: int = 2, batch: int = 32,
             progress: bool = True) -> dict:
    from tqdm import tqdm

    from edge.preprocessing import ImageError, preprocess
    from edge.runtime import open_model

    folder = ImageFolder.scan(data)
    files, targets = folder.files, folder.targets
    if limit and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files, targets = [files[i] for i in idx], [targets[i] for i in idx]
    runners = [(m, open_model(m, threads=threads)) for m in models]
    maps = [np.asarray(class_targets(folder, r.labels, m)) for m, r in runners]
    pres = {r.preprocessing for _, r in runners}
    logits = {m: [] for m, _ in runners}
    kept, skipped = [], []
    bar = tqdm(total=len(files), desc="evaluate", unit="img", disable=not progress)
    for i in range(0, len(files), batch):
        chunk = list(zip(files[i:i + batch], targets[i:i + batch]))
        xs = {pre: [] for pre in pres}
        ok = []
        for f, t in chunk:
            try:
                arrs = {pre: preprocess(f, pre) for pre in pres}
            except ImageError as e:
                skipped.append(str(e))
                continue
            for pre in pres:
                xs[pre].append(arrs[pre])
            ok.append(t)
        if ok:
            for m, r in runners:
                logits[m].append(r.predict(np.stack(xs[r.preprocessing])))
            kept += ok
        bar.update(len(chunk))
    bar.close()
    if not kept:
        raise DataError(f"{data}: none of the images could be read")
    y = np.asarray(kept)
    results = []
    first_pred, first_p = None, None
    for (m, r), cmap in zip(runners, maps):
        z = np.concatenate(logits[m])
        # restrict to the dataset's classes? No: score on the full output, as a deployed model would be.
        p = softmax(z)
        target_idx = cmap[y]
        order = np.argsort(-z, axis=1)
        top1 = order[:, 0] == target_idx
        top5 = (order[:, :5] == target_idx[:, None]).any(1)
        per_class = {folder.classes[c]: float(top1[y == c].mean()) for c in range(len(folder.classes)) if (y == c).any()}
        rec = {"model": m, "runtime": r.kind.value, "count": int(len(y)), "top1": float(top1.mean()),
               "top5": float(top5.mean()), "per_class": per_class}
        if first_pred is None:
            first_pred, first_p = order[:, 0], p
        elif p.shape == first_p.shape:
            rec["agreement_with_first"] = float((order[:, 0] == first_pred).mean())
            kl = np.sum(first_p * (np.log(np.clip(first_p, 1e-12, None)) - np.log(np.clip(p, 1e-12, None))), 1)
            rec["mean_kl_from_first"] = float(kl.mean())
        results.append(rec)
    return {"data": str(data), "images": int(len(y)), "unreadable_skipped": len(skipped),
            "classes": folder.classes, "results": results}


def markdown(res: dict) -> str:
    lines = [f"Accuracy on {res['data']} ({res['images']} images, {res['unreadable_skipped']} unreadable skipped)", "",
             "| model | runtime | top-1 | top-5 | agreement with first | mean KL from first |", "|---|---|---|---|---|---|"]
    for r in res["results"]:
        agr = f"{100 * r['agreement_with_first']:.1f}%" if "agreement_with_first" in r else ""
        kl = f"{r['mean_kl_from_first']:.2e}" if "mean_kl_from_first" in r else ""
        lines.append(f"| {Path(r['model']).name} | {r['runtime']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | "
                     f"{agr} | {kl} |")
    lines += ["", "Per class (top-1):", "", "| class | " + " | ".join(Path(r['model']).name for r in res["results"]) + " |",
              "|---|" + "---|" * len(res["results"])]
    for c in res["classes"]:
        lines.append(f"| {c} {label_for_folder(c)} | " +
                     " | ".join(f"{100 * r['per_class'].get(c, float('nan')):.1f}%" for r in res["results"]) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of class subfolders, e.g. imagenette/val")
    p.add_argument("--model", action="append", default=[],
                   help="artifact or weights (repeatable; default: the bundled default model)")
    p.add_argument("--limit", type=int, default=0, help="evaluate N images spread over the classes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the result here (and a .md beside it)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from converters.common import write_json_atomic
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        models = args.model or ["default"]
        res = evaluate(models, args.data, args.limit, args.threads, progress=not args.quiet)
        print(markdown(res))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.json, res)
            args.json.with_suffix(".md").write_text(markdown(res))
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
