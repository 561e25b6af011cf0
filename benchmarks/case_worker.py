"""One benchmark case in its own process: ``python -m benchmarks.case_worker FD_IN FD_OUT``.

``benchmarks.run`` starts one worker per local case (model x runtime x delegate x threads) and keeps it alive
for the whole run, so the rounds still interleave: the parent tells worker *i* "do N timed runs", waits for
its times, then tells the next one (in a shuffled order each round). Only one worker runs at a time, so the
cases never compete for the cores; each has its own runtime, thread pool and memory.

Why a process per case (docs/benchmarking.md):

- a crash (SIGSEGV in a runtime) or a hang takes only that case: the parent sees the pipe close (or no answer
  within ``--case-timeout``), records the case's status ``error`` with the signal or the timeout, and goes on;
- ExecuTorch's thread pool is one per process, and resizing it frees the pool that every method loaded
  before still uses (below); two ExecuTorch cases at different thread counts in one process are unsafe;
- peak memory (VmHWM / ru_maxrss) is the worker's own, so it is this model's figure, not the sum of all
  the models loaded before it.

The crash of issue 20 (``benchmarks.run <int8 .tflite> <fp32 .pte> --threads 1,2``: SIGSEGV, exit 139),
root-caused with gdb on ExecuTorch 1.5.1 (pip wheel), is a use-after-free of ExecuTorch's thread pool:
``backends/xnnpack/runtime/XNNCompiler.cpp`` (``compileModel``, line ~2300 upstream) hands
``executorch::extension::threadpool::get_pthreadpool()`` to ``xnn_create_runtime_v4`` when a method is
loaded, and the XNNPACK runtime keeps that ``pthreadpool_t``. ``portable_lib._unsafe_reset_threadpool(n)``
(``extension/threadpool/threadpool.cpp:65-77``; the installed ``libexecutorch_threadpool.so`` logs
"[threadpool.cpp:66] Resetting threadpool to N threads.") does ``threadpool_.reset(pthreadpool_create(n))``:
it destroys the old pool under every method loaded before. The old single-process harness reset the pool
for each ExecuTorch case when loading it (``ExecuTorchRunner``) and again before each of its rounds, so the
1-thread method ran on the freed pool of its load; gdb showed ``pthreadpool_destroy(P)`` for the pool ``P``
that ``xnn_create_runtime_v4`` had been given, then SIGSEGV (a call through a null pointer) in
``pthreadpool_parallelize_2d_tile_2d_dynamic`` under ``xnn_invoke_runtime``. Whether the freed memory still
looks like a pool depends on the heap: the LiteRT int8 model's allocations in between made it crash about
every second run; fp32 + fp32 happened to survive. It is not a clash of the two runtimes' XNNPACK copies:
LiteRT's XNNPACK, pthreadpool and cpuinfo are linked in with hidden symbols (``nm -D`` on
``ai_edge_litert/*.so`` exports none) and ``LD_DEBUG=bindings`` shows ExecuTorch binding its ``pthreadpool_*``
to its own ``libexecutorch_threadpool.so``. Here every worker holds one case, so its pool is sized once,
before its only method is loaded, and never reset.

The worker imports only what its case needs: a LiteRT worker never imports torch or TensorFlow, an
ExecuTorch worker never imports TensorFlow, and this module imports nothing beyond the standard library
until a request asks for a runtime. Protocol: pickled tuples over two pipes
(:class:`multiprocessing.connection.Connection` on plain file descriptors); the worker's stdout and stderr
go to a log file whose last lines come back with an error.

Test hook (tests/test_benchmarks.py): ``NASNET_EDGE_BENCH_FAULT="ACTION@PHASE:TEXT"`` makes the worker of
every case whose label contains ``TEXT`` fail on purpose at ``PHASE`` (``load`` or ``run``): ``segv``
(``os.kill(os.getpid(), SIGSEGV)``), ``hang`` (sleeps forever) or ``exit`` (``os._exit(3)``).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

FAULT_ENV = "NASNET_EDGE_BENCH_FAULT"
HEAVY_MODULES = ("tensorflow", "keras", "torch", "executorch", "ai_edge_litert", "tflite_runtime")
LOG_TAIL_LINES = 15


# ----------------------------------------------------------------------------- memory of this process
def rss_mb() -> float:
    """Resident memory of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: VmHWM, else ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ----------------------------------------------------------------------------- the case itself
def make_runner(runtime: str, model: str, threads: int, delegate: str, gpu_precision: str | None):
    from edge.runtime.runners import open_model

    if runtime == "torch":
        import torch

        from edge.runtime.runners import TorchRunner

        torch.set_num_threads(threads)
        # on 'gpu' the model, every input and the read-back live on CUDA, synchronized (TorchRunner.predict)
        return TorchRunner(model, threads=threads, device="cuda" if delegate == "gpu" else "cpu")
    return open_model(model, threads=threads, delegate=delegate, gpu_precision=gpu_precision or "fp16")


def time_once(runner, x) -> float:
    t = time.perf_counter()
    runner.predict(x)
    return (time.perf_counter() - t) * 1000


def import_runtime(runtime: str, delegate: str) -> None:
    """The runtime's own libraries, imported before the memory baseline so that the load's RSS growth is the
    model's (weights, packed weights, arena), not the runtime's code."""
    from edge.quiet import captured_fds, quiet_executorch_import

    with captured_fds():  # native start-up lines (cpuinfo) go to the log, not into a one-line error
        if runtime == "litert" and delegate == "gpu":
            import ai_edge_litert.compiled_model  # noqa: F401
        elif runtime == "litert":
            from edge.runtime.runners import _litert

            _litert()
        elif runtime == "executorch":
            import torch  # noqa: F401

            from edge.runtime.native import preload_executorch_xnnpack

            preload_executorch_xnnpack()  # NASNET_EDGE_EXECUTORCH_XNNPACK: a user's own XNNPACK backend build
            with quiet_executorch_import():
                from executorch.extension.pybindings import portable_lib  # noqa: F401
                from executorch.runtime import Runtime  # noqa: F401
        elif runtime == "torch":
            import torch  # noqa: F401,F811


def heavy_imports() -> list[str]:
    return [m for m in HEAVY_MODULES if m in sys.modules]


def fault(phase: str, label: str) -> None:
    """The test hook (module docstring): fail on purpose when ``NASNET_EDGE_BENCH_FAULT`` names this case."""
    spec = os.environ.get(FAULT_ENV, "")
    action, _, rest = spec.partition("@")
    where, _, text = rest.partition(":")
    if not spec or where != phase or text not in label:
        return
    sys.stderr.write(f"{FAULT_ENV}={spec}: failing on purpose ({action} at {phase})\n")
    sys.stderr.flush()
    if action == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == "hang":
        while True:
            time.sleep(3600)
    elif action == "exit":
        os._exit(3)


class Case:
    """The worker's one case: loaded by :meth:`load`, then timed ``n`` runs per :meth:`run`."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.label = spec["label"]
        self.runner = None
        self.x = None

    def load(self) -> dict:
        s = self.spec
        fault("load", self.label)
        import_runtime(s["runtime"], s["delegate"])
        from edge.preprocessing import preprocess

        base = rss_mb()
        t = time.perf_counter()
        self.runner = make_runner(s["runtime"], s["model"], s["threads"], s["delegate"], s.get("gpu_precision"))
        load_ms = (time.perf_counter() - t) * 1000
        self.x = preprocess(s["image"], self.runner.preprocessing)[None]
        first_ms = time_once(self.runner, self.x)  # on a GPU: shader compilation included, kept apart
        meta: dict = {}
        if hasattr(self.runner, "adapter"):  # LiteRT GPU
            d = self.runner.describe()
            meta.update({"label": d["label"], "adapter": d["adapter"], "fully_accelerated": d["fully_accelerated"],
                         "gpu_not_supported": d["not_supported"]})
        if s["runtime"] == "executorch":  # the pool this process's only method was loaded with
            from executorch.extension.pybindings import portable_lib

            meta["executorch_pool_threads"] = int(portable_lib._threadpool_get_thread_count())
            from edge.runtime.native import xnnpack_builds

            meta["xnnpack_build"] = xnnpack_builds().get("executorch")  # the library this worker really mapped
        growth = rss_mb() - base
        for _ in range(s.get("warmup", 0)):
            time_once(self.runner, self.x)
        return {"load_ms": load_ms, "first_ms": first_ms, "rss_growth_mb": growth, "worker_base_rss_mb": base,
                "process_peak_rss_mb": peak_rss_mb(), "meta": meta, "worker_imports": heavy_imports(),
                "pid": os.getpid()}

    def run(self, n: int) -> list[float]:
        fault("run", self.label)
        return [time_once(self.runner, self.x) for _ in range(n)]

    def outputs(self, images: int):
        """The model's outputs on the first ``images`` shipped validation photos (0: all), in a fixed order: what
        the harness compares between two builds of the same runtime."""
        import numpy as np

        from benchmarks.devices import validation_photos
        from edge.preprocessing import preprocess_batch

        xs = preprocess_batch(validation_photos(images), self.runner.preprocessing).astype(np.float32)
        return np.stack([np.asarray(self.runner.predict(x[None]))[0] for x in xs])


def _error_reply(e: BaseException) -> tuple:
    from edge.errors import UserError

    try:
        from edge.runtime.gpu import GpuUnavailable
    except ImportError:  # no numpy/LiteRT pieces: cannot be a GPU row
        GpuUnavailable = ()  # type: ignore[assignment]
    if isinstance(e, GpuUnavailable):
        return ("unavailable", str(e), None)
    if isinstance(e, ImportError):  # a runtime this Python lacks: the case cannot run here
        return ("unavailable", f"{e.name or 'a runtime'} is not installed in this Python ({e})", None)
    if isinstance(e, (UserError, ValueError)):  # a bad file, a flag that does not apply: the message says which
        return ("error", str(e), None)
    # anything else is a bug (or a runtime's own exception): the case records it, with the traceback
    return ("error", f"{type(e).__name__}: {e}", traceback.format_exc())


def serve(rx: Connection, tx: Connection) -> int:
    case: Case | None = None
    while True:
        try:
            req = rx.recv()
        except (EOFError, OSError):  # the parent is gone
            return 0
        op = req[0]
        if op == "close":
            return 0
        try:
            if op == "load":
                case = Case(req[1])
                reply = ("ok", case.load())
            elif op == "run":
                reply = ("ok", case.run(int(req[1])))
            elif op == "outputs":
                reply = ("ok", case.outputs(int(req[1])))
            elif op == "memory":
                reply = ("ok", {"process_peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb()})
            else:
                reply = ("error", f"unknown request {op!r}", None)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as this case's reason
            reply = _error_reply(e)
        tx.send(reply)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rx = Connection(int(argv[0]), writable=False)
    tx = Connection(int(argv[1]), readable=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the run and closes workers
    faulthandler.enable()  # a native crash leaves the Python stack in the log the parent reads back
    return serve(rx, tx)


# ----------------------------------------------------------------------------- the parent's side
class WorkerFailed(Exception):
    """The worker died, hung or could not start; ``reason`` is one line, ``log`` its last output lines."""

    def __init__(self, reason: str, log: str = ""):
        super().__init__(reason)
        self.reason, self.log = reason, log


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "worker did not exit"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown signal"
        return f"worker killed by signal {-rc} ({name})"
    return f"worker exited with status {rc}"


class CaseWorker:
    """The parent's handle on one worker process: :meth:`call` sends a request and waits for the reply."""

    def __init__(self, label: str, env: dict | None = None):
        self.label = label
        self.log = tempfile.TemporaryFile(prefix="nasnet-bench-worker-")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, **(env or {}),
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        down_r, down_w = os.pipe()  # parent -> worker
        up_r, up_w = os.pipe()  # worker -> parent
        try:
            # its own session: a terminal's Ctrl-C reaches the parent only, which then stops the run cleanly
            self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.case_worker", str(down_r), str(up_w)],
                                         pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, env=env, start_new_session=True)
        except OSError as e:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise WorkerFailed(f"could not start a worker process ({e})") from None
        os.close(down_r)
        os.close(up_w)
        self.tx = Connection(down_w, readable=False)
        self.rx = Connection(up_r, writable=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            self.log.flush()
            self.log.seek(0)
            lines = self.log.read().decode(errors="replace").splitlines()
        except (OSError, ValueError):
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])[-3000:]

    def _died(self, what: str) -> WorkerFailed:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.returncode
        return WorkerFailed(f"{describe_exit(rc)} {what}", self.log_tail())

    def call(self, request: tuple, timeout: float, what: str = ""):
        """``(kind, payload, ...)`` of the worker's reply; :class:`WorkerFailed` when it dies or does not answer
        within ``timeout`` seconds (then it is killed)."""
        what = what or f"during '{request[0]}'"
        self.send(request, what)
        return self.receive(timeout, what)

    def send(self, request: tuple, what: str = "") -> None:
        """Send a request without waiting for its reply (:meth:`receive`): several workers can then run at once."""
        try:
            self.tx.send(request)
        except OSError:  # BrokenPipeError: it died before (or while) reading the request
            raise self._died(what or f"during '{request[0]}'") from None

    def receive(self, timeout: float, what: str = ""):
        """The reply to the last :meth:`send`, as :meth:`call` returns it."""
        if not self.rx.poll(timeout):
            self.kill()
            raise WorkerFailed(f"timed out after {timeout:g} s {what} (worker killed)", self.log_tail())
        try:
            return self.rx.recv()
        except (EOFError, OSError):
            raise self._died(what) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        """Ask it to exit; kill it if it does not within a few seconds."""
        if self.proc.poll() is None:
            try:
                self.tx.send(("close",))
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for c in (self.tx, self.rx):
            try:
                c.close()
            except OSError:
                pass
        self.log.close()


if __name__ == "__main__":
    sys.exit(main())
