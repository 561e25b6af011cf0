"""Per-cell latency: where the time goes inside NASNet, from the converters' ``--cells`` export.

    python -m benchmarks.run --cells artifacts/cells [--threads 1] [--output DIR]

Times every part (stem, each cell, head) with LiteRT + XNNPACK (``.tflite`` parts from
``converters.tflite --cells``) or ExecuTorch + XNNPACK (``.pte`` parts from ``converters.executorch
--cells``) on inputs of its real shape, interleaved
in rounds, and compares the sum of the parts with the whole model. Writes ``cells.json``, ``cells.md``
and ``cells.png`` (a bar per part, normal and reduction cells coloured apart).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import summarize
from edge.artifact.manifest import ops_outside
from edge.errors import UserError


class ProgramPartRunner:
    """An ExecuTorch per-cell program on random inputs of its (NCHW) shapes."""

    def __init__(self, path: Path, threads: int, shapes: list[list[int]]):
        import torch

        from edge.runtime.runners import ExecuTorchRunner

        self.runner = ExecuTorchRunner(path, threads=threads)
        g = torch.Generator().manual_seed(0)
        self.inputs = tuple(torch.rand([1, *s], generator=g) * 2 - 1 for s in shapes)

    def time(self) -> float:
        t = time.perf_counter()
        self.runner.method.execute(self.inputs)
        return (time.perf_counter() - t) * 1000


class PartRunner:
    def __init__(self, path: Path, threads: int):
        from edge.runtime.runners import _litert

        Interpreter, _ = _litert()
        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.it.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in self.it.get_input_details():
            if d["dtype"] == np.float32:
                x = rng.uniform(-1, 1, d["shape"]).astype(np.float32)
            else:
                info = np.iinfo(d["dtype"])
                x = rng.integers(info.min, info.max, d["shape"], endpoint=True).astype(d["dtype"])
            self.it.set_tensor(d["index"], x)

    def time(self) -> float:
        t = time.perf_counter()
        self.it.invoke()
        return (time.perf_counter() - t) * 1000


def benchmark_cells(folder: Path, threads: int = 1, runs: int = 30, rounds: int = 5, warmup: int = 3) -> dict:
    manifest_path = folder / "cells.json"
    if not manifest_path.is_file():
        raise UserError(f"{folder}: no cells.json here; export cells with "
                                "python -m converters.tflite --cells (or converters.executorch --cells)")
    manifest = json.loads(manifest_path.read_text())
    parts = manifest["parts"]

    def make(p: dict):
        path = folder / p["file"]
        return ProgramPartRunner(path, threads, p["inputs"]) if p["file"].endswith(".pte") else PartRunner(path, threads)

    # Every LiteRT interpreter owns a thread pool. With one interpreter per part alive in this process, the idle
    # pools of the other parts took a share of the second core: 8 interleaved pairs at 2 threads (AVX2 VM) measured
    # the sum of parts 3-9% slower that way. At more than one thread each LiteRT part is therefore built for its
    # block of runs and destroyed (its pool joined) before the next part runs, as the whole model is timed alone in
    # its worker. ExecuTorch has one process-wide pool that every program shares, so its parts stay loaded.
    fresh_per_block = threads > 1
    runners = [None if fresh_per_block and not p["file"].endswith(".pte") else make(p) for p in parts]
    for r in runners:
        for _ in range(warmup if r is not None else 0):
            r.time()
    times: list[list[float]] = [[] for _ in parts]
    order = list(range(len(parts)))
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            r = runners[i]
            if r is None:
                r = make(parts[i])
                for _ in range(max(1, warmup)):
                    r.time()
            for _ in range(max(1, runs // rounds)):
                times[i].append(r.time())
            del r
    rows = []
    for p, t in zip(parts, times):
        s = summarize(t)
        kind = "reduction" if "reduction" in p["name"] else ("normal" if "normal" in p["name"] else p["name"])
        rows.append({"name": p["name"], "kind": kind, "macs": p["macs"], "median_ms": s["median"],
                     "latency_ms": s, "gmacs_per_s": p["macs"] / (s["median"] * 1e6),
                     "partitions": p["delegation"]["partitions"],
                     # ops on LiteRT's own kernels / outside the ExecuTorch delegate
                     "ops_outside": ops_outside(p["delegation"])})
    total = sum(r["median_ms"] for r in rows)
    by_kind: dict[str, float] = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["median_ms"]
    return {"folder": str(folder), "runtime": "executorch" if parts[0]["file"].endswith(".pte") else "litert",
            "precision": manifest["precision"], "lowered": manifest["lowered"],
            "threads": threads, "parts": rows, "sum_of_parts_ms": total, "by_kind_ms": by_kind}


def cells_markdown(res: dict, whole_ms: float | None = None) -> str:
    lines = [f"Per-cell latency ({res.get('runtime', 'litert')}, {res['precision']}, "
             f"{'edge form' if res['lowered'] else 'stock'}, "
             f"{res['threads']} thread(s), medians)", "",
             "| part | MMACs | median ms | GMAC/s | partitions | ops outside |", "|---|---|---|---|---|---|"]
    for r in res["parts"]:
        lines.append(f"| {r['name']} | {r['macs'] / 1e6:.1f} | {r['median_ms']:.3f} | {r['gmacs_per_s']:.1f} | "
                     f"{r['partitions']} | {r['ops_outside']} |")
    lines.append("")
    lines.append("Sum of parts: {:.2f} ms ({})".format(res["sum_of_parts_ms"], ", ".join(
        f"{k} {v:.2f} ms" for k, v in res["by_kind_ms"].items())))
    if whole_ms:
        lines.append(f"Whole model: {whole_ms:.2f} ms")
    return "\n".join(lines) + "\n"


def cells_scaling_markdown(results: list[dict]) -> str:
    """Per part, how much faster the largest thread count ran than one thread, for every folder timed at both:
    which parts hold the whole model's thread scaling back (small late-cell tensors, memory-bound copies)."""
    lines = []
    by_folder: dict[str, dict[int, dict]] = {}
    for r in results:
        by_folder.setdefault(r["folder"], {})[r["threads"]] = r
    for folder, runs in by_folder.items():
        if 1 not in runs or len(runs) < 2:
            continue
        n = max(runs)
        one, many = runs[1], runs[n]
        lines += [f"Thread scaling ({one.get('runtime', 'litert')}, {one['precision']}, "
                  f"{'edge form' if one['lowered'] else 'stock'}): {n} threads against 1, medians", "",
                  f"| part | MMACs | 1 thread ms | {n} threads ms | speed-up | share of the {n}-thread sum |",
                  "|---|---|---|---|---|---|"]
        total = many["sum_of_parts_ms"] or 1.0
        for a, b in zip(one["parts"], many["parts"]):
            lines.append(f"| {a['name']} | {a['macs'] / 1e6:.1f} | {a['median_ms']:.3f} | {b['median_ms']:.3f} | "
                         f"{a['median_ms'] / b['median_ms']:.2f}x | {100 * b['median_ms'] / total:.1f}% |")
        lines += ["", f"Sum of parts: {one['sum_of_parts_ms']:.2f} ms -> {many['sum_of_parts_ms']:.2f} ms "
                      f"({one['sum_of_parts_ms'] / many['sum_of_parts_ms']:.2f}x)", ""]
    return "\n".join(lines)


def cells_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"stem": "#888888", "head": "#444444", "normal": "#4C72B0", "reduction": "#DD8452"}
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), squeeze=False)
    for ax, res in zip(axes[0], results):
        names = [r["name"].replace("cell_", "").replace("_reduction", " R").replace("_normal", " N") for r in res["parts"]]
        ax.barh(names, [r["median_ms"] for r in res["parts"]], color=[colors[r["kind"]] for r in res["parts"]])
        ax.invert_yaxis()
        ax.set_xlabel("median latency (ms)")
        ax.set_title(f"{res.get('runtime', 'litert')} {res['precision']} {'edge' if res['lowered'] else 'stock'}: sum {res['sum_of_parts_ms']:.1f} ms",
                     fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
