"""``python -m benchmarks.run``: latency of any mix of artifacts, interleaved, with one result schema.

    python -m benchmarks.run artifacts/*.tflite artifacts/*.pte default --threads 1,2 --output results/bench

Per case (model x runtime x delegate x threads): load time, first inference, then steady-state
median / p90 / p99 / mean / std / min over timed runs, resident-memory growth, file size: one
:class:`benchmarks.record.Record` per case and device, holding every timed run.
``--delegate gpu``: a ``.tflite`` on LiteRT's GPU accelerator (CompiledModel; ``--gpu-precision fp16,fp32``,
fp16 by default as on phones), timed through the output read (the GPU runs asynchronously), its first run
(shader compilation) kept apart; each row carries the adapter and a label (on a software adapter such as
lavapipe: "functional check, not a GPU timing"). Weights on ``gpu``: PyTorch on CUDA, synchronized. Timed runs
are interleaved in rounds across cases so that machine drift hits all alike; ratios between cases come
with a bootstrap noise interval. ``--output DIR`` writes ``results.json``, ``results.md`` and
``latency.png``. Ctrl-C writes what was finished.

Each local case runs in its own worker process (``benchmarks/case_worker.py``), kept alive across the rounds
and told by this process when to run, one at a time: a case whose runtime crashes or hangs is recorded as an
``error`` with the signal or the timeout (``--case-timeout``) and the others are still measured; its memory
figures are its own. Every result carries the CPU's ISA features (``benchmarks/isa.py``) and a
recommendation: the fastest measured artifact of each network whose top-1 loss against the fp32 reference
(from its manifest's validation report) is within ``--accuracy-budget`` points. docs/benchmarking.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.record import Record, Status, as_records, manifest_accuracy, records_of  # noqa: F401
from benchmarks.stats import ratio_with_noise, shared_drift
from converters.common import Precision
from edge.errors import UsageError
from edge.runtime.runners import Delegate

log = logging.getLogger(__name__)

SCHEMA = "nasnet-edge-benchmark/1"
# A worker that does not answer one request (start-up and load with the first run, or one round of timed runs)
# within this many seconds is killed and its case recorded as timed out. The slowest honest request seen:
# LiteRT's GPU accelerator compiling NASNet-Mobile's shaders on lavapipe, about 85 s (edge/runtime/gpu.py).
DEFAULT_CASE_TIMEOUT_S = 600.0
DEFAULT_ACCURACY_BUDGET = 1.0  # top-1 points
# A lower precision counts as faster only when it takes at most this fraction of its fp32 counterpart's median:
# smaller gains are within the drift of a shared machine and do not pay for the accuracy it costs.
SPEED_WORTH = 0.90


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
    xnnpack_library: str | None = None  # ExecuTorch rows: another build of its XNNPACK backend (edge/runtime/native.py)
    xnnpack_tag: str = ""  # that build's name in labels: its folder (build/executorch_xnnpack/<compiler>/)

    @property
    def delegate_label(self) -> str:
        label = f"{self.delegate}/{self.gpu_precision}" if self.gpu_precision else self.delegate
        return f"{label}/own-xnnpack:{self.xnnpack_tag}" if self.xnnpack_library else label

    @property
    def label(self) -> str:
        return f"{Path(self.model).name} [{self.runtime}/{self.delegate_label}/{self.threads}t]"


# what a case's worker does (and what this module did in-process before the workers): kept importable here
from benchmarks.case_worker import peak_rss_mb, rss_mb, time_once  # noqa: E402,F401
from edge.runtime.native import ENV_EXECUTORCH_XNNPACK  # noqa: E402


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
    from benchmarks.isa import cpu_features
    from benchmarks.topology import core_to_core

    from edge.runtime.native import xnnpack_builds

    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine(), "isa": cpu_features(), "xnnpack_builds": xnnpack_builds(),
            "core_to_core": core_to_core(),
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
    """The case's runner in this process (what its worker does; kept for callers outside the harness)."""
    from benchmarks.case_worker import make_runner as make

    return make(case.runtime, case.model, case.threads, case.delegate, case.gpu_precision)


def _worker_spec(c: Case, image: str, warmup: int) -> dict:
    model = c.model if c.model == "default" else str(Path(c.model).resolve())
    return {"label": c.label, "model": model, "runtime": c.runtime, "delegate": c.delegate, "threads": c.threads,
            "gpu_precision": c.gpu_precision, "image": image, "warmup": warmup}


def _artifact_key(c: Case) -> tuple:
    """What a case runs, whatever its thread count and its build of ExecuTorch's XNNPACK."""
    return c.model, c.runtime, c.delegate, c.gpu_precision


def _worker_env(c: Case) -> dict | None:
    """The environment a case's worker adds: the build of ExecuTorch's XNNPACK it maps, where it has one."""
    return {ENV_EXECUTORCH_XNNPACK: c.xnnpack_library} if c.xnnpack_library else None


def _same_case_but_threads(a: Case, b: Case) -> bool:
    return (_artifact_key(a), a.xnnpack_library) == (_artifact_key(b), b.xnnpack_library)


def check_builds_against_wheel(live: list[Case], workers: dict, images: int, timeout: float) -> None:
    """Each case timed with another build of ExecuTorch's XNNPACK (``--executorch-xnnpack``) against the same case
    on the wheel's build: their outputs on the first ``images`` shipped validation photos, compared in the case's
    ``outputs_vs_wheel`` (bit-identical, max difference, top-1 agreement). A build that is faster but computes
    something else is no fix; a compiler may legally change fp32 rounding (contraction into FMAs), not int8."""
    from benchmarks.case_worker import WorkerFailed

    for c in [c for c in live if c.xnnpack_library]:
        wheel = next((o for o in live if not o.xnnpack_library and o.threads == c.threads and
                      _artifact_key(o) == _artifact_key(c)), None)
        if wheel is None:
            continue
        try:
            got = [workers[id(x)].call(("outputs", images), timeout, "computing outputs to compare builds")
                   for x in (wheel, c)]
        except WorkerFailed as e:
            c.meta["outputs_vs_wheel"] = {"error": e.reason}
            continue
        if any(g[0] != "ok" for g in got):
            c.meta["outputs_vs_wheel"] = {"error": next(g[1] for g in got if g[0] != "ok")}
            continue
        ref, out = (np.asarray(g[1], np.float64) for g in got)
        d = np.abs(out - ref) if out.shape == ref.shape else None
        c.meta["outputs_vs_wheel"] = {
            "images": int(len(ref)), "bit_identical": bool(d is not None and np.array_equal(out, ref)),
            "max_abs_diff": float(d.max()) if d is not None and d.size else None,
            "top1_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean()) if d is not None else 0.0}


def run_cases(cases: list[Case], image, warmup: int, runs: int, rounds: int, min_time: float,
              progress: bool = True, case_timeout: float = DEFAULT_CASE_TIMEOUT_S, ceiling: bool = False,
              verify_images: int = 50) -> None:
    """Load every case in its own worker process, then time them interleaved (module docstring).

    Each round asks the live workers, in a shuffled order and one at a time, for ``runs // rounds`` timed
    runs. A worker that dies (a signal, an exit) or does not answer within ``case_timeout`` seconds makes
    its case an ``error`` with that reason; the others go on. Ctrl-C keeps what was finished.

    ``ceiling`` (``--scaling-ceiling``): a 1-thread case with a sibling at N > 1 threads also gets N-1 more
    workers of itself, and in each round, at its own place in the shuffled order, all N copies run at once
    (``concurrent_times_ms``). N independent inferences share nothing but the machine (cores, caches, memory
    bandwidth), so N x (1-thread time) / (time with N at once) is the most N threads can give this model on
    this machine: the ceiling the N-thread speed-up is read against (:func:`thread_scaling`).

    Why not one process for all cases, as before: ExecuTorch sizes one thread pool per process and
    ``_unsafe_reset_threadpool`` frees the pool that every method loaded before still runs on, so an
    ExecuTorch case at 1 thread and one at 2 threads in one process are a use-after-free (the SIGSEGV of
    issue 20; root cause and evidence in benchmarks/case_worker.py and docs/benchmarking.md). A worker holds
    one case, sizes its pool once before loading its only method, and never resets it.
    """
    from tqdm import tqdm

    from benchmarks.case_worker import CaseWorker, WorkerFailed

    image = str(Path(image).resolve())
    workers: dict[int, CaseWorker] = {}
    live: list[Case] = []
    loaded: set[int] = set()
    bar = None

    copies: dict[int, list[CaseWorker]] = {}  # id(1-thread case) -> its extra workers (ceiling)

    def drop_copies(c: Case, why: str = "") -> None:
        if why:
            log.warning("%s: no scaling ceiling (%s)", c.label, why)
            c.meta.pop("concurrent_times_ms", None)
            c.meta.pop("concurrent_copies", None)
        for w in copies.pop(id(c), []):
            w.close()

    def drop(c: Case, status: str, reason: str, log_tail: str = "", tb: str | None = None) -> None:
        if log_tail or tb:  # a crash, a hang or a bug, not a bad file: say so now, not only in the table
            log.warning("%s: %s", c.label, reason)
        c.status, c.reason = status, reason
        if log_tail:
            c.meta["worker_log"] = log_tail
        if tb:
            c.meta["traceback"] = tb
        if c.times:
            c.meta["completed_runs"] = len(c.times)
        if c in live:
            live.remove(c)
        drop_copies(c)
        w = workers.pop(id(c), None)
        if w is not None:
            w.close()

    try:
        for c in cases:
            reason = unavailable_reason(c.runtime, c.delegate)
            if reason:
                c.status, c.reason = "unavailable", reason
                continue
            try:
                w = CaseWorker(c.label, env=_worker_env(c))
                workers[id(c)] = w
                reply = w.call(("load", _worker_spec(c, image, warmup)), case_timeout, "while loading the model")
            except WorkerFailed as e:
                drop(c, "error", e.reason, e.log)
                continue
            if reply[0] != "ok":  # a bad file, no GPU adapter, a runtime this Python lacks: as before, its reason
                drop(c, reply[0], reply[1], tb=reply[2])
                continue
            info = reply[1]
            c.load_ms, c.first_ms, c.rss_mb = info["load_ms"], info["first_ms"], info["rss_growth_mb"]
            c.meta.update(info["meta"])
            c.meta.update({k: info[k] for k in ("process_peak_rss_mb", "worker_base_rss_mb", "worker_imports")})
            c.meta["worker_pid"] = info["pid"]
            loaded.add(id(c))
            live.append(c)
        for c in (live if ceiling else []):
            n = max((o.threads for o in live if o.threads > 1 and _same_case_but_threads(o, c)), default=0)
            if c.threads != 1 or n < 2 or c.delegate == "gpu":
                continue
            copies[id(c)] = []
            for k in range(2, n + 1):
                try:
                    w = CaseWorker(f"{c.label} (copy {k} of {n})", env=_worker_env(c))
                    copies[id(c)].append(w)
                    reply = w.call(("load", _worker_spec(c, image, warmup)), case_timeout, "loading a copy")
                except WorkerFailed as e:
                    reply = ("error", e.reason)
                if reply[0] != "ok":
                    drop_copies(c, f"copy {k} of {n}: {reply[1]}")
                    break
            else:
                c.meta.update(concurrent_copies=n, concurrent_times_ms=[])
        per_round = max(1, runs // rounds)
        rng = random.Random(0)
        per_round_runs = per_round * (len(live) + sum(1 + len(v) for v in copies.values()))
        bar = tqdm(total=per_round_runs * rounds, desc="timing", unit="run", disable=not progress)
        t0 = time.perf_counter()
        r = 0
        while live and (r < rounds or (min_time and time.perf_counter() - t0 < min_time)):
            order = [(c, False) for c in live] + [(c, True) for c in live if id(c) in copies]
            rng.shuffle(order)  # interleave: no case always runs first after a pause
            for c, together in order:
                if c not in live or (together and id(c) not in copies):
                    continue  # dropped earlier in this round
                if together:  # all N copies at once: send to each, then collect each
                    what = f"running {len(copies[id(c)]) + 1} copies at once (round {r + 1})"
                    group = [workers[id(c)], *copies[id(c)]]
                    try:
                        for w in group:
                            w.send(("run", per_round), what)
                        replies = [w.receive(case_timeout, what) for w in group]
                    except WorkerFailed as e:
                        drop(c, "error", e.reason, e.log)
                        continue
                    bad = next((x for x in replies if x[0] != "ok"), None)
                    if bad is not None:
                        drop(c, "error", bad[1], tb=bad[2])
                        continue
                    for x in replies:
                        c.meta["concurrent_times_ms"].extend(x[1])
                    bar.update(per_round * len(group))
                    continue
                try:
                    reply = workers[id(c)].call(("run", per_round), case_timeout, f"during timed runs (round {r + 1})")
                except WorkerFailed as e:
                    drop(c, "error", e.reason, e.log)
                    continue
                if reply[0] != "ok":
                    drop(c, "error", reply[1], tb=reply[2])
                    continue
                c.times.extend(reply[1])
                bar.update(per_round)
            r += 1
        check_builds_against_wheel(live, workers, verify_images, case_timeout)
        for c in live:  # peak memory over the timed runs too: the worker's own high-water mark
            try:
                reply = workers[id(c)].call(("memory",), 30, "reading its memory")
                if reply[0] == "ok":
                    c.meta["process_peak_rss_mb"] = reply[1]["process_peak_rss_mb"]
            except WorkerFailed:
                pass  # its times are complete; the peak measured after loading stands
    except KeyboardInterrupt:
        log.warning("interrupted: writing the runs finished so far")
    finally:
        if bar is not None:
            bar.close()
        for c in cases:
            drop_copies(c)
        for w in workers.values():
            w.close()
    for c in cases:
        if c.status == "ok" and id(c) not in loaded:
            c.status, c.reason = "error", "interrupted before it was loaded"
        elif c.status == "ok" and not c.times:
            c.status, c.reason = "error", "interrupted before any timed run"


def case_record(c: Case) -> Record:
    """A local case as a :class:`~benchmarks.record.Record`: what its worker measured, with its artifact's facts."""
    m = c.meta
    fields: dict = {"gpu_precision": c.gpu_precision, "status": c.status,
                    **{k: m[k] for k in ("label", "adapter", "fully_accelerated", "executorch_pool_threads",
                                         "xnnpack_build", "concurrent_copies", "concurrent_times_ms",
                                         "outputs_vs_wheel")
                       if k in m}}
    if "gpu_not_supported" in m:
        fields["gpu_not_supported"] = m["gpu_not_supported"]
    if "fully_accelerated" in m:  # a GPU row: the manifest's partitions are XNNPACK's, not the GPU's
        fields["partitions"] = None
        fields["ops_outside"] = 0 if m["fully_accelerated"] else "some (not fully accelerated)"
    if c.status != "ok":
        fields.update(reason=c.reason, **{k: m[k] for k in ("completed_runs", "worker_log", "traceback") if k in m})
        return Record.for_artifact(c.model, c.runtime, c.delegate, c.threads, **fields)
    peak, base = m.get("process_peak_rss_mb", 0.0), m.get("worker_base_rss_mb")
    fields.update(load_ms=c.load_ms, first_ms=c.first_ms, times_ms=c.times, rss_growth_mb=round(c.rss_mb, 1),
                  process_peak_rss_mb=round(peak, 1))
    if base is not None:  # the worker holds this case only: its peak is this model's, runtime and Python included
        fields.update(memory_scope="worker process of this case", worker_base_rss_mb=round(base, 1),
                      peak_growth_mb=round(max(0.0, peak - base), 1), worker_imports=m.get("worker_imports", []),
                      worker_pid=m.get("worker_pid"))
    return Record.for_artifact(c.model, c.runtime, c.delegate, c.threads, **fields)


def write_outputs(result: dict, out: Path) -> None:
    from converters.common import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", markdown(result))
    plot(result, out / "latency.png")


def delegate_label(r: Record | dict) -> str:
    return as_records([r])[0].delegate_label


def _cell(x: float | None, fmt: str = "{:.2f}") -> str:
    return "" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    env = result["environment"]
    records = records_of(result)
    lines = [f"# Benchmark: {result['name']}", "",
             f"{env['cpu']}, {env['cores']} cores, {env['os']}; {result['created']}",
             *isa_lines(result),
             f"Command: `{result['command']}`", "",
             "| device | model | runtime | delegate | threads | median ms | p90 | p99 | min | load ms | first ms | partitions | ops outside | size MB | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        size = _cell(r.size_bytes / 1e6 if r.size_bytes else None, "{:.1f}")
        head = f"| {r.device} | {r.name} | {r.runtime.value} | {r.delegate_label} | {r.threads} |"
        if r.status is not Status.OK:
            lines.append(f"{head} {r.status.value}: {' '.join(r.reason.split())} | | | | | | | | {size} | |")
            continue
        lat = r.latency_ms or {}
        if lat:
            timing = f" {lat['median']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {lat['min']:.2f} |"
        else:  # a device tool's summary: its mean is not a median, so it does not go in that column
            s = r.summary_ms or {}
            told = ", ".join(f"{k} {s[k]:.2f}" for k in ("median", "mean") if isinstance(s.get(k), (int, float)))
            timing = f" no per-run times ({told}) | | | {_cell(s.get('min'))} |"
        lines.append(f"{head}{timing} {_cell(r.load_ms, '{:.0f}')} | {_cell(r.first_ms, '{:.0f}')} | "
                     f"{'' if r.partitions is None else r.partitions} | "
                     f"{'' if r.ops_outside is None else r.ops_outside} | {size} | {_cell(r.peak_mb, '{:.0f}')} |")
    gpu_labels = sorted({r.label for r in records if r.label})
    if gpu_labels:
        lines += ["", "GPU rows: " + "; ".join(gpu_labels) + ". First ms: the first run, shader compilation "
                  "included; medians are steady-state runs timed through the output read."]
    methods = sorted({f"`{r.device}` {r.runtime.value}: {r.timing_method}" for r in records if r.timing_method})
    if methods:
        lines += ["", "How the device tools timed each run: " + "; ".join(methods) + "."]
    if result.get("ratios"):
        lines += ["", "Ratios (median latency, bootstrap 95% interval):", "",
                  "| case | baseline | ratio | 95% interval |", "|---|---|---|---|"]
        lines += [_ratio_row(q) for q in result["ratios"]]
    if result.get("ratios_skipped"):
        lines += ["", "Not in the ratios:", ""]
        lines += [f"- {q['case']} (`{q['device']}`): {q['reason']}" for q in result["ratios_skipped"]]
    lines += runtime_pair_lines(result)
    lines += build_check_lines(records)
    lines += scaling_lines(result)
    lines += drift_lines(result)
    rec = result.get("recommendation") or {}
    if rec.get("items"):
        lines += ["", f"Recommendation (accuracy budget {rec['accuracy_budget_points']:.2f} top-1 points; "
                  f"{rec['basis']}):", ""]
        lines += [f"- {item['line']}" for item in rec["items"]]
    if any(r.memory_scope == "worker process of this case" for r in records):
        lines += ["", "Peak MB: the case's own worker process (Python, its runtime and this one model), VmHWM."]
    from benchmarks.devices import verification_markdown

    lines += verification_markdown(result)  # remote devices: what they are, outputs against this machine
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records_of(result) if r.status is Status.OK and r.times_ms]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(ok) + 1.5))
    labels = [f"{r.case} @{r.device}" for r in ok]
    # 'orientation' replaced 'vert' in Matplotlib 3.10 (vert warns from 3.11)
    horizontal = {"orientation": "horizontal"} if _mpl_version() >= (3, 10) else {"vert": False}
    ax.boxplot([r.times_ms for r in ok], showfliers=False, **horizontal)
    ax.set_yticks(range(1, len(ok) + 1), labels, fontsize=8)
    ax.set_xlabel("latency per image (ms)")
    ax.set_title(f"{result['name']}: {result['environment']['cpu']}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name("." + path.name + ".tmp.png")  # Matplotlib picks the format from the suffix
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def ratios(records: list[Record | dict], baseline: str | None) -> tuple[list[dict], list[dict]]:
    """Median latency of each case against a baseline case on the same device and thread count, with a bootstrap
    95% interval over both cases' per-run times (:func:`benchmarks.stats.ratio_with_noise`).

    Returns ``(ratios, skipped)``: a measured row without per-run times (a device tool that printed only a
    summary) cannot have a noise interval, so it is listed in ``skipped`` with the reason, not left out silently.
    """
    out, skipped = [], []
    by_threads: dict[tuple, list[Record]] = {}
    for r in as_records(records):
        if r.status is not Status.OK:
            continue  # not measured: its row in the table says why
        why = r.ratio_skip_reason()
        if why:
            skipped.append({"case": r.case, "device": r.device, "reason": why})
            continue
        by_threads.setdefault((r.device, r.threads), []).append(r)
    for (_, threads), group in sorted(by_threads.items()):
        base = next((r for r in group if baseline and baseline in r.name), group[0])
        for r in group:
            if r is base:
                continue
            q = ratio_with_noise(r.times_ms, base.times_ms)
            out.append({"case": r.case, "baseline": base.case, **q})
    for q in skipped:
        log.warning("ratios: %s on %s left out: %s", q["case"], q["device"], q["reason"])
    return out, skipped


def runtime_pairs(records: list[Record | dict]) -> list[dict]:
    """Each ExecuTorch row against the LiteRT row of the same network, precision, device, delegate and thread
    count (the two converters' artifacts of one model), with a bootstrap 95% interval: how far ExecuTorch is from
    LiteRT on the same graph, per build of its XNNPACK."""
    rows = [r for r in as_records(records) if r.status is Status.OK and r.times_ms and r.precision and r.network]
    out = []
    for et in (r for r in rows if r.runtime.value == "executorch"):
        lite = next((r for r in rows if r.runtime.value == "litert" and r.gpu_precision is None and
                     (r.device, r.network, r.precision, r.delegate, r.threads) ==
                     (et.device, et.network, et.precision, et.delegate, et.threads)), None)
        if lite is not None:
            out.append({"device": et.device, "case": et.case, "baseline": lite.case, "threads": et.threads,
                        "precision": et.precision.value, **ratio_with_noise(et.times_ms, lite.times_ms)})
    return out


def runtime_pair_lines(result: dict) -> list[str]:
    items = result.get("runtime_pairs") or []
    if not items:
        return []
    lines = ["", "ExecuTorch against LiteRT, same network, precision and threads (median ratio, bootstrap 95% "
             "interval; below 1: ExecuTorch faster):", "", "| ExecuTorch case | LiteRT case | ratio | 95% interval |",
             "|---|---|---|---|"]
    return lines + [_ratio_row(q) for q in items]


def _ratio_row(q: dict) -> str:
    """A ratio table's row: case, baseline, median ratio and its bootstrap 95% interval."""
    return f"| {q['case']} | {q['baseline']} | {q['ratio']:.3f} | {q['ci95'][0]:.3f} - {q['ci95'][1]:.3f} |"


def build_check_lines(records: list[Record]) -> list[str]:
    rows = [r for r in records if r.outputs_vs_wheel]
    if not rows:
        return []
    lines = ["", "Other builds of ExecuTorch's XNNPACK against the wheel's, same case, outputs on shipped validation "
             "photos:", ""]
    for r in rows:
        v = r.outputs_vs_wheel
        if "error" in v:
            lines.append(f"- {r.case}: not compared ({v['error']})")
        elif v["bit_identical"]:
            lines.append(f"- {r.case}: bit-identical on {v['images']} photos")
        else:
            diff = "shapes differ" if v["max_abs_diff"] is None else f"max abs difference {v['max_abs_diff']:.3g}"
            lines.append(f"- {r.case}: **not bit-identical** on {v['images']} photos ({diff}, top-1 agreement "
                         f"{100 * v['top1_agreement']:.1f}%)")
    return lines


def thread_scaling(records: list[Record | dict]) -> list[dict]:
    """Per device and case, each N-thread row's speed-up over the same case at 1 thread (ratio of medians), and,
    where the 1-thread row has ``--scaling-ceiling`` times for N copies at once, the ceiling N x (median alone) /
    (median with N at once) and the share of it the N threads reach. A speed-up under its ceiling is the
    threading's own cost (the pool's hand-offs, uneven tiles); the ceiling under N is the machine's (shared
    caches, memory bandwidth, a busy host): more threads in the model cannot pass it."""
    rows = [r for r in as_records(records) if r.status is Status.OK and r.median_ms]
    out = []
    for one in (r for r in rows if r.threads == 1):
        key = (one.device, one.name, one.runtime, one.delegate_label)
        for many in (r for r in rows if r.threads > 1 and (r.device, r.name, r.runtime, r.delegate_label) == key):
            item = {"device": one.device, "case": f"{one.name} {one.runtime.value}/{one.delegate_label}",
                    "threads": many.threads, "one_thread_ms": one.median_ms, "threads_ms": many.median_ms,
                    "speedup": one.median_ms / many.median_ms}
            if one.concurrent_copies == many.threads and one.concurrent_times_ms:
                together = float(np.median(one.concurrent_times_ms))
                item.update(copies_at_once_ms=together, ceiling=many.threads * one.median_ms / together)
                item["share_of_ceiling"] = item["speedup"] / item["ceiling"]
            out.append(item)
    return out


def scaling_lines(result: dict) -> list[str]:
    items = result.get("scaling") or []
    if not items:
        return []
    lines = ["", "Thread scaling (ratio of medians; ceiling: N copies of the 1-thread case at once, "
             "N x alone / together, the most N threads can give on this machine):", "",
             "| case | threads | 1 thread ms | N threads ms | speed-up | N copies at once, ms each | ceiling | "
             "share of ceiling |", "|---|---|---|---|---|---|---|---|"]
    for q in items:
        extra = (f" {q['copies_at_once_ms']:.2f} | {q['ceiling']:.2f}x | {100 * q['share_of_ceiling']:.0f}% |"
                 if "ceiling" in q else " | | |")
        lines.append(f"| {q['case']} | {q['threads']} | {q['one_thread_ms']:.2f} | {q['threads_ms']:.2f} | "
                     f"{q['speedup']:.2f}x |{extra}")
    poor = [q for q in items if q.get("share_of_ceiling", 1.0) < 0.75]
    if poor:
        best = max(poor, key=lambda q: q["ceiling"])
        lines += ["", f"Threads reach under 75% of the ceiling here (as low as "
                  f"{100 * min(q['share_of_ceiling'] for q in poor):.0f}%): the machine gives N independent inferences "
                  f"their full speed, but not one inference split N ways (see the core-to-core latency above). For "
                  f"throughput, run N one-thread inferences at once (up to {best['ceiling']:.2f}x the images per "
                  f"second of one); for latency, the N-thread figures above are what this machine gives."]
    return lines


def machine_drift(records: list[Record], per_round: int) -> list[dict]:
    """Per device and thread count, the slowdown every case saw in the same rounds (:func:`shared_drift`)."""
    groups: dict[tuple[str, int], dict[int, list[float]]] = {}
    for i, r in enumerate(records):
        if r.status is Status.OK and r.times_ms:
            groups.setdefault((r.device, r.threads), {})[i] = r.times_ms
    out = []
    for (device, threads), cases in groups.items():
        d = shared_drift(cases, per_round)
        if d:
            out.append({"device": device, "threads": threads, **d})
    return out


def drift_lines(result: dict) -> list[str]:
    """Say so in the table's file when the machine moved under every case at once: those figures need a rerun."""
    bad = [d for d in result.get("drift") or [] if d["drifted"]]
    if not bad:
        return []
    lines = ["", "**Machine drift**: in some rounds every case ran slower together (the machine, not the model; "
             "see docs/benchmarking.md, \"Two threads on AVX2\"):", ""]
    for d in bad:
        lines.append(f"- `{d['device']}`, {d['threads']} thread(s): up to {d['spread']:.2f}x in rounds "
                     f"{', '.join(map(str, d['slow_rounds']))}. Ratios between cases at this thread count still hold "
                     "(interleaved); speed-ups across thread counts and absolute times do not: rerun on a quiet machine.")
    return lines


def isa_lines(result: dict) -> list[str]:
    """The header line(s) naming each device's ISA class and features (older results have none)."""
    from benchmarks.topology import core_latency_line

    out = []
    envs = result.get("devices") or {"local": result.get("environment") or {}}
    for name, env in envs.items():
        isa = env.get("isa") if isinstance(env, dict) else None
        if isa and isa.get("class"):
            where = "" if name == "local" else f" ({name})"
            out.append(f"CPU ISA{where}: {isa['class']} ({', '.join(isa.get('features') or []) or 'no features read'})")
        builds = env.get("xnnpack_builds") if isinstance(env, dict) else None
        if builds:
            parts = [f"{rt} {b.get('compiler') or 'unknown compiler'}" + (" (override)" if b.get("override") else "")
                     for rt, b in builds.items()]
            out.append(f"XNNPACK builds{where}: {', '.join(parts)} (a GCC build spills registers in some "
                       "kernels and runs slower: int8 on AVX-512, fp32 and int8 on AVX2; docs/benchmarking.md)")
        line = core_latency_line(env.get("core_to_core")) if isinstance(env, dict) else None
        if line:
            out.append(line + ("" if name == "local" else f" ({name})"))
    return out


RECOMMENDATION_BASIS = ("loss = top-1 disagreement with the fp32 reference network on the manifest's validation "
                        "photos, an upper bound of the top-1 accuracy points lost")


def accuracy_loss_points(r: Record | dict) -> float | None:
    """Top-1 points an artifact may lose against its fp32 reference network: 100 x (1 - ``top1_agreement``) of
    its manifest's validation report (agreement on the held-out validation photos; a disagreement bounds the
    accuracy change). None when the manifest has no such figure."""
    a = r.top1_agreement if isinstance(r, Record) else r.get("top1_agreement")
    return None if a is None else round(100.0 * (1.0 - float(a)), 2)


def _threads_text(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _precision(r: Record) -> str | None:
    return r.precision.value if r.precision else None


def _shown(r: Record) -> str:
    """A recommended file, with the build of ExecuTorch's XNNPACK when it is not the wheel's (the user needs it too)."""
    if r.xnnpack_build and r.xnnpack_build.get("override"):
        return f"{r.name} with ExecuTorch's XNNPACK {r.delegate_label.split('(', 1)[1].rstrip(')')}"
    return r.name


def recommend(records: list[Record | dict], budget: float, envs: dict | None = None) -> list[dict]:
    """Per (device, threads, network): the fastest measured CPU artifact whose top-1 loss against the fp32
    reference (:func:`accuracy_loss_points`) is within ``budget`` points, with the line the harness prints.

    The network is the manifest's ``model`` plus its source weights (``network`` in the record); GPU rows are
    another target and are left out. "x of fp32" is the median latency against the fastest fp32 artifact of the
    same network and thread count, in the same format when there is one. Artifacts whose manifest has no
    accuracy figure are never guessed at, nor are rows without a median (a device tool's summary): the line
    names them.
    """
    envs = envs or {}
    groups: dict[tuple, list[Record]] = {}
    no_median: dict[tuple, list[str]] = {}
    for r in as_records(records):
        if r.status is not Status.OK or r.delegate is Delegate.GPU or not r.network:
            continue
        key = (r.device, r.threads, r.network)
        if r.median_ms is None:
            no_median.setdefault(key, []).append(r.name)
            continue
        groups.setdefault(key, []).append(r)
    nets = {k[2] for k in groups}
    items = []
    for (device, threads, network), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        env = envs.get(device) or {}
        isa = (env.get("isa") or {}).get("class") or env.get("machine") or "this machine"
        where = f"{isa}" + ("" if device == "local" else f" ({device})")
        head = f"recommendation for {where}, {_threads_text(threads)}"
        if len(nets) > 1:
            head += f" [{network.split('@')[0]}]"

        def med(r: Record) -> float:
            return r.median_ms

        def fp32_for(r: Record) -> Record | None:
            same = [x for x in rows if x.precision is Precision.FP32 and x.format == r.format]
            anyf = [x for x in rows if x.precision is Precision.FP32]
            return min(same or anyf, key=med) if (same or anyf) else None

        unknown = sorted({r.name for r in rows if accuracy_loss_points(r) is None})
        within = [r for r in rows if accuracy_loss_points(r) is not None and accuracy_loss_points(r) <= budget + 1e-9]
        untimed = sorted(set(no_median.get((device, threads, network), [])))
        item = {"device": device, "threads": threads, "network": network, "isa_class": isa,
                "accuracy_budget_points": budget, "no_accuracy_figures": unknown, "no_median": untimed}
        note_unknown = (f"; no accuracy figures in the manifest of {', '.join(unknown)} (validation.top1_agreement): "
                        "not considered" if unknown else "")
        note_unknown += (f"; no per-run times for {', '.join(untimed)} (the device tool's summary has no median): "
                         "not considered" if untimed else "")
        if not within:
            over = [r for r in rows if accuracy_loss_points(r) is not None]
            why = (f"every artifact with accuracy figures loses more than {budget:g} points "
                   f"(best: {min(accuracy_loss_points(r) for r in over):.1f})" if over
                   else "no measured artifact's manifest has accuracy figures (validation.top1_agreement)")
            item.update({"choice": None, "line": f"{head}: none within the {budget:g}-point budget: {why}"
                         + (note_unknown if over else "")})
            items.append(item)
            continue
        best = min(within, key=med)
        base = fp32_for(best)
        loss = accuracy_loss_points(best)
        prec = _precision(best) or "?"
        parts = [prec, f"{med(best):.1f} ms"]
        ratio = med(best) / med(base) if base is not None and base is not best else None
        if ratio is not None:  # against the fp32 artifact of another format: name it
            parts.append(f"{ratio:.2f}x of fp32" + ("" if base.format == best.format else f" {base.name}"))
        size = (base.size_bytes / best.size_bytes if base is not None and base is not best
                and base.size_bytes and best.size_bytes else None)
        line = f"{head}: {_shown(best)} ({', '.join(parts)}; " + (f"-{loss:.1f} points)" if loss else "no top-1 loss)")
        tail = ""
        if ratio is not None and ratio > SPEED_WORTH:
            tail = (f" — on this ISA {prec} buys size ({size:.1f}x smaller), not speed" if size and size > 1.05
                    else f" — on this ISA {prec} is not faster than fp32")
        elif ratio is not None:
            tail = (f" — {prec} is {1 / ratio:.2f}x faster than fp32 here"
                    + (f" and {size:.1f}x smaller" if size else ""))
        elif prec == "fp32":  # a lower precision within budget lost on speed, or one over budget: say which
            lower = [r for r in rows if _precision(r) not in (None, "fp32") and r is not best]
            fast_enough = [r for r in lower if any(r is w for w in within)]
            if fast_enough:
                r = min(fast_enough, key=med)
                s = best.size_bytes / r.size_bytes if best.size_bytes and r.size_bytes else None
                tail = (f" — {_shown(r)} ({_precision(r)}) is within budget but "
                        f"{med(r) / med(best):.2f}x of fp32: on this ISA {_precision(r)} buys size"
                        + (f" ({s:.1f}x smaller)" if s else "") + ", not speed")
            elif lower:
                r = min(lower, key=med)
                if accuracy_loss_points(r) is not None:
                    tail = (f" — {_shown(r)} ({_precision(r)}, {med(r) / med(best):.2f}x of fp32) loses "
                            f"{accuracy_loss_points(r):.1f} points, over the budget")
        item.update({"choice": best.name, "model": best.model, "precision": prec, "median_ms": med(best),
                     "accuracy_loss_points": loss, "fp32_baseline": base.name if base is not None else None,
                     "vs_fp32": ratio, "size_ratio_vs_fp32": size, "line": line + tail + note_unknown})
        items.append(item)
    return items


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
    p.add_argument("--accuracy-budget", type=float, default=DEFAULT_ACCURACY_BUDGET, metavar="POINTS",
                   help="top-1 points the recommended artifact may lose against its fp32 reference (from the "
                        f"manifests' validation reports; default {DEFAULT_ACCURACY_BUDGET:g})")
    p.add_argument("--executorch-xnnpack", action="append", default=[], metavar="LIB",
                   help="also time every .pte with this build of ExecuTorch's XNNPACK backend "
                        "(libexecutorch_backend_xnnpack.so, e.g. from scripts/build_executorch_xnnpack.sh), each in its "
                        "own worker beside the wheel's (repeatable: one twin per build): the executorch wheel's GCC "
                        "build runs int8 1.2x slower on AVX-512 and 1.1-1.25x on AVX2 (docs/benchmarking.md)")
    p.add_argument("--scaling-ceiling", action="store_true",
                   help="with --threads 1,N: also run N copies of each 1-thread case at once, each in its own worker, "
                        "in every round; N x its time alone / its time with N at once is the most N threads can "
                        "give that model on this machine, and the table reads each N-thread speed-up against it")
    p.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S, metavar="S",
                   help="seconds a case's worker may take for its load or one round of runs before it is killed "
                        f"and the case recorded as timed out (default {DEFAULT_CASE_TIMEOUT_S:g})")
    p.add_argument("--image", default=None, help="input image (default: a shipped sample)")
    p.add_argument("--name", default="local", help="name of this benchmark in the results")
    p.add_argument("--output", type=Path, default=None, help="folder for results.json, results.md, latency.png")
    p.add_argument("--device", action="append", default=[],
                   help="where to run: local (default), ssh://user@host[:port], adb or adb:SERIAL (repeatable; "
                        "all land in one result file)")
    p.add_argument("--ssh-key", default=None, help="private key for ssh:// devices")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for ssh:// devices")
    p.add_argument("--remote-python", default="python3", help="Python on the board (ssh://)")
    p.add_argument("--board", default=None, metavar="DIR",
                   help="an emulated board made by `python -m benchmarks.board up --dir DIR`: adds it as an ssh:// "
                        "device with its key, known_hosts and Python")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="remote devices: run shipped validation photos through each artifact there and here and "
                        "compare the outputs (default on; --no-verify to time only)")
    p.add_argument("--verify-images", type=int, default=50,
                   help="how many shipped validation photos --verify, and the comparison of each "
                        "--executorch-xnnpack build with the wheel's, use (0: all 200; default 50)")
    p.add_argument("--setup", action="store_true",
                   help="ssh:// boards: install the runtime into a venv on the board (~/.nasnet-edge/venv) first")
    p.add_argument("--litert-benchmark", default=None, help="Android LiteRT benchmark_model binary to push (adb)")
    p.add_argument("--executorch-runner", default=None, help="Android ExecuTorch executor_runner binary (adb)")
    p.add_argument("--adb", default="adb", help="adb executable")
    p.add_argument("--quiet", action="store_true")
    return p


def thread_counts(text) -> list[int]:
    """``--threads``: comma-separated counts of 1 or more (one parser for whole models and ``--cells``)."""
    try:
        threads = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise UsageError(f"--threads {text}: give comma-separated thread counts of 1 or more, e.g. 1,2")
    return threads


def benchmark(args: argparse.Namespace) -> dict:
    from converters.common import command_line, now_iso
    from edge.preprocessing import list_images
    from edge.model.verify import sample_images_dir

    threads = thread_counts(args.threads)
    delegates = [d.strip() for d in str(args.delegate).split(",") if d.strip()]
    gpu_precisions = [g.strip() for g in str(getattr(args, "gpu_precision", "fp16")).split(",") if g.strip()]
    for g in gpu_precisions:
        if g not in ("fp16", "fp32"):
            raise UsageError(f"unknown GPU precision '{g}' (fp16, fp32)")
    for d in delegates:
        if d not in ("xnnpack", "none", "gpu"):
            raise UsageError(f"unknown delegate '{d}' (xnnpack, none, gpu)")
    budget = float(getattr(args, "accuracy_budget", DEFAULT_ACCURACY_BUDGET))
    case_timeout = float(getattr(args, "case_timeout", DEFAULT_CASE_TIMEOUT_S))
    if not budget >= 0:
        raise UsageError(f"--accuracy-budget {budget:g}: give the top-1 points you accept to lose (0 or more)")
    if not case_timeout > 0:
        raise UsageError(f"--case-timeout {case_timeout:g}: give a number of seconds above 0")
    if getattr(args, "scaling_ceiling", False) and not (1 in threads and max(threads) > 1):
        raise UsageError(f"--scaling-ceiling with --threads {args.threads}: it reads each N-thread speed-up against "
                         "N one-thread copies at once, so give --threads 1,N (e.g. 1,2)")
    for m in args.models:
        if m not in ("default",) and not m.endswith((".tflite", ".pte", ".pt", ".pth", ".h5")):
            raise UsageError(f"{m}: unsupported model type (expected .tflite, .pte, .pt, .h5 or 'default')")
        if m != "default" and not Path(m).is_file():
            raise UsageError(f"{m}: no such model file")
    own_builds = getattr(args, "executorch_xnnpack", None) or []
    if isinstance(own_builds, (str, Path)):
        own_builds = [own_builds]
    libs: dict[str, str] = {}  # tag -> resolved library
    for lib in map(Path, own_builds):
        if not lib.is_file() or lib.name != "libexecutorch_backend_xnnpack.so":
            raise UsageError(f"--executorch-xnnpack {lib}: not a file named libexecutorch_backend_xnnpack.so (a build "
                             "of ExecuTorch's XNNPACK backend for the installed executorch)")
        tag = lib.resolve().parent.name or "own"
        tag = tag if tag not in libs else f"{tag}{len(libs) + 1}"
        libs[tag] = str(lib.resolve())
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
                if rt == "executorch":
                    cases += [Case(m, rt, d, t, xnnpack_library=lib, xnnpack_tag=tag) for tag, lib in libs.items()]
    image = args.image or list_images(sample_images_dir())[0]
    devices = list(args.device)
    boards: dict[str, dict] = {}
    if getattr(args, "board", None):
        from benchmarks.board import board_from_folder

        b = board_from_folder(args.board)
        boards[b["device"]] = b
        devices.append(b["device"])
    devices = devices or ["local"]
    for d in devices:
        if not (d == "local" or d.startswith("ssh://") or d == "adb" or d.startswith("adb:")):
            raise UsageError(f"unknown device '{d}': use local, ssh://user@host[:port] or adb[:SERIAL]")
    records: list[Record] = []
    device_envs: dict[str, dict] = {}
    for d in devices:  # one after the other, into one result file
        if d == "local":
            run_cases(cases, image, args.warmup, args.runs, args.rounds, args.min_time, progress=not args.quiet,
                      ceiling=bool(getattr(args, "scaling_ceiling", False)),
                      verify_images=int(getattr(args, "verify_images", 50)),
                      case_timeout=case_timeout)
            recs = [case_record(c) for c in cases]
            device_envs[d] = environment()
        elif d.startswith("ssh://"):
            from benchmarks.devices import run_ssh

            ssh = boards.get(d, {})
            out = run_ssh(d, args.models, threads, delegates, args.runs, args.rounds, args.warmup,
                          ssh.get("ssh_key", args.ssh_key), ssh.get("remote_python", args.remote_python),
                          ssh.get("known_hosts", args.known_hosts), verify=args.verify,
                          verify_images=args.verify_images, setup=args.setup, progress=not args.quiet)
            recs, device_envs[d] = out["results"], out["environment"]
        else:
            from benchmarks.devices import run_adb

            out = run_adb(d, args.models, threads, delegates, args.runs, args.warmup, args.litert_benchmark,
                          args.executorch_runner, args.adb, verify=args.verify, verify_images=args.verify_images,
                          progress=not args.quiet, rounds=args.rounds)
            recs, device_envs[d] = out["results"], out["environment"]
        for r in recs:
            r.device = d
        records += recs
    result = {"schema": SCHEMA, "name": args.name, "created": now_iso(), "command": command_line(),
              "environment": device_envs.get("local") or environment(), "devices": device_envs,
              "settings": {"warmup": args.warmup, "runs": args.runs, "rounds": args.rounds,
                           "input": str(Path(image).name), "accuracy_budget_points": budget,
                           "case_timeout_s": case_timeout, "isolation": "one worker process per local case"},
              "results": [r.to_dict() for r in records]}
    result["ratios"], result["ratios_skipped"] = ratios(records, args.baseline)
    result["drift"] = machine_drift(records, max(1, args.runs // args.rounds))
    result["scaling"] = thread_scaling(records)
    result["runtime_pairs"] = runtime_pairs(records)
    result["recommendation"] = {"accuracy_budget_points": budget, "basis": RECOMMENDATION_BASIS,
                                "items": recommend(records, budget, device_envs)}
    return result


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        if not args.models and not args.cells:
            raise UsageError("give models to time, or --cells DIR")
        if args.cells:
            from benchmarks.cells import benchmark_cells, cells_markdown, cells_plot, cells_scaling_markdown

            threads = thread_counts(args.threads)
            env = environment()  # the ISA and core-to-core latency every figure is read against
            header = "\n".join(isa_lines({"environment": env})) + "\n"
            print(header)
            results = [benchmark_cells(d, t, args.runs, args.rounds) for d in args.cells for t in threads]
            for r in results:
                print(cells_markdown(r))
            scaling = cells_scaling_markdown(results)
            if scaling:
                print(scaling)
            if args.output:
                from converters.common import write_json_atomic, write_text_atomic

                args.output.mkdir(parents=True, exist_ok=True)
                write_json_atomic(args.output / "cells.json", {"environment": env, "results": results})
                write_text_atomic(args.output / "cells.md", "\n".join([header] + [cells_markdown(r) for r in results] +
                                                                      ([scaling] if scaling else [])))
                cells_plot(results, args.output / "cells.png")
            if not args.models:
                return 0
        result = benchmark(args)
        print(markdown(result))
        if args.output:
            write_outputs(result, args.output)
            print(f"wrote {args.output}/results.json, results.md, latency.png")
        records = records_of(result)
        measured = [r for r in records if r.status is Status.OK]
        if not measured:  # a run that timed nothing must not look like a success to a script or CI
            failed = [r for r in records if r.status is not Status.OK]
            first = failed[0].reason if failed else ""
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
