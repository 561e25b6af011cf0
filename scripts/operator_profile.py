"""Where an ExecuTorch program's XNNPACK time goes per operator, at each thread count: ExecuTorch's own profile
(ETDump, with the XNNPACK delegate's per-operator timings), summed by operator type and by position in the network,
with each group's speed-up from one thread to N. XNNPACK times operators in whole microseconds (truncated), so each
operator's median gets half a microsecond back; groups of many 1-2 us operators stay rough.

Each (program, threads) runs in its own worker process (one ExecuTorch thread pool per process, the toolkit's
rule), loaded with ``enable_etdump=True``; the workers of all cases take turns for ``--rounds`` rounds, so a host
that drifts moves every case alike. Per operator the median over all timed runs (warm-up runs dropped); a group's
time is the sum of its operators' medians. ``outside operators`` is the delegate call less its operators: what the
delegate does around XNNPACK's kernels at every inference (input/output handling, and a build that re-plans its
runtime at every call: docs/benchmarking.md). XNNPACK profiling reads a clock around each operator, so these
times run slightly above the benchmark's; compare groups and speed-ups, not totals, with ``benchmarks.run``.

    python scripts/operator_profile.py artifacts/pte/nasnet_mobile_edge_xnnpack_int8.pte --threads 1,2 \\
        --runs 100 --rounds 4 --json results/operators.json

``NASNET_EDGE_EXECUTORCH_XNNPACK=<libexecutorch_backend_xnnpack.so>`` profiles another build of the backend
(scripts/build_executorch_xnnpack.sh); the wheel's records the same events. Same XNNPACK operators and kernels as
LiteRT runs for the same graph (issue 20), so a group that scales badly here is the place to look there too.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = 10  # position buckets: tenths of the operator sequence, in execution order


def _worker(path: str, threads: int, runs: int, warmup: int, etdump: str) -> None:
    sys.path.insert(0, str(REPO))
    import time

    import numpy as np

    from edge.quiet import captured_fds, quiet_executorch_import
    from edge.runtime.native import preload_executorch_xnnpack

    preload_executorch_xnnpack()
    with quiet_executorch_import(), captured_fds():
        from executorch.extension.pybindings import portable_lib
    from edge.artifact.pte_inputs import image_tensor, takes_channels_last
    from edge.runtime.runners import size_executorch_threadpool

    size_executorch_threadpool(portable_lib, threads)
    with captured_fds():
        module = portable_lib._load_for_executorch(path, enable_etdump=True, debug_buffer_size=0)
    meta = module.method_meta("forward")
    sizes = list(meta.input_tensor_meta(0).sizes())
    if len(sizes) != 4 or meta.num_inputs() != 1:
        raise SystemExit(f"error: {path}: profiles programs of one image input (1x3xHxW); this one takes "
                         f"{meta.num_inputs()} input(s), the first {sizes}")
    x = image_tensor(np.random.default_rng(0).uniform(-1, 1, (sizes[2], sizes[3], 3)).astype("f"),
                     takes_channels_last(path))
    wall = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        module.forward((x,))
        if i >= warmup:
            wall.append(1e3 * (time.perf_counter() - t))
    with captured_fds():
        module.write_etdump_result_to_file(etdump, etdump + ".debug")
    print(json.dumps({"wall_ms": wall}))


def _events(etdump: Path, warmup: int) -> tuple[list[tuple[str, list[float]]], dict[str, list[float]]]:
    """(XNNPACK operator, its timed runs' ms) in execution order, and the runtime's own events by name
    (DELEGATE_CALL summed over a program's delegate calls, Method::execute, kernels outside the delegate)."""
    import warnings

    from edge.quiet import captured_fds

    with warnings.catch_warnings(), captured_fds():
        warnings.simplefilter("ignore")  # "Output Buffer not found": no tensor debug data was asked for
        from executorch.devtools import Inspector

        inspector = Inspector(etdump_path=str(etdump))
    ops, runtime = [], {}
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for e in block.events:
            raw = list(e.perf_data.raw)[warmup:] if e.perf_data is not None else []
            if not raw:
                continue
            if e.is_delegated_op:
                ops.append((e.name, raw))
            elif e.name in runtime:  # a program with several delegate calls (partitions): their sum per run
                runtime[e.name] = [a + b for a, b in zip(runtime[e.name], raw)]
            else:
                runtime[e.name] = raw
    return ops, runtime


def op_type(name: str) -> str:
    """'Convolution (NHWC, F32) DWConv #12' -> 'Convolution (NHWC, F32) DWConv'."""
    return re.sub(r"\s+#\d+$", "", name)


# XNNPACK reports each operator's time in whole microseconds, truncated (xnn_get_elapsed_time, src/runtime.c): a
# median is low by half a microsecond on average, which over ~650 operators is a third of a millisecond and, for
# the 1-3 us operators of the 7x7 cells, most of their time. Each operator's median gets it back.
TRUNCATION_MS = 0.0005


def summarize(ops: list[tuple[str, list[float]]], runtime: dict[str, list[float]], wall: list[float]) -> dict:
    medians = [(name, statistics.median(raw) + TRUNCATION_MS) for name, raw in ops]
    by_type: dict[str, dict] = {}
    for name, ms in medians:
        t = by_type.setdefault(op_type(name), {"ops": 0, "ms": 0.0})
        t["ops"] += 1
        t["ms"] += ms
    n = len(medians)
    parts, k_parts = [], min(PARTS, n)
    for k in range(k_parts):
        chunk = medians[k * n // k_parts:(k + 1) * n // k_parts]
        parts.append({"part": k + 1, "ops": len(chunk), "ms": sum(ms for _, ms in chunk),
                      "first": chunk[0][0] if chunk else None})
    total_ops = sum(ms for _, ms in medians)
    delegate = statistics.median(runtime["DELEGATE_CALL"]) if "DELEGATE_CALL" in runtime else None
    execute = statistics.median(runtime["Method::execute"]) if "Method::execute" in runtime else None
    others = {k: statistics.median(v) for k, v in runtime.items() if k not in ("DELEGATE_CALL", "Method::execute")}
    return {"operators": n, "operators_ms": total_ops, "delegate_call_ms": delegate, "method_execute_ms": execute,
            "outside_delegate": others,
            "outside_operators_ms": None if delegate is None else delegate - total_ops,
            "wall_ms": statistics.median(wall) if wall else None, "runs": len(wall),
            "truncation_ms_per_operator": TRUNCATION_MS,
            "by_type": by_type, "by_position": parts, "per_operator_ms": medians}


def profile(paths: list[Path], threads: list[int], runs: int, rounds: int, warmup: int) -> list[dict]:
    cases = [(p, t) for p in paths for t in threads]
    collected = {c: ([], {}, []) for c in cases}  # ops per round, runtime events, wall
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for path, t in cases:
                print(f"round {r + 1}/{rounds}: {path.name}, {t} thread(s) ...", file=sys.stderr, flush=True)
                etdump = Path(tmp) / f"{path.stem}_{t}_{r}.etdp"
                proc = subprocess.run([sys.executable, __file__, "--worker", str(path), str(t), str(runs),
                                       str(warmup), str(etdump)], capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
                if proc.returncode != 0 or not etdump.exists():
                    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    sys.exit(f"error: {path}: the profiling worker failed ({proc.returncode}): {last}")
                wall = json.loads(proc.stdout.strip().splitlines()[-1])["wall_ms"]
                ops, runtime = _events(etdump, warmup)
                if not ops:
                    sys.exit(f"error: {path}: ETDump holds no delegated operators: is the program delegated to "
                             "XNNPACK (python -m converters.executorch), and the backend built with its event "
                             "tracer (the wheel's and scripts/build_executorch_xnnpack.sh's are)?")
                acc_ops, acc_rt, acc_wall = collected[(path, t)]
                if acc_ops and [n for n, _ in acc_ops[0]] != [n for n, _ in ops]:
                    sys.exit(f"error: {path}: the operators differ between rounds")
                acc_ops.append(ops)
                for k, v in runtime.items():
                    acc_rt.setdefault(k, []).extend(v)
                acc_wall.extend(wall)
    results = []
    for (path, t), (per_round, runtime, wall) in collected.items():
        merged = [(name, [ms for rnd in per_round for ms in rnd[i][1]]) for i, (name, _) in enumerate(per_round[0])]
        results.append({"artifact": str(path), "threads": t, **summarize(merged, runtime, wall)})
    return results


def speedups(results: list[dict]) -> list[dict]:
    """Per artifact, each N-thread case against its 1-thread case, group by group."""
    rows = []
    by_key = {(r["artifact"], r["threads"]): r for r in results}
    for (artifact, t), r in by_key.items():
        one = by_key.get((artifact, 1))
        if t == 1 or one is None:
            continue
        types = []
        for name, g in sorted(one["by_type"].items(), key=lambda kv: -kv[1]["ms"]):
            gn = r["by_type"].get(name)
            if gn:
                types.append({"type": name, "ops": g["ops"], "ms_1": g["ms"], "ms_n": gn["ms"],
                              "speedup": g["ms"] / gn["ms"] if gn["ms"] else None,
                              "lost_ms": gn["ms"] - g["ms"] / t})
        parts = [{"part": a["part"], "ops": a["ops"], "ms_1": a["ms"], "ms_n": b["ms"],
                  "speedup": a["ms"] / b["ms"] if b["ms"] else None, "lost_ms": b["ms"] - a["ms"] / t}
                 for a, b in zip(one["by_position"], r["by_position"])]
        rows.append({"artifact": artifact, "threads": t, "types": types, "positions": parts,
                     "operators": {"ms_1": one["operators_ms"], "ms_n": r["operators_ms"],
                                   "speedup": one["operators_ms"] / r["operators_ms"]},
                     "outside_operators": {"ms_1": one["outside_operators_ms"], "ms_n": r["outside_operators_ms"]},
                     "wall": {"ms_1": one["wall_ms"], "ms_n": r["wall_ms"],
                              "speedup": one["wall_ms"] / r["wall_ms"] if r["wall_ms"] else None}})
    return rows


def _x(speedup: float | None) -> str:
    return "-" if speedup is None else f"{speedup:.2f}x"


def markdown(results: list[dict], rows: list[dict], isa: dict, build: str) -> str:
    out = [f"CPU ISA: {isa['class']} ({', '.join(isa.get('features', []))}); ExecuTorch XNNPACK: {build}", ""]
    for r in results:
        out.append(f"- {Path(r['artifact']).name}, {r['threads']} thread(s): {r['operators']} operators "
                   f"{r['operators_ms']:.2f} ms, delegate call {r['delegate_call_ms']:.2f} ms (outside operators "
                   f"{r['outside_operators_ms']:.3f} ms), Method::execute {r['method_execute_ms']:.2f} ms"
                   + (f" (kernels outside the delegate: {', '.join(r['outside_delegate'])})" if r['outside_delegate'] else "")
                   + ", "
                   f"forward() from Python {r['wall_ms']:.2f} ms; {r['runs']} timed runs")
    for s in rows:
        n = s["threads"]
        out += ["", f"{Path(s['artifact']).name}: 1 -> {n} threads, operators {s['operators']['ms_1']:.2f} -> "
                f"{s['operators']['ms_n']:.2f} ms ({s['operators']['speedup']:.2f}x); forward() "
                f"{s['wall']['ms_1']:.2f} -> {s['wall']['ms_n']:.2f} ms ({s['wall']['speedup']:.2f}x). "
                f"'lost' = N-thread ms less 1/{n} of the 1-thread ms: what keeps the group from {n}x.", "",
                f"| operator type | ops | 1 thread ms | {n} threads ms | speed-up | lost ms |", "|---|---:|---:|---:|---:|---:|"]
        for g in s["types"]:
            out.append(f"| {g['type']} | {g['ops']} | {g['ms_1']:.3f} | {g['ms_n']:.3f} | "
                       f"{_x(g['speedup'])} | {g['lost_ms']:.3f} |")
        out += ["", "| position (tenth of the operators, in execution order) | ops | 1 thread ms | "
                f"{n} threads ms | speed-up | lost ms |", "|---|---:|---:|---:|---:|---:|"]
        for p in s["positions"]:
            out.append(f"| {p['part']} | {p['ops']} | {p['ms_1']:.3f} | {p['ms_n']:.3f} | {_x(p['speedup'])} | "
                       f"{p['lost_ms']:.3f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("artifacts", nargs="+", type=Path, help=".pte files delegated to XNNPACK")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated (1 is added for the speed-ups)")
    p.add_argument("--runs", type=int, default=100, help="timed inferences per case and round")
    p.add_argument("--rounds", type=int, default=4, help="rounds in which the cases take turns")
    p.add_argument("--warmup", type=int, default=10, help="inferences dropped at the start of each worker")
    p.add_argument("--json", type=Path, help="write the profile here (with every operator's median)")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    args = p.parse_args(argv)
    for a in args.artifacts:
        if not a.is_file():
            sys.exit(f"error: {a}: no such file")
        if a.suffix != ".pte":
            sys.exit(f"error: {a}: not a .pte file (this profiles ExecuTorch programs; LiteRT runs the same "
                     "XNNPACK operators: scripts/kernel_profile.py samples both)")
    try:
        threads = sorted({1, *(int(t) for t in args.threads.split(","))})
    except ValueError:
        sys.exit(f"error: --threads {args.threads}: give thread counts like 1,2")
    if min(threads) < 1 or args.runs < 1 or args.rounds < 1 or args.warmup < 0:
        sys.exit("error: --threads, --runs and --rounds must be positive, --warmup not negative")
    sys.path.insert(0, str(REPO))
    from benchmarks.isa import cpu_features
    from edge.runtime import native

    isa = cpu_features()
    lib = os.environ.get(native.ENV_EXECUTORCH_XNNPACK)
    record = native.build_record(Path(lib)) if lib else None
    build = (f"{lib} ({native.build_label({'compiler': (record or {}).get('compiler_version', 'unknown'), 'build': record or {}})})"
             if lib else "the wheel's backend")
    results = profile(args.artifacts, threads, args.runs, args.rounds, args.warmup)
    rows = speedups(results)
    text = markdown(results, rows, isa, build)
    print(text, end="")
    for path, payload in ((args.json, lambda: json.dumps({"isa": isa, "executorch_xnnpack": build,
                                                          "command": " ".join(sys.argv), "results": results,
                                                          "speedups": rows}, indent=1)),
                          (args.markdown, lambda: text)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(payload())
            tmp.replace(path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(main())
