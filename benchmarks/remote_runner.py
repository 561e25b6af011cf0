#!/usr/bin/env python3
"""Self-contained runner copied to a board by ``benchmarks.run --device ssh://...``.

It needs only Python 3, numpy and the board's own runtime (ai-edge-litert or tflite-runtime for
``.tflite``; executorch for ``.pte``), not this toolkit. It reads a JSON job file and prints one JSON
document: the board's description and, per case, load time, first inference and all timed runs; with
``verify`` in the job, it also runs the host's preprocessed validation photos through every model and
saves the raw outputs, which the host compares with the same function (:func:`classify`, imported from
this file) run on its own machine. ``isa.py``, copied beside it when present, adds the CPU's ISA features.
"""

import hashlib
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


def open_litert(path, threads, delegate):
    Interpreter, OpResolverType = litert_interpreter()
    resolver = OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def open_pte(path, threads):
    """An ExecuTorch program's ``forward``, with the process's one XNNPACK pool sized to ``threads``."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if portable_lib._threadpool_get_thread_count() != threads:  # a reset frees the pool in use
        portable_lib._unsafe_reset_threadpool(threads)
    return Runtime.get().load_program(path).load_method("forward")


def load(case):
    import numpy as np

    path, threads, delegate = case["model"], case["threads"], case["delegate"]
    if path.endswith(".tflite"):
        it = open_litert(path, threads, delegate)
        d = it.get_input_details()[0]
        x = np.zeros(d["shape"], d["dtype"])

        def run():
            it.set_tensor(d["index"], x)
            it.invoke()
        return run
    if path.endswith(".pte"):
        import torch

        method = open_pte(path, threads)
        x = torch.zeros(*pte_input_shape(method, case.get("input_shape")))
        return lambda: method.execute((x,))
    raise ValueError("unsupported model " + path)


def pte_inputs():
    """The stdlib-only reader of a program's input dim order (``edge/artifact/pte_inputs.py``): copied beside this
    file by the host for a board, the toolkit's own when this runs on the host."""
    try:
        import pte_inputs as module
    except ImportError:
        from edge.artifact import pte_inputs as module
    return module


def pte_input_shape(method, sent=None):
    """The input shape to time a ``.pte`` with: the one the host sent from the artifact's manifest, checked
    against the program's own input when this ExecuTorch can say it (MethodMeta); the program's when none was sent.

    A program exported at one size fails at another (XNNPACK plans static shapes), and a NASNet input is not
    always 224 px: a wrong shape is named here rather than failing inside the runtime.
    """
    own = None
    try:
        own = [int(v) for v in method.metadata.input_tensor_meta(0).sizes()]
    except Exception:  # an older ExecuTorch without method metadata: the manifest's shape is all there is
        pass
    if sent and own and list(sent) != own:
        raise ValueError(f"the artifact's manifest gives input shape {list(sent)} but the program takes {own}: "
                         "is the manifest beside it the one of this .pte?")
    shape = list(sent or own or [])
    if not shape:
        raise ValueError("no input shape for this .pte: it has no manifest beside it and this ExecuTorch cannot "
                         "read the program's input (method metadata)")
    return shape


def quantize_input(x, d_in):
    """A float input as the model's input tensor takes it (int8/uint8 from its own scale and zero point)."""
    import numpy as np

    if d_in["dtype"] == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zp = d_in["quantization"]
    info = np.iinfo(d_in["dtype"])
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(d_in["dtype"])


def classify(path, images, threads=1, delegate="xnnpack"):
    """Float NHWC ``images`` (N, H, W, C) through the model, one at a time, as every runner does.

    Returns ``(raw, logits, quant)``: the output tensors exactly as the runtime gives them (int8 for a model
    with quantized outputs), as float32, and the output's ``(scale, zero_point)`` (None when float). Quantized inputs are made from the model's own scale and zero point.
    The host calls this same function on its own machine, so the two sides differ only in their kernels.
    """
    import numpy as np

    raw, logits, quant = [], [], None
    if path.endswith(".tflite"):
        it = open_litert(path, threads, delegate)
        d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
        for sample in np.asarray(images, dtype=np.float32):
            it.set_tensor(d_in["index"], quantize_input(sample[None], d_in))
            it.invoke()
            y = it.get_tensor(d_out["index"]).reshape(-1).copy()
            raw.append(y)
            if y.dtype != np.float32:
                scale, zp = quant = d_out["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            logits.append(y.astype(np.float32))
    elif path.endswith(".pte"):
        method = open_pte(path, threads)
        # ExecuTorch copies input bytes without checking their order: feed the one the program declares
        reader = pte_inputs()
        nhwc = reader.takes_channels_last(path)
        for sample in np.asarray(images, dtype=np.float32):
            y = method.execute((reader.image_tensor(sample, nhwc),))[0].numpy().reshape(-1).copy()
            raw.append(y)
            logits.append(y.astype(np.float32))
    else:
        raise ValueError("unsupported model " + path)
    return np.stack(raw), np.stack(logits), quant


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def emulation():
    """How this Linux is emulated, or None on real hardware.

    qemu-user (binfmt_misc) leaves traces a program can see: the kernel knows this process's parent (and
    PID 1) by its real executable, ``qemu-<arch>`` or a binary of another machine (qemu itself answers only
    for ``/proc/self``), and it may list ``qemu-<arch>`` for this very architecture in binfmt_misc.
    A full virtual machine (qemu-system, KVM) names itself in the DMI tables or the device tree.
    """
    machine = platform.machine()
    arch = {"aarch64": "aarch64", "arm64": "aarch64", "armv7l": "arm", "x86_64": "x86_64"}.get(machine, machine)
    elf_machines = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "i386", 0xF3: "riscv64"}
    for pid in (os.getppid(), 1):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            if os.path.basename(exe).startswith("qemu-"):
                return f"qemu-user: {arch} binaries run through {os.path.basename(exe)}"
            with open(f"/proc/{pid}/exe", "rb") as f:
                head = f.read(20)
            if head[:4] == b"\x7fELF":
                host = elf_machines.get(int.from_bytes(head[18:20], "little"))
                if host and host != arch:
                    return f"qemu-user: {arch} binaries on a {host} machine (process {pid} is a {host} binary)"
        except OSError:
            pass
    if "enabled" in _read(f"/proc/sys/fs/binfmt_misc/qemu-{arch}").splitlines()[:1]:
        return f"qemu-user: this kernel runs {arch} binaries through qemu-{arch} (binfmt_misc)"
    for p in ("/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/product_name", "/proc/device-tree/compatible"):
        text = _read(p).lower()
        if "qemu" in text or "kvm" in text:
            return f"virtual machine ({_read(p).replace(chr(0), ' ').strip()})"
    return None


def environment():
    cpu, hardware, part = platform.processor(), "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                value = line.split(":", 1)[1].strip() if ":" in line else ""
                if key in ("model name", "cpu model") and not cpu:
                    cpu = value
                elif key == "hardware":
                    hardware = value
                elif key == "cpu part" and not part:
                    part = value
    except OSError:
        pass
    arm_parts = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
                 "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
                 "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
                 "0xd4b": "Cortex-A78C", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd40": "Neoverse-V1"}
    if not cpu or cpu == platform.machine():
        cpu = arm_parts.get(part.lower(), cpu or platform.machine())
    model = _read("/proc/device-tree/model").replace("\x00", "") or _read("/sys/class/dmi/id/product_name")
    versions = {"python": platform.python_version()}
    for mod in ("ai_edge_litert", "tflite_runtime", "executorch", "numpy"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "present")
        except Exception:  # an installed but broken runtime (e.g. executorch without its torch) is "broken"
            if _installed(mod):
                versions[mod] = "installed but does not import"
    env = {"host": platform.node(), "cpu": cpu, "board": model or hardware or None, "cores": os.cpu_count(),
           "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or None,
           "os": platform.platform(), "machine": platform.machine(), "python_executable": sys.executable,
           "versions": versions}
    emu = emulation()
    env["emulated"] = bool(emu)
    if emu:
        env["emulation"] = emu
        if emu.startswith("qemu-user"):  # DMI and device tree there are the host's, not a board's
            env["board"] = f"none: {cpu} emulated by qemu-user"
        env["qemu_cpu"] = os.environ.get("QEMU_CPU") or "qemu default (max)"
        env["note"] = "emulated: latencies are functional checks, not this board class's speed"
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import isa  # copied beside this file by the host when present (stdlib only)

        env["isa"] = isa.cpu_features()
    except Exception:
        pass
    return env


def _installed(mod):
    import importlib.util

    try:
        return importlib.util.find_spec(mod) is not None
    except Exception:
        return False


INSTALL = {"litert": "{python} -m pip install {litert}",
           "executorch": "{python} -m pip install executorch",
           "numpy": "{python} -m pip install numpy"}


def missing_runtimes(cases, litert_requirement="ai-edge-litert"):
    """Per runtime that a case needs and the board lacks: the exact command that installs it."""
    py = sys.executable
    out = {}
    try:
        import numpy  # noqa: F401
    except ImportError:
        out["numpy"] = INSTALL["numpy"].format(python=py)
    if any(c["model"].endswith(".tflite") for c in cases):
        try:
            litert_interpreter()
        except ImportError:
            out["litert"] = INSTALL["litert"].format(python=py, litert=litert_requirement)
    if any(c["model"].endswith(".pte") for c in cases):
        try:
            import executorch.runtime  # noqa: F401
            from executorch.extension.pybindings import portable_lib  # noqa: F401
        except Exception as e:  # ImportError, or OSError from a torch wheel missing its CUDA libraries
            why = f" ({e.__class__.__name__}: {str(e).splitlines()[0][:120]})" if _installed("executorch") else ""
            out["executorch"] = INSTALL["executorch"].format(python=py) + why
    return out


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def time_cases(cases, job):
    """Load each case, first run and warm-up, then timed runs interleaved in rotating rounds."""
    runs, rounds, warmup = job["runs"], job["rounds"], job["warmup"]
    loaded, failed = [], []
    for c in cases:
        try:
            t = time.perf_counter()
            run = load(c)
            load_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            run()
            first_ms = (time.perf_counter() - t) * 1000
            for _ in range(warmup):
                run()
        except Exception as e:  # a bad file or a wrong input shape: this case's error row, the others still run
            failed.append(dict(c, status="error", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                               if str(e) else type(e).__name__))
            continue
        loaded.append((c, run, {"load_ms": load_ms, "first_ms": first_ms, "times_ms": []}))
    per_round = max(1, runs // rounds)
    for r in range(rounds):
        order = loaded[r % len(loaded):] + loaded[:r % len(loaded)] if loaded else []  # rotate: no case first
        for c, run, rec in order:
            for _ in range(per_round):
                t = time.perf_counter()
                run()
                rec["times_ms"].append((time.perf_counter() - t) * 1000)
    return [dict(c, **rec) for c, _, rec in loaded] + failed


def main():
    job = json.load(open(sys.argv[1]))
    if job.get("action") == "sha256":
        print(json.dumps({p: sha256_of(p) for p in job["files"]}))
        return 0
    cases = job["cases"]
    missing = missing_runtimes(cases, job.get("litert_requirement", "ai-edge-litert"))
    if "numpy" in missing:  # nothing runs without it: name everything that is missing at once
        print(json.dumps({"error": "missing on the board: " + "; ".join(f"{k} (install: {v})" for k, v in
                                                                         missing.items())
                          + "; or pass --setup to install them into a venv on the board", "missing": missing}))
        return 3
    runtime = {".tflite": "litert", ".pte": "executorch"}
    unavailable = [c for c in cases if runtime[os.path.splitext(c["model"])[1]] in missing]
    cases = [c for c in cases if c not in unavailable]
    pte_threads = sorted({c["threads"] for c in cases if c["model"].endswith(".pte")})
    if len(pte_threads) > 1:
        # ExecuTorch keeps one XNNPACK thread pool per process, and _unsafe_reset_threadpool frees the pool
        # that every method loaded before still runs on (a use-after-free: docs/benchmarking.md). So each
        # thread count of .pte cases is timed in its own child process; LiteRT cases stay here.
        results = time_cases([c for c in cases if not c["model"].endswith(".pte")], job)
        for t in pte_threads:
            sub = dict(job, cases=[c for c in cases if c["model"].endswith(".pte") and c["threads"] == t],
                       verify=None, action="time")
            path = sys.argv[1] + f".threads{t}.json"
            with open(path, "w") as f:
                json.dump(sub, f)
            import subprocess

            r = subprocess.run([sys.executable, os.path.abspath(__file__), path], capture_output=True, text=True)
            try:
                results += json.loads(r.stdout.strip().splitlines()[-1])["results"]
            except (ValueError, IndexError, KeyError):
                results += [dict(c, status="error", reason=f"runner for {t} thread(s) exited {r.returncode}: "
                                 + ((r.stderr.strip().splitlines() or ["?"])[-1])[:200]) for c in sub["cases"]]
    else:
        results = time_cases(cases, job)
    if job.get("action") == "time":  # a child of the above: its records only
        print(json.dumps({"results": results}))
        return 0
    verified = {}
    if job.get("verify"):
        import numpy as np

        v = job["verify"]
        for model, item in v["items"].items():
            if runtime[os.path.splitext(model)[1]] in missing:
                continue
            t = time.perf_counter()
            raw, _, _ = classify(model, np.load(item["inputs"]), v["threads"], v.get("delegate", "xnnpack"))
            np.save(item["output"], raw)
            verified[model] = {"seconds": time.perf_counter() - t, "output": item["output"]}
    results += [dict(c, status="unavailable", missing=missing[runtime[os.path.splitext(c["model"])[1]]])
                for c in unavailable]
    print(json.dumps({"environment": environment(), "results": results, "verified": verified,
                      "missing": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
