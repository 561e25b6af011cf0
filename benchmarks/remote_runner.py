#!/usr/bin/env python3
"""Self-contained latency runner copied to a board by ``benchmarks.run --device ssh://...``.

It needs only Python 3, numpy and the board's own runtime (ai-edge-litert or tflite-runtime for
``.tflite``; executorch for ``.pte``), not this toolkit. It reads a JSON job file and prints one JSON
document: the board's environment and, per case, load time, first inference and all timed runs.
"""

import json
import os
import platform
import sys
import time


def litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import Interpreter, OpResolverType  # frozen at 2.14, boards only
    return Interpreter, OpResolverType


def load(case):
    import numpy as np

    path, threads, delegate = case["model"], case["threads"], case["delegate"]
    if path.endswith(".tflite"):
        Interpreter, OpResolverType = litert_interpreter()
        resolver = OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = np.zeros(d["shape"], d["dtype"])

        def run():
            it.set_tensor(d["index"], x)
            it.invoke()
        return run
    if path.endswith(".pte"):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)
        method = Runtime.get().load_program(path).load_method("forward")
        shape = case.get("input_shape") or [1, 3, 224, 224]
        x = torch.zeros(*shape)
        return lambda: method.execute((x,))
    raise ValueError("unsupported model " + path)


def environment():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("ai_edge_litert", "tflite_runtime", "executorch", "numpy"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "present")
        except ImportError:
            pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine(), "versions": versions}


def check(cases):
    """Name what to install, per runtime that a case needs and the board lacks."""
    missing = []
    if any(c["model"].endswith(".tflite") for c in cases):
        try:
            litert_interpreter()
        except ImportError:
            missing.append("LiteRT (pip install ai-edge-litert, or tflite-runtime on boards without it)")
    if any(c["model"].endswith(".pte") for c in cases):
        try:
            import executorch.runtime  # noqa: F401
        except ImportError:
            missing.append("ExecuTorch (pip install executorch)")
    try:
        import numpy  # noqa: F401
    except ImportError:
        missing.append("numpy (pip install numpy)")
    return missing


def main():
    job = json.load(open(sys.argv[1]))
    cases = job["cases"]
    missing = check(cases)
    if missing:
        print(json.dumps({"error": "missing runtime on the board: " + "; ".join(missing)}))
        return 3
    runs, rounds, warmup = job["runs"], job["rounds"], job["warmup"]
    loaded = []
    for c in cases:
        t = time.perf_counter()
        run = load(c)
        load_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        run()
        first_ms = (time.perf_counter() - t) * 1000
        for _ in range(warmup):
            run()
        loaded.append((c, run, {"load_ms": load_ms, "first_ms": first_ms, "times_ms": []}))
    per_round = max(1, runs // rounds)
    for r in range(rounds):
        order = loaded[r % len(loaded):] + loaded[:r % len(loaded)]  # rotate: no case always first
        for c, run, rec in order:
            for _ in range(per_round):
                t = time.perf_counter()
                run()
                rec["times_ms"].append((time.perf_counter() - t) * 1000)
    print(json.dumps({"environment": environment(), "results": [dict(c, **rec) for c, _, rec in loaded]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
