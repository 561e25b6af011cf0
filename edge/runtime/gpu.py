"""LiteRT's GPU accelerator behind the :class:`~edge.runtime.Runner` interface.

ai-edge-litert 2.3 ships one GPU accelerator, WebGPU (Dawn) over Vulkan, reached through the
``CompiledModel`` API (not the Interpreter). It runs on any Vulkan driver, Mesa 25's lavapipe (software
Vulkan on the CPU) included, which is how CI runs the GPU rows (``docs/gpu.md``). Three facts shape this
module, all measured with LiteRT 2.3 on lavapipe:

- a run is asynchronous (``run_by_index`` returns in milliseconds, the result is ready only when read),
  so every timing here goes through the output read;
- the first run of a model compiles its shaders (about 85 s for NASNet-Mobile on lavapipe): it is timed
  and reported apart from the steady state;
- a process that has imported TensorFlow crashes (SIGSEGV) when it creates a CompiledModel: when
  TensorFlow is loaded, the model runs in a worker process (``python -m edge.runtime.gpu_worker``) that
  never imports it, behind the same interface.

Precision: ``fp16`` (the accelerator's default, as on phones: fp16 arithmetic inside) or ``fp32``
(``GpuOptions(enforce_f32=True)``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.runtime.runners import ModelError, ModelInfo, Runner, RuntimeKind, read_artifact_info

log = logging.getLogger(__name__)

GPU_PRECISIONS = ("fp16", "fp32")
SOFTWARE_LABEL = "software Vulkan ({driver}): functional check, not a GPU timing"
_ADAPTER_RE = re.compile(r"Selected adapter: (?P<name>.+?), arch=(?P<arch>[^,]*), vendor=(?P<vendor>[^,]*), "
                         r"backend=(?P<backend>[^,]*), adapterType=(?P<type>[^\r\n]+)")


class GpuUnavailable(ModelError):
    """No GPU adapter here (no Vulkan loader, no driver, or one the accelerator rejects); the message says which."""


def check_precision(precision: str) -> str:
    if precision not in GPU_PRECISIONS:
        raise ModelError(f"unknown GPU precision '{precision}' (fp16, fp32)")
    return precision


def mesa_version() -> str | None:
    """The installed Mesa Vulkan drivers' version (Debian package), if any."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mesa-vulkan-drivers"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", out.stdout.strip()) if out.returncode == 0 else None
    return m.group(1) if m else None


def parse_adapter(log_text: str) -> dict | None:
    """The adapter Dawn selected, from the accelerator's log line; None if none was selected."""
    m = _ADAPTER_RE.search(log_text)
    if not m:
        return None
    a = {k: v.strip() for k, v in m.groupdict().items()}
    a["software"] = "software" in (a["arch"] + a["type"]).lower() or a["name"].startswith("llvmpipe")
    return a


def timing_label(adapter: dict | None) -> str:
    """How to read a GPU timing on this adapter: software Vulkan timings are functional checks only."""
    if adapter is None:
        return "no GPU adapter"
    if adapter.get("software"):
        driver = "lavapipe" if adapter["name"].startswith("llvmpipe") else adapter["name"]
        mesa = mesa_version() if adapter.get("vendor") == "mesa" else None
        return SOFTWARE_LABEL.format(driver=f"{driver}, Mesa {mesa}" if mesa else driver)
    return f"GPU: {adapter['name']} ({adapter['backend']})"


def unavailable_reason(log_text: str, error: str = "") -> str:
    """One line saying why no GPU model could be made, from the accelerator's own log lines."""
    text = log_text + "\n" + error
    if "Couldn't load Vulkan" in text or "libvulkan.so" in text:
        return ("no Vulkan loader (libvulkan.so.1): install a Vulkan driver, e.g. Mesa 25 lavapipe "
                "(bash scripts/setup.sh; docs/gpu.md)")
    if "shaderUniform" in text or "ArrayDynamicIndexing" in text:
        return ("the Vulkan driver lacks features WebGPU needs (Mesa < 25 lavapipe?): install Mesa 25 from "
                "bookworm-backports (bash scripts/setup.sh; docs/gpu.md)")
    if "No adapters found" in text or "adapter" in text.lower() and "not found" in text.lower():
        return "no GPU adapter: no Vulkan driver (ICD) found; install Mesa 25 lavapipe or a GPU driver (docs/gpu.md)"
    if "GpuAccelerator" in text and "not" in text and "found" in text:
        return "this ai-edge-litert has no GPU accelerator library (libLiteRtWebGpuAccelerator.so)"
    first = next((ln.strip() for ln in error.splitlines() if ln.strip()), "") or "unknown error"
    return f"LiteRT could not create a GPU model: {first[:200]}"


def _not_supported_lines(log_text: str) -> list[str]:
    keys = ("not supported", "unsupported", "fall back", "fallback", "Following operations")
    return [ln.strip()[:300] for ln in log_text.splitlines() if any(k in ln for k in keys)][:20]


@dataclass
class _IO:
    names: list[str]  # signature keys, in the model's subgraph input (or output) order
    shapes: list[list[int]]
    dtypes: list[np.dtype]
    quant: list[tuple[float, int] | None]  # (scale, zero point) of int8/uint8 tensors
    sizes: list[int] = field(default_factory=list)  # elements


def _tensor_quantization(path: Path) -> dict[int, tuple[float, int]]:
    """{tensor index: (scale, zero point)} of the first subgraph's quantized inputs/outputs."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    sg = model.Subgraphs(0)
    out = {}
    for t in [sg.Inputs(i) for i in range(sg.InputsLength())] + [sg.Outputs(i) for i in range(sg.OutputsLength())]:
        q = sg.Tensors(t).Quantization()
        if q is not None and q.ScaleLength():
            out[int(t)] = (float(q.Scale(0)), int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0)
    return out


def _subgraph_order(path: Path) -> tuple[list[int], list[int]]:
    from ai_edge_litert import schema_py_generated as schema

    sg = schema.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    return ([int(sg.Inputs(i)) for i in range(sg.InputsLength())],
            [int(sg.Outputs(i)) for i in range(sg.OutputsLength())])


class GpuModel:
    """One ``.tflite`` compiled for LiteRT's GPU accelerator, in this process (which must not import TensorFlow).

    ``run`` takes and returns arrays in the model's own input/output order and dtypes (as the Interpreter's
    ``get_input_details`` lists them); ``first_run_ms`` is the first run, shader compilation included.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "fp16"):
        if "tensorflow" in sys.modules:
            raise ModelError("a LiteRT GPU model cannot run in a process that has imported TensorFlow (it crashes); "
                             "use LiteRTGpuRunner, which runs it in a worker process then")
        self.path = Path(path)
        self.precision = check_precision(precision)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        try:
            from ai_edge_litert.compiled_model import CompiledModel, GpuOptions, HardwareAccelerator, Options
        except ImportError as e:
            raise GpuUnavailable(f"no LiteRT CompiledModel API ({e}): pip install ai-edge-litert>=2.3") from None
        from edge.quiet import captured_fds

        opts = Options(hardware_accelerators=HardwareAccelerator.GPU,
                       gpu_options=GpuOptions(enforce_f32=precision == "fp32"))
        t = time.perf_counter()
        err = ""
        with captured_fds() as cap:
            try:
                self.model = CompiledModel.from_file(str(self.path), options=opts)
            except Exception as e:  # the wrapper raises RuntimeError with the C++ status
                self.model, err = None, str(e)
            cap.seek(0)
            self.log = cap.read().decode(errors="replace")
        self.load_ms = (time.perf_counter() - t) * 1000
        self.adapter = parse_adapter(self.log)
        if self.model is None:
            if self.adapter is None:
                raise GpuUnavailable(unavailable_reason(self.log, err))
            raise ModelError(f"{self.path}: LiteRT's GPU accelerator cannot compile it "
                             f"({(err.splitlines() or ['?'])[0][:200]})")
        self.fully_accelerated = self.model.is_fully_accelerated()
        self.not_supported = _not_supported_lines(self.log)
        self._setup_io()
        self.first_run_ms: float | None = None

    def _setup_io(self) -> None:
        sig = self.model.get_signature_list()
        key = next(iter(sig))
        in_details = self.model.get_input_tensor_details(key)
        out_details = self.model.get_output_tensor_details(key)
        in_order, out_order = _subgraph_order(self.path)
        quant = _tensor_quantization(self.path)

        def io(details: dict, order: list[int]) -> tuple[_IO, list[int]]:
            keys = list(details)  # signature order (what create_*_buffers follow)
            by_tensor = {int(details[k]["index"]): k for k in keys}
            names = [by_tensor[t] for t in order if t in by_tensor] if set(by_tensor) <= set(order) else keys
            perm = [keys.index(n) for n in names]
            d = [details[n] for n in names]
            return _IO(names, [list(x["shape"]) for x in d], [np.dtype(x["dtype"]) for x in d],
                       [quant.get(int(x["index"])) if np.dtype(x["dtype"]).kind in "iu" else None for x in d],
                       [int(np.prod(x["shape"])) for x in d]), perm

        self.inputs, self._in_perm = io(in_details, in_order)
        self.outputs, self._out_perm = io(out_details, out_order)
        self._in_buffers = self.model.create_input_buffers(0)
        self._out_buffers = self.model.create_output_buffers(0)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs.names):
            raise ModelError(f"{self.path.name}: {len(self.inputs.names)} input(s) expected, got {len(inputs)}")
        t = time.perf_counter()
        for i, x in enumerate(inputs):
            want = self.inputs.shapes[i]
            x = np.ascontiguousarray(x, dtype=self.inputs.dtypes[i])
            if list(x.shape) != want:
                raise ModelError(f"{self.path.name}: input {self.inputs.names[i]} has shape {list(x.shape)}, "
                                 f"the model takes {want}")
            self._in_buffers[self._in_perm[i]].write(x)
        if self.first_run_ms is None:  # shader compilation: the accelerator logs its progress natively
            from edge.quiet import captured_fds

            with captured_fds():
                outs = self._run_and_read()
            self.first_run_ms = (time.perf_counter() - t) * 1000
            return outs
        return self._run_and_read()

    def _run_and_read(self) -> list[np.ndarray]:
        # asynchronous: run_by_index returns before the GPU is done; reading the outputs waits for it
        self.model.run_by_index(0, self._in_buffers, self._out_buffers)
        return [self._out_buffers[self._out_perm[i]].read(self.outputs.sizes[i], self.outputs.dtypes[i])
                .reshape(self.outputs.shapes[i]) for i in range(len(self.outputs.names))]

    def describe(self) -> dict:
        return {"accelerator": "LiteRT GPU (WebGPU over Vulkan)", "precision": self.precision,
                "adapter": self.adapter, "label": timing_label(self.adapter),
                "fully_accelerated": self.fully_accelerated, "not_supported": self.not_supported,
                "load_ms": round(self.load_ms, 1),
                "first_run_ms": None if self.first_run_ms is None else round(self.first_run_ms, 1),
                "inputs": [{"name": n, "shape": s, "dtype": d.name} for n, s, d in
                           zip(self.inputs.names, self.inputs.shapes, self.inputs.dtypes)]}

    def close(self) -> None:
        self._in_buffers = self._out_buffers = []
        self.model = None


# ----------------------------------------------------------------------------- the worker process
def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


class GpuWorker:
    """:class:`GpuModel` in a child process that never imports TensorFlow; the same ``run`` and attributes."""

    def __init__(self, path: str | os.PathLike, precision: str = "fp16", timeout: float = 900.0):
        self.path = Path(path)
        self.precision = check_precision(precision)
        self.timeout = timeout
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.runtime.gpu_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        hello = self._call(("open", str(self.path), precision))
        for k, v in hello.items():
            setattr(self, k, v)

    def _call(self, request):
        try:
            _send(self.proc.stdin, request)
            kind, payload = _recv(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            rc = self.proc.wait(timeout=30)
            raise ModelError(f"{self.path.name}: the GPU worker process died (exit status {rc}"
                             f"{', a crash in the GPU driver or LiteRT' if rc < 0 else ''})") from None
        if kind == "error":
            cls, msg = payload
            raise (GpuUnavailable if cls == "GpuUnavailable" else ModelError)(msg)
        return payload

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outs, first = self._call(("run", [np.ascontiguousarray(x) for x in inputs]))
        if getattr(self, "first_run_ms", None) is None:
            self.first_run_ms = first
        return outs

    def describe(self) -> dict:
        return self._call(("describe",))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                _send(self.proc.stdin, ("close",))
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def worker_main() -> int:
    """``python -m edge.runtime.gpu_worker``: serve one GPU model over stdin/stdout (length-prefixed pickles)."""
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything native writes to stdout must not corrupt the protocol
    proto_in = sys.stdin.buffer
    model = None
    while True:
        try:
            req = _recv(proto_in)
        except EOFError:
            return 0
        try:
            if req[0] == "open":
                model = GpuModel(req[1], req[2])
                reply = {k: getattr(model, k) for k in ("adapter", "fully_accelerated", "not_supported", "load_ms",
                                                         "inputs", "outputs", "log")}
                reply["first_run_ms"] = None
            elif req[0] == "run":
                outs = model.run(req[1])
                reply = (outs, model.first_run_ms)
            elif req[0] == "describe":
                reply = model.describe()
            elif req[0] == "close":
                return 0
            else:
                raise ModelError(f"unknown request {req[0]!r}")
            _send(proto_out, ("ok", reply))
        except ModelError as e:
            _send(proto_out, ("error", (type(e).__name__, str(e))))


def open_gpu_model(path: str | os.PathLike, precision: str = "fp16", isolate: bool | None = None):
    """A :class:`GpuModel`, or a :class:`GpuWorker` when ``isolate`` (default: when TensorFlow is imported)."""
    if isolate is None:
        isolate = "tensorflow" in sys.modules
    return GpuWorker(path, precision) if isolate else GpuModel(path, precision)


# ----------------------------------------------------------------------------- the runner
class LiteRTGpuRunner(Runner):
    """A ``.tflite`` classifier on LiteRT's GPU accelerator: float NHWC batch in, float32 logits out."""

    kind = RuntimeKind.LITERT

    def __init__(self, path: str | os.PathLike, precision: str = "fp16", isolate: bool | None = None):
        self.path = Path(path)
        self.precision = check_precision(precision)
        self.gpu = open_gpu_model(self.path, precision, isolate)
        if len(self.gpu.inputs.names) != 1:
            raise ModelError(f"{self.path}: {len(self.gpu.inputs.names)} inputs; a classifier takes one image "
                             "(per-cell parts: use edge.runtime.gpu.open_gpu_model)")
        self.info: ModelInfo = read_artifact_info(self.path)

    @property
    def first_run_ms(self) -> float | None:
        return self.gpu.first_run_ms

    @property
    def adapter(self) -> dict | None:
        return self.gpu.adapter

    @property
    def label(self) -> str:
        return timing_label(self.gpu.adapter)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dt, q = self.gpu.inputs.dtypes[0], self.gpu.inputs.quant[0]
        if dt == np.float32 or q is None:
            return x.astype(dt)
        scale, zp = q
        info = np.iinfo(dt)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dt)

    def predict(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for sample in np.asarray(x, dtype=np.float32):
            y = self.gpu.run([self._quantize(sample[None])])[0]
            q = self.gpu.outputs.quant[0]
            if y.dtype != np.float32:
                scale, zp = q if q is not None else (1.0, 0)
                y = (y.astype(np.float32) - zp) * scale
            outs.append(y.reshape(-1))
        return np.stack(outs)

    def describe(self) -> dict:
        return {**super().describe(), "delegate": "gpu", **self.gpu.describe()}

    def close(self) -> None:
        self.gpu.close()
