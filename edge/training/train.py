"""Train or fine-tune NASNet on an ImageNet-style folder.

    python -m edge.train --data DIR [--weights W] [--epochs N] [--image-size S] [--output OUT]

``DIR`` holds ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``. Class folders named by WordNet id get
their ImageNet labels; any other names are the labels. Every epoch writes ``last.pt`` (full training
state, for ``--resume``), and the best validation top-1 is kept as ``best.pt`` in the toolkit's weights
format, with ``history.json`` and ``curve.png`` (loss and accuracy per epoch); ``final.pt`` is the model at
the end of the schedule (the one to use after ``--quant-aware`` fine-tuning, whose aim is int8 agreement).

``--distill A`` adds a KL term (weight A) towards the starting model's float predictions (a frozen copy);
with ``--quant-aware`` it was tried for the default model v3 and did not raise int8 agreement there
(``docs/quantization.md``). ``--device cuda`` trains on a GPU (augmentation runs there too);
``--time-budget S`` sets the number of epochs (at most ``--epochs``) after the first two so that the
run ends within S seconds.

CPU choices, measured on the 2-core development machine (NASNet-Mobile, batch 32, 128 px, one
train step): channels-last fp32 37 img/s, NCHW fp32 27 img/s, channels-last bfloat16 autocast 28 img/s
(this AMD EPYC has AVX512-BF16 but no AMX, and bf16 autocast adds casts around every depthwise
conv). So the default is channels-last fp32; ``--bf16`` is there for CPUs with AMX.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with train/<class>/ and val/<class>/ images")
    p.add_argument("--output", default="runs/train", help="folder for checkpoints, history and curve")
    p.add_argument("--weights", default=None,
                   help="start from these weights (toolkit .pt, Keras .h5, 'imagenet', 'default'); "
                        "default: from scratch")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--image-size", type=int, default=128, help="training resolution (deploy is 224)")
    p.add_argument("--deploy-size", type=int, default=224, help="input size written into the saved model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD, Nesterov momentum 0.9)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=5e-5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--bn-momentum", type=float, default=0.1,
                   help="PyTorch-convention BN momentum while training (Keras' 0.9997 suits long runs only)")
    p.add_argument("--no-augment", action="store_true", help="no random resized crop / flip")
    p.add_argument("--min-scale", type=float, default=0.25, help="random resized crop: smallest area")
    p.add_argument("--train-fraction", type=float, default=1.0, help="use this fraction of train per epoch")
    p.add_argument("--cache-size", type=int, default=160, help="decode images once at this square size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (pays off with AMX only)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from a last.pt (default: OUTPUT/last.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only N train and N val images (quick runs)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps (tests)")
    p.add_argument("--quant-aware", action="store_true",
                   help="simulate int8 activations while training (edge.training.quant_aware), so that post-training "
                        "int8 conversion keeps the float model's predictions")
    p.add_argument("--distill", type=float, default=0.0, metavar="A",
                   help="weight of a KL term to the starting model's float predictions (frozen teacher)")
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
    p.add_argument("--time-budget", type=float, default=0.0, metavar="S",
                   help="seconds: after epochs 1 and 2, the number of epochs (at most --epochs) is set so the run fits")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def lr_at(step: float, total: float, warmup: float, peak: float, schedule: str) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    t = (step - warmup) / max(1.0, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def evaluate(model, images, targets, image_size: int, pre, batch_size: int = 100) -> tuple[float, float]:
    """(top-1, mean loss) with the deploy preprocessing (center crop, bilinear resize)."""
    import torch
    import torch.nn.functional as F

    from edge.training.data import center_resize, to_float

    model.eval()
    device = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = to_float(torch.from_numpy(images[i:i + batch_size]).to(device), pre.scale, pre.offset)
            x = center_resize(x, image_size, pre.crop_fraction).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(targets[i:i + batch_size]).to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return correct / max(1, len(images)), loss_sum / max(1, len(images))


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(); a.grid(alpha=0.3)
    b.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train (augmented)")
    b.plot(ep, [100 * h["val_top1"] for h in history], "o-", label="val top-1")
    b.set_xlabel("epoch"); b.set_ylabel("accuracy (%)"); b.legend(); b.grid(alpha=0.3)
    fig.suptitle("NASNet-Mobile training: " + ", ".join(sorted({f"{h['image_size']} px" for h in history})))
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from edge.training.data import DataError, ImageFolder, decode_square, random_resized_crop, to_float
    from edge.model.sources import load_torch_model
    from edge.model.weights import save_toolkit_weights, save_torch_atomic

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError("--device cuda: this PyTorch build sees no CUDA GPU; use --device cpu")
        torch.backends.cudnn.benchmark = True
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    for split in ("train", "val"):
        if not (data / split).is_dir():
            raise DataError(f"{data}: needs {split}/<class>/ subfolders (ImageNet layout)")
    train_set, val_set = ImageFolder.scan(data / "train"), ImageFolder.scan(data / "val")
    if train_set.classes != val_set.classes:
        raise DataError(f"{data}: train and val have different class folders")
    if args.limit:
        train_set = train_set.subset(max(1, len(train_set.files) // args.limit))
        val_set = val_set.subset(max(1, len(val_set.files) // args.limit))
    labels = train_set.labels

    resume_path = None
    if args.resume:
        resume_path = out / "last.pt" if args.resume == "auto" else Path(args.resume)
        if not resume_path.is_file():
            raise DataError(f"{resume_path}: no checkpoint to resume from; drop --resume or point it at a last.pt")
    model, src = load_torch_model(args.weights if args.weights else None, num_classes=len(labels),
                                  input_size=args.image_size)
    pre = model.config.preprocessing
    # saved files carry the deploy configuration (224 px for NASNet-Mobile), not the training size
    deploy_config = model.config.with_(input_size=args.deploy_size)
    model = model.to(device, memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = args.bn_momentum
    teacher = None
    if args.distill > 0:
        import copy

        teacher = copy.deepcopy(model).eval().requires_grad_(False)  # before any fake-quant hook

    fake_quant = None
    if args.quant_aware:
        from edge.training.quant_aware import FakeQuantPoints

        fake_quant = FakeQuantPoints(model)
        log.info("quantization-aware: %d simulated int8 activation points", len(fake_quant))

    decay, no_decay = [], []
    for name, p_ in model.named_parameters():
        (no_decay if p_.ndim <= 1 else decay).append(p_)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    start_epoch, history, best = 0, [], -1.0
    if resume_path:
        ck = torch.load(resume_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history, best = ck["epoch"], ck["history"], ck["best"]
        if fake_quant is not None and ck.get("fake_quant"):  # keep the observed int8 ranges, not restart them
            fake_quant.load_state_dict(ck["fake_quant"], device)
        log.info("resumed from %s at epoch %d (best val top-1 %.4f)", resume_path, start_epoch, best)

    t0 = time.time()
    xtr, ytr, skipped_tr = decode_square(train_set, args.cache_size, progress=not args.quiet)
    xva, yva, skipped_va = decode_square(val_set, args.cache_size, progress=not args.quiet)
    log.info("decoded %d train / %d val images in %.1fs (%d unreadable skipped)", len(xtr), len(xva),
             time.time() - t0, skipped_tr + skipped_va)
    n_train = int(len(xtr) * args.train_fraction)
    steps_per_epoch = max(1, n_train // args.batch_size)
    epochs = args.epochs  # --time-budget may lower it after epochs 1 and 2
    total_steps = steps_per_epoch * epochs
    warmup = int(args.warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    if resume_path and ck.get("augment_rng") is not None:  # the same crops as an uninterrupted run
        gen.set_state(ck["augment_rng"])
    command = "python -m edge.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    step = start_epoch * steps_per_epoch

    def run_meta(epochs_done: int) -> dict:
        return {"labels": labels, "classes": train_set.classes, "dataset": str(data), "train_command": command,
                "image_size_trained": args.image_size, "epoch": epochs_done, "history": history,
                "val_top1_at_train_size": history[-1]["val_top1"] if history else None,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "source_weights": src.describe() if args.weights else None}

    for epoch in itertools.count(start_epoch):
        if epoch >= epochs:
            break
        model.train()
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))[:n_train]
        seen, loss_sum, correct, t_ep = 0, 0.0, 0, time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=args.quiet, dynamic_ncols=True)
        for i in bar:
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            x = to_float(torch.from_numpy(xtr[idx.numpy()]).to(device, non_blocking=True), pre.scale, pre.offset)
            if args.no_augment:
                from edge.training.data import center_resize
                x = center_resize(x, args.image_size, pre.crop_fraction)
            else:
                x = random_resized_crop(x, args.image_size, scale=(args.min_scale, 1.0), generator=gen)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(ytr[idx.numpy()]).to(device)
            lr = lr_at(step, total_steps, warmup, args.lr, args.schedule)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
            if teacher is not None:
                t = args.distill_temperature
                with torch.no_grad():
                    target = F.softmax(teacher(x).float() / t, dim=1)
                kl = F.kl_div(F.log_softmax(logits.float() / t, dim=1), target, reduction="batchmean") * t * t
                loss = (1 - args.distill) * loss + args.distill * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.time() - t_ep):.1f}", lr=f"{lr:.4f}")
            if args.max_steps and step >= args.max_steps:
                break
        train_time = time.time() - t_ep
        sim_top1 = None
        if fake_quant is not None:
            sim_top1, _ = evaluate(model, xva, yva, args.image_size, pre)
            fake_quant.enabled = False  # the model we save and judge is the float one
        val_top1, val_loss = evaluate(model, xva, yva, args.image_size, pre)
        if fake_quant is not None:
            fake_quant.enabled = True
        rec = {"epoch": epoch + 1, "image_size": args.image_size, "train_loss": loss_sum / max(1, seen),
               "train_acc": correct / max(1, seen), "val_loss": val_loss, "val_top1": val_top1,
               "lr_end": lr, "train_seconds": round(train_time, 1), "images_per_second": round(seen / train_time, 1),
               "wall_seconds": round(time.time() - t_ep, 1)}
        if sim_top1 is not None:
            rec["val_top1_int8_simulated"] = sim_top1
        history.append(rec)
        log.info("epoch %d: train loss %.3f acc %.3f | val loss %.3f top-1 %.4f | %.0f img/s, %.0fs",
                 epoch + 1, rec["train_loss"], rec["train_acc"], val_loss, val_top1, rec["images_per_second"],
                 rec["wall_seconds"])
        meta = run_meta(epoch + 1)
        model.eval()
        if val_top1 > best:
            best = val_top1
            save_toolkit_weights(out / "best.pt", model, meta, config=deploy_config)
        # a full disk or Ctrl-C leaves the previous last.pt, never a partial one
        save_torch_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                           "history": history, "best": best, "args": vars(args), "augment_rng": gen.get_state(),
                           "fake_quant": fake_quant.state_dict() if fake_quant is not None else None},
                          out / "last.pt")
        tmp_history = out / "history.json.tmp"
        try:
            tmp_history.write_text(json.dumps({"command": command, "history": history, "best_val_top1": best},
                                              indent=1))
            os.replace(tmp_history, out / "history.json")
        finally:
            tmp_history.unlink(missing_ok=True)
        plot_history(history, out / "curve.png")
        if args.max_steps and step >= args.max_steps:
            break
        if args.time_budget and epoch - start_epoch < 2:
            # re-planned after the first two epochs (the first one pays for warm-up: cuDNN autotuning, caches)
            fits = int((args.time_budget - (time.time() - t0)) // max(1e-3, time.time() - t_ep))
            planned = min(args.epochs, epoch + 1 + max(0, fits))
            if planned != epochs:
                epochs = planned
                total_steps = steps_per_epoch * epochs
                log.info("--time-budget %.0fs: schedule set to %d epochs", args.time_budget, epochs)
    model.eval()
    save_toolkit_weights(out / "final.pt", model, {**run_meta(len(history)), "final": True}, config=deploy_config)
    return {"best_val_top1": best, "history": history, "output": str(out)}


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
