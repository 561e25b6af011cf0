"""``python -m benchmarks.accuracy``: top-1/top-5 of any mix of artifacts on the same real images.

    python -m benchmarks.accuracy --data ../shared/data/imagenette/val --model default \\
        --model artifacts/nasnet_mobile_edge_int8.tflite --json results/accuracy.json

``--data`` is a folder of class subfolders. Folders named by WordNet id are matched to a model's labels
through ImageNet (a 1000-class model on Imagenette is scored on those ImageNet indices); otherwise the
folder names must be the model's labels. Reports top-1, top-5, per-class accuracy, top-1 agreement with
the first model and the mean KL divergence from it. Unreadable images are skipped and counted.

``--delegate xnnpack,gpu`` evaluates every ``.tflite`` once per delegate (``gpu``: LiteRT's GPU accelerator,
``--gpu-precision fp16,fp32``), so GPU-against-CPU agreement of one artifact is one command:
``--model X.tflite --delegate xnnpack,gpu --gpu-precision fp32`` (the first row is the reference; logit SQNR
against it is reported too). ``--fail-under-agreement X`` exits 1 when a row agrees less with the first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge.training.data import DataError, ImageFolder
from edge.errors import UsageError
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


def model_rows(models: list[str], delegates: list[str], gpu_precisions: list[str]) -> list[tuple[str, str, str | None]]:
    """(model, delegate, GPU precision) per evaluated row: each ``.tflite`` once per delegate, others once."""
    rows = []
    for m in models:
        if not str(m).endswith(".tflite"):
            rows.append((m, "xnnpack" if str(m).endswith(".pte") else "cpu", None))
            continue
        for d in delegates:
            rows += [(m, d, g) for g in gpu_precisions] if d == "gpu" else [(m, d, None)]
    return rows


def evaluate(models: list[str], data: Path, limit: int = 0, threads: int = 2, batch: int = 32,
             progress: bool = True, delegates: list[str] | None = None,
             gpu_precisions: list[str] | None = None) -> dict:
    from tqdm import tqdm

    from edge.preprocessing import ImageError, preprocess
    from edge.runtime.runners import open_model

    folder = ImageFolder.scan(data)
    files, targets = folder.files, folder.targets
    if limit and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files, targets = [files[i] for i in idx], [targets[i] for i in idx]
    rows = model_rows(models, delegates or ["xnnpack"], gpu_precisions or ["fp16"])
    runners = []
    for m, d, g in rows:
        kw = {"delegate": d, "gpu_precision": g} if d in ("xnnpack", "none", "gpu") else {}
        runners.append((m if (d, g) == ("xnnpack", None) or d == "cpu" else f"{m} [{d}{'/' + g if g else ''}]",
                        open_model(m, threads=threads, **kw)))
    maps = [np.asarray(class_targets(folder, r.labels, m)) for m, r in runners]
    pres = {r.preprocessing for _, r in runners}
    logits: dict = {m: [] for m, _ in runners}
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
    first_pred, first_p, first_z = None, None, None
    for (m, r), cmap in zip(runners, maps):
        z = np.concatenate(logits[m])
        # restrict to the dataset's classes? No: score on the full output, as a deployed model would be.
        p = softmax(z)
        target_idx = cmap[y]
        order = np.argsort(-z, axis=1)
        top1 = order[:, 0] == target_idx
        top5 = (order[:, :5] == target_idx[:, None]).any(1)
        per_class = {folder.classes[c]: float(top1[y == c].mean()) for c in range(len(folder.classes)) if (y == c).any()}
        d = r.describe()
        rec = {"model": m, "runtime": r.kind.value, "delegate": d.get("delegate"), "count": int(len(y)),
               "top1": float(top1.mean()),
               "top5": float(top5.mean()), "per_class": per_class}
        if first_pred is None:
            first_pred, first_p, first_z = order[:, 0], p, z
        elif p.shape == first_p.shape:
            rec["agreement_with_first"] = float((order[:, 0] == first_pred).mean())
            noise = float(np.sum((np.float64(first_z) - z) ** 2))
            rec["logit_sqnr_db_vs_first"] = (float("inf") if noise == 0 else
                                             float(10 * np.log10(np.sum(np.float64(first_z) ** 2) / noise)))
            rec["max_abs_logit_diff_vs_first"] = float(np.abs(np.float64(first_z) - z).max())
            kl = np.sum(first_p * (np.log(np.clip(first_p, 1e-12, None)) - np.log(np.clip(p, 1e-12, None))), 1)
            rec["mean_kl_from_first"] = float(kl.mean())
        if d.get("label"):
            rec.update({"gpu_precision": d.get("precision"), "label": d["label"], "adapter": d.get("adapter"),
                        "fully_accelerated": d.get("fully_accelerated")})
        results.append(rec)
    for _, r in runners:
        if hasattr(r, "close"):
            r.close()
    return {"data": str(data), "images": int(len(y)), "unreadable_skipped": len(skipped),
            "classes": folder.classes, "results": results}


def markdown(res: dict) -> str:
    lines = [f"Accuracy on {res['data']} ({res['images']} images, {res['unreadable_skipped']} unreadable skipped)", "",
             "| model | runtime | top-1 | top-5 | agreement with first | mean KL from first | logit SQNR vs first (dB) |",
             "|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        agr = f"{100 * r['agreement_with_first']:.1f}%" if "agreement_with_first" in r else ""
        kl = f"{r['mean_kl_from_first']:.2e}" if "mean_kl_from_first" in r else ""
        sq = f"{r['logit_sqnr_db_vs_first']:.1f}" if "logit_sqnr_db_vs_first" in r else ""
        lines.append(f"| {Path(r['model']).name} | {r['runtime']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | "
                     f"{agr} | {kl} | {sq} |")
    labels = sorted({r["label"] for r in res["results"] if r.get("label")})
    if labels:
        lines += ["", "GPU rows: " + "; ".join(labels)]
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
    p.add_argument("--delegate", default="xnnpack",
                   help="comma-separated, for .tflite models: xnnpack, none, gpu (one row per delegate)")
    p.add_argument("--gpu-precision", default="fp16",
                   help="gpu rows, comma-separated: fp16 (default), fp32 (enforce_f32)")
    p.add_argument("--fail-under-agreement", type=float, default=None, metavar="X",
                   help="exit 1 when a row's top-1 agreement with the first row is below X (fraction or percent)")
    p.add_argument("--json", type=Path, default=None, help="write the result here (and a .md beside it)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from converters.common import write_json_atomic
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        models = args.model or ["default"]
        delegates = [d.strip() for d in args.delegate.split(",") if d.strip()]
        precisions = [g.strip() for g in args.gpu_precision.split(",") if g.strip()]
        for d in delegates:
            if d not in ("xnnpack", "none", "gpu"):
                raise UsageError(f"unknown delegate '{d}' (xnnpack, none, gpu)")
        for g in precisions:
            if g not in ("fp16", "fp32"):
                raise UsageError(f"unknown GPU precision '{g}' (fp16, fp32)")
        threshold = None
        if args.fail_under_agreement is not None:
            from converters.common import agreement_threshold

            threshold = agreement_threshold(args.fail_under_agreement)
        res = evaluate(models, args.data, args.limit, args.threads, progress=not args.quiet, delegates=delegates,
                       gpu_precisions=precisions)
        print(markdown(res))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.json, res)
            args.json.with_suffix(".md").write_text(markdown(res))
        low = [r for r in res["results"] if threshold is not None and r.get("agreement_with_first", 1.0) < threshold]
        if low:
            print(f"error: {low[0]['model']}: top-1 agreement with {res['results'][0]['model']} "
                  f"{100 * low[0]['agreement_with_first']:.1f}% is below {100 * threshold:.1f}%", file=sys.stderr)
            return 1
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
