"""``python -m benchmarks.run``: latency of any mix of artifacts, interleaved, with one result schema.

    python -m benchmarks.run artifacts/*.tflite artifacts/*.pte default --threads 1,2 --output results/bench

Per case (model x runtime x delegate x threads): load time, first inference, then steady-state
median / p90 / p99 / mean / std / min over timed runs, resident-memory growth, file size.
``--delegate gpu``: a ``.tflite`` on LiteRT's GPU accelerator (CompiledModel; ``--gpu-precision fp16,fp32``,
fp16 by default as on phones), timed through the output read (the GPU runs asynchronously), its first run
(shader compilation) kept apart; each row carries the adapter and a label (on a software adapter such as
lavapipe: "functional check, not a GPU timing"). Weights on ``gpu``: PyTorch on CUDA, synchronized. Timed runs
are interleaved in rounds across cases so that machine drift hits all alike; ratios between cases come
with a bootstrap noise interval. ``--output DIR`` writes ``results.json``, ``results.md`` and
``latency.png``. Ctrl-C writes what was finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.stats import ratio_with_noise, summarize
from edge.errors import UsageError

log = logging.getLogger(__name__)

SCHEMA = "nasnet-edge-benchmark/1"


@dataclass
class Case:
    model: str
    runtime: str
    delegate: str
    threads: int
    runner: object = None
    load_ms: float = 0.0
    first_ms: float = 0.0
    rss_mb: float = 0.0
    times: list[float] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    meta: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    gpu_precision: str | None = None  # LiteRT GPU rows: fp16 (the accelerator's default) or fp32 (enforce_f32)

    @property
    def delegate_label(self) -> str:
        return f"{self.delegate}/{self.gpu_precision}" if self.gpu_precision else self.delegate

    @property
    def label(self) -> str:
        return f"{Path(self.model).name} [{self.runtime}/{self.delegate_label}/{self.threads}t]"


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (all cases loaded until now share one process)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runtime_of(model: str, runtime: str | None = None) -> str:
    if runtime:
        return runtime
    if model.endswith(".tflite"):
        return "litert"
    if model.endswith(".pte"):
        return "executorch"
    return "torch"


def environment() -> dict:
    from converters.common import tool_versions

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine(),
            "versions": tool_versions("ai-edge-litert", "executorch", "torch", "tensorflow-cpu", "numpy",
                                      "nasnet-edge")}


def unavailable_reason(runtime: str, delegate: str) -> str | None:
    if delegate == "gpu":
        if runtime == "torch":
            import torch

            return None if torch.cuda.is_available() else "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
        if runtime == "litert":
            return None  # probed when the model is compiled: no adapter -> 'unavailable' with the reason
        if runtime == "executorch":
            return ("ExecuTorch's pip runtime has no GPU backend (VulkanBackend is not registered in this "
                    "ExecuTorch runtime)")
        return f"{runtime} has no GPU delegate in this harness"
    if delegate == "none" and runtime not in ("litert",):
        return f"'none' (reference kernels) applies to LiteRT only; {runtime} runs its own kernels"
    return None


def make_runner(case: Case):
    from edge.runtime import open_model

    if case.runtime == "torch":
        import torch

        from edge.runtime import TorchRunner

        torch.set_num_threads(case.threads)
        # on 'gpu' the model, every input and the read-back live on CUDA, synchronized (TorchRunner.predict)
        return TorchRunner(case.model, threads=case.threads, device="cuda" if case.delegate == "gpu" else "cpu")
    return open_model(case.model, threads=case.threads, delegate=case.delegate,
                      gpu_precision=case.gpu_precision or "fp16")


def time_once(runner, x) -> float:
    t = time.perf_counter()
    runner.predict(x)
    return (time.perf_counter() - t) * 1000


def run_cases(cases: list[Case], image, warmup: int, runs: int, rounds: int, min_time: float,
              progress: bool = True) -> None:
    """Load every case, then time them interleaved. Each case gets ``image`` in its own preprocessing."""
    from tqdm import tqdm

    from edge.preprocessing import preprocess

    live = []
    for c in cases:
        reason = unavailable_reason(c.runtime, c.delegate)
        if reason:
            c.status, c.reason = "unavailable", reason
            continue
        before = rss_mb()
        t = time.perf_counter()
        try:
            c.runner = make_runner(c)
        except ValueError as e:
            from edge.gpu import GpuUnavailable

            c.status, c.reason = ("unavailable" if isinstance(e, GpuUnavailable) else "error"), str(e)
            continue
        c.load_ms = (time.perf_counter() - t) * 1000
        c.x = preprocess(image, c.runner.preprocessing)[None]
        c.first_ms = time_once(c.runner, c.x)  # on a GPU: shader compilation included, kept apart
        if hasattr(c.runner, "adapter"):  # LiteRT GPU
            d = c.runner.describe()
            c.meta.update({"label": d["label"], "adapter": d["adapter"], "fully_accelerated": d["fully_accelerated"],
                           "gpu_not_supported": d["not_supported"]})
        c.rss_mb = rss_mb() - before
        c.meta["process_peak_rss_mb"] = peak_rss_mb()
        for _ in range(warmup):
            time_once(c.runner, c.x)
        live.append(c)
    per_round = max(1, runs // rounds)
    rng = random.Random(0)
    total = per_round * rounds * len(live)
    bar = tqdm(total=total, desc="timing", unit="run", disable=not progress)
    t0 = time.perf_counter()
    r = 0
    try:
        while r < rounds or (min_time and time.perf_counter() - t0 < min_time):
            order = live[:]
            rng.shuffle(order)  # interleave: no case always runs first after a pause
            for c in order:
                if c.runtime == "torch":
                    import torch

                    torch.set_num_threads(c.threads)
                if c.runtime == "executorch":
                    from edge.quiet import quiet_executorch_import

                    with quiet_executorch_import():
                        from executorch.extension.pybindings import portable_lib
                    if portable_lib._threadpool_get_thread_count() != c.threads:
                        portable_lib._unsafe_reset_threadpool(c.threads)
                for _ in range(per_round):
                    c.times.append(time_once(c.runner, c.x))
                    bar.update(1)
            r += 1
    except KeyboardInterrupt:
        log.warning("interrupted: writing the runs finished so far")
    finally:
        bar.close()


def case_record(c: Case) -> dict:
    p = Path(c.model)
    rec = {"model": str(c.model), "name": p.name, "runtime": c.runtime, "delegate": c.delegate,
           "threads": c.threads, "status": c.status}
    if c.gpu_precision:
        rec["gpu_precision"] = c.gpu_precision
    for k in ("label", "adapter", "fully_accelerated", "gpu_not_supported"):
        if k in c.meta:
            rec[k] = c.meta[k]
    if p.is_file():
        rec["size_bytes"] = p.stat().st_size
        mp = p.with_name(p.name + ".json")
        if mp.is_file():
            m = json.loads(mp.read_text())
            rec.update({k: m.get(k) for k in ("precision", "lowered", "format")})
            d = m.get("delegation") or {}
            rec["partitions"] = d.get("partitions")
            rec["fallback_ops"] = d.get("fallback_ops", d.get("outside_ops"))
    if "fully_accelerated" in c.meta:  # a GPU row: the manifest's partitions are XNNPACK's, not the GPU's
        rec["partitions"] = None
        rec["fallback_ops"] = 0 if c.meta["fully_accelerated"] else "some (not fully accelerated)"
    if c.status != "ok":
        rec["reason"] = c.reason
        return rec
    rec.update({"load_ms": c.load_ms, "first_ms": c.first_ms, "rss_growth_mb": round(c.rss_mb, 1),
                "process_peak_rss_mb": round(c.meta.get("process_peak_rss_mb", 0.0), 1),
                "latency_ms": summarize(c.times) if c.times else None, "times_ms": [round(t, 4) for t in c.times]})
    return rec


def write_outputs(result: dict, out: Path) -> None:
    from converters.common import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    (out / "results.md").write_text(markdown(result))
    plot(result, out / "latency.png")


def delegate_label(r: dict) -> str:
    return f"{r['delegate']}/{r['gpu_precision']}" if r.get("gpu_precision") else r["delegate"]


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# Benchmark: {result['name']}", "",
             f"{env['cpu']}, {env['cores']} cores, {env['os']}; {result['created']}",
             f"Command: `{result['command']}`", "",
             "| device | model | runtime | delegate | threads | median ms | p90 | p99 | min | load ms | first ms | partitions | fallback ops | size MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        size = f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else ""
        dev = r.get("device", "local")
        if r["status"] != "ok":
            lines.append(f"| {dev} | {r['name']} | {r['runtime']} | {delegate_label(r)} | {r['threads']} | "
                         f"{r['status']}: "
                         f"{r.get('reason', '')} | | | | | | | | {size} |")
            continue
        l = r["latency_ms"]

        def f(k):
            return f"{l[k]:.2f}" if k in l else ""
        lines.append(f"| {dev} | {r['name']} | {r['runtime']} | {delegate_label(r)} | {r['threads']} | {f('median')} | "
                     f"{f('p90')} | {f('p99')} | {f('min')} | {r.get('load_ms', 0):.0f} | {r.get('first_ms', 0):.0f} | "
                     f"{r.get('partitions') if r.get('partitions') is not None else ''} | "
                     f"{r.get('fallback_ops') if r.get('fallback_ops') is not None else ''} | {size} |")
    gpu_labels = sorted({r["label"] for r in result["results"] if r.get("label")})
    if gpu_labels:
        lines += ["", "GPU rows: " + "; ".join(gpu_labels) + ". First ms: the first run, shader compilation "
                  "included; medians are steady-state runs timed through the output read."]
    if result.get("ratios"):
        lines += ["", "Ratios (median latency, bootstrap 95% interval):", "",
                  "| case | baseline | ratio | 95% interval |", "|---|---|---|---|"]
        for q in result["ratios"]:
            lines.append(f"| {q['case']} | {q['baseline']} | {q['ratio']:.3f} | {q['ci95'][0]:.3f} - {q['ci95'][1]:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["results"] if r["status"] == "ok" and r.get("times_ms")]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(ok) + 1.5))
    labels = [f"{r['name']} {r['runtime']}/{delegate_label(r)}/{r['threads']}t @{r.get('device', 'local')}" for r in ok]
    # 'orientation' replaced 'vert' in Matplotlib 3.10 (vert warns from 3.11)
    horizontal = {"orientation": "horizontal"} if _mpl_version() >= (3, 10) else {"vert": False}
    ax.boxplot([r["times_ms"] for r in ok], showfliers=False, **horizontal)
    ax.set_yticks(range(1, len(ok) + 1), labels, fontsize=8)
    ax.set_xlabel("latency per image (ms)")
    ax.set_title(f"{result['name']}: {result['environment']['cpu']}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratios(records: list[dict], baseline: str | None) -> list[dict]:
    ok = [r for r in records if r["status"] == "ok" and r.get("times_ms")]
    if not ok:
        return []
    out = []
    by_threads: dict[tuple, list[dict]] = {}
    for r in ok:
        by_threads.setdefault((r.get("device", "local"), r["threads"]), []).append(r)
    for (_, threads), group in sorted(by_threads.items()):
        base = next((r for r in group if baseline and baseline in r["name"]), group[0])
        for r in group:
            if r is base:
                continue
            q = ratio_with_noise(r["times_ms"], base["times_ms"])
            out.append({"case": f"{r['name']} {r['runtime']}/{delegate_label(r)}/{threads}t",
                        "baseline": f"{base['name']} {base['runtime']}/{delegate_label(base)}/{threads}t", **q})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=".tflite, .pte, .pt/.h5 weights, or 'default'")
    p.add_argument("--cells", type=Path, action="append", default=[],
                   help="a converter's cells/ folder: per-cell latency table and chart (repeatable)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    p.add_argument("--delegate", default="xnnpack", help="comma-separated: xnnpack, none, gpu")
    p.add_argument("--gpu-precision", default="fp16",
                   help="LiteRT GPU rows, comma-separated: fp16 (the accelerator's default, as on phones), "
                        "fp32 (enforce_f32)")
    p.add_argument("--runtime", default=None, choices=["litert", "executorch", "torch"],
                   help="force a runtime (default: from the file type)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=50, help="timed runs per case")
    p.add_argument("--rounds", type=int, default=5, help="interleaving rounds the runs are split into")
    p.add_argument("--min-time", type=float, default=0.0, help="keep running rounds for at least S seconds")
    p.add_argument("--baseline", default=None, help="name (substring) of the case ratios are relative to")
    p.add_argument("--image", default=None, help="input image (default: a shipped sample)")
    p.add_argument("--name", default="local", help="name of this benchmark in the results")
    p.add_argument("--output", type=Path, default=None, help="folder for results.json, results.md, latency.png")
    p.add_argument("--device", action="append", default=[],
                   help="where to run: local (default), ssh://user@host[:port], adb or adb:SERIAL (repeatable; "
                        "all land in one result file)")
    p.add_argument("--ssh-key", default=None, help="private key for ssh:// devices")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for ssh:// devices")
    p.add_argument("--remote-python", default="python3", help="Python on the board (ssh://)")
    p.add_argument("--litert-benchmark", default=None, help="Android LiteRT benchmark_model binary to push (adb)")
    p.add_argument("--executorch-runner", default=None, help="Android ExecuTorch executor_runner binary (adb)")
    p.add_argument("--adb", default="adb", help="adb executable")
    p.add_argument("--quiet", action="store_true")
    return p


def benchmark(args: argparse.Namespace) -> dict:
    from converters.common import command_line, now_iso
    from edge.preprocessing import list_images
    from edge.verify import sample_images_dir

    threads = [int(t) for t in str(args.threads).split(",") if t]
    delegates = [d.strip() for d in str(args.delegate).split(",") if d.strip()]
    gpu_precisions = [g.strip() for g in str(getattr(args, "gpu_precision", "fp16")).split(",") if g.strip()]
    for g in gpu_precisions:
        if g not in ("fp16", "fp32"):
            raise UsageError(f"unknown GPU precision '{g}' (fp16, fp32)")
    for d in delegates:
        if d not in ("xnnpack", "none", "gpu"):
            raise UsageError(f"unknown delegate '{d}' (xnnpack, none, gpu)")
    for m in args.models:
        if m not in ("default",) and not m.endswith((".tflite", ".pte", ".pt", ".pth", ".h5")):
            raise UsageError(f"{m}: unsupported model type (expected .tflite, .pte, .pt, .h5 or 'default')")
        if m != "default" and not Path(m).is_file():
            raise UsageError(f"{m}: no such model file")
    cases = []
    for m in args.models:
        for d in delegates:
            for t in threads:
                rt = runtime_of(m, args.runtime)
                if d == "none" and rt != "litert":
                    continue
                if d == "gpu" and rt == "litert":
                    cases += [Case(m, rt, d, t, gpu_precision=gp) for gp in gpu_precisions]
                    continue
                cases.append(Case(m, rt, d, t))
    image = args.image or list_images(sample_images_dir())[0]
    devices = args.device or ["local"]
    for d in devices:
        if not (d == "local" or d.startswith("ssh://") or d == "adb" or d.startswith("adb:")):
            raise UsageError(f"unknown device '{d}': use local, ssh://user@host[:port] or adb[:SERIAL]")
    records: list[dict] = []
    device_envs: dict[str, dict] = {}
    for d in devices:  # one after the other, into one result file
        if d == "local":
            run_cases(cases, image, args.warmup, args.runs, args.rounds, args.min_time, progress=not args.quiet)
            recs = [case_record(c) for c in cases]
            device_envs[d] = environment()
        elif d.startswith("ssh://"):
            from benchmarks.devices import run_ssh

            out = run_ssh(d, args.models, threads, delegates, args.runs, args.rounds, args.warmup, args.ssh_key,
                          args.remote_python, args.known_hosts)
            recs, device_envs[d] = out["results"], out["environment"]
        else:
            from benchmarks.devices import run_adb

            out = run_adb(d, args.models, threads, delegates, args.runs, args.warmup, args.litert_benchmark,
                          args.executorch_runner, args.adb)
            recs, device_envs[d] = out["results"], out["environment"]
        for r in recs:
            r["device"] = d
        records += recs
    result = {"schema": SCHEMA, "name": args.name, "created": now_iso(), "command": command_line(),
              "environment": device_envs.get("local") or environment(), "devices": device_envs,
              "settings": {"warmup": args.warmup, "runs": args.runs, "rounds": args.rounds,
                           "input": str(Path(image).name)},
              "results": records, "ratios": ratios(records, args.baseline)}
    return result


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        if not args.models and not args.cells:
            raise UsageError("give models to time, or --cells DIR")
        if args.cells:
            from benchmarks.cells import benchmark_cells, cells_markdown, cells_plot

            results = [benchmark_cells(d, int(str(args.threads).split(",")[0]), args.runs, args.rounds)
                       for d in args.cells]
            for r in results:
                print(cells_markdown(r))
            if args.output:
                from converters.common import write_json_atomic

                args.output.mkdir(parents=True, exist_ok=True)
                write_json_atomic(args.output / "cells.json", {"results": results})
                (args.output / "cells.md").write_text("\n".join(cells_markdown(r) for r in results))
                cells_plot(results, args.output / "cells.png")
            if not args.models:
                return 0
        result = benchmark(args)
        print(markdown(result))
        if args.output:
            write_outputs(result, args.output)
            print(f"wrote {args.output}/results.json, results.md, latency.png")
        measured = [r for r in result["results"] if r.get("status") == "ok"]
        if not measured:  # a run that timed nothing must not look like a success to a script or CI
            failed = [r for r in result["results"] if r.get("status") != "ok"]
            first = failed[0].get("reason", "") if failed else ""
            print(f"error: nothing was measured: all {len(failed)} case(s) failed or are unavailable"
                  + (f" (first: {' '.join(str(first).split())[:200]})" if first else ""), file=sys.stderr)
            return 1
        return 0

    return run_cli(go)


def _mpl_version() -> tuple[int, int]:
    import matplotlib

    return tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())


if __name__ == "__main__":
    sys.exit(main())
