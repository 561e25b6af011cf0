"""Runtimes behind one interface: LiteRT (``.tflite``), ExecuTorch (``.pte``), PyTorch and Keras weights.

Every runner takes a float NHWC batch made by :func:`edge.preprocessing.preprocess_batch` and returns
float32 logits ``(N, classes)``; quantized inputs and outputs are (de)quantized here from the model's
own tensor parameters. ``open_model`` picks the runner from the file and reads labels and preprocessing
from the manifest beside the artifact (or the metadata embedded in a ``.tflite``).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.model.config import Preprocessing
from edge.errors import ModelError
from edge.artifact.integrity import check_pte_header, probe_in_subprocess, verify_against_manifest
from edge.artifact.pte_inputs import channels_last_inputs, image_tensor
from edge.labels import Prediction, softmax, top_k
from edge.preprocessing import ImageLike, preprocess

log = logging.getLogger(__name__)

TFLITE_METADATA_NAME = "nasnet_edge_manifest"


class RuntimeKind(str, enum.Enum):
    LITERT = "litert"
    EXECUTORCH = "executorch"
    TORCH = "torch"
    KERAS = "keras"


class Delegate(str, enum.Enum):
    XNNPACK = "xnnpack"
    NONE = "none"  # LiteRT built-in (reference-style) kernels, no delegate
    GPU = "gpu"


@dataclass
class ModelInfo:
    labels: list[str]
    preprocessing: Preprocessing
    manifest: dict = field(default_factory=dict)


def manifest_path(artifact: str | os.PathLike) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def read_artifact_info(path: Path) -> ModelInfo:
    """Labels and preprocessing from the manifest beside the artifact, else from embedded metadata."""
    mp = manifest_path(path)
    manifest: dict = {}
    if mp.is_file():
        manifest = json.loads(mp.read_text())
    elif path.suffix == ".tflite":
        manifest = read_tflite_embedded_manifest(path) or {}
    labels = manifest.get("labels")
    pre = Preprocessing.from_dict(manifest["preprocessing"]) if "preprocessing" in manifest else Preprocessing()
    return ModelInfo(list(labels) if labels else [], pre, manifest)


def read_tflite_embedded_manifest(path: Path) -> dict | None:
    """The JSON this toolkit embeds as flatbuffer metadata (plus labels.txt in the appended zip)."""
    data = path.read_bytes()
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # tflite-runtime fallback devices: no schema module
        schema = None
    if schema is not None:
        model = schema.Model.GetRootAsModel(data, 0)
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            if md.Name().decode() == TFLITE_METADATA_NAME:
                buf = model.Buffers(md.Buffer())
                raw = buf.DataAsNumpy()
                if isinstance(raw, np.ndarray):
                    return json.loads(raw.tobytes().decode())
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError):
        return None


class Runner:
    """Common interface of every runtime wrapper."""

    kind: RuntimeKind
    path: Path | None
    info: ModelInfo

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.predict(x))

    def classify(self, image: ImageLike, k: int = 5, *, bgr: bool = True) -> list[Prediction]:
        x = preprocess(image, self.preprocessing, bgr=bgr)[None]
        return top_k(self.probabilities(x)[0], self.labels, k)

    def describe(self) -> dict:
        return {"runtime": self.kind.value, "path": str(self.path) if self.path else None}


class LiteRTRunner(Runner):
    kind = RuntimeKind.LITERT

    def __init__(self, path: str | os.PathLike, threads: int = 1, delegate: Delegate | str = Delegate.XNNPACK):
        self.path = Path(path)
        self.threads = threads
        self.delegate = Delegate(delegate)
        if self.delegate is Delegate.GPU:
            raise ModelError("LiteRT's GPU accelerator runs through the CompiledModel API: use "
                             "edge.runtime.gpu.LiteRTGpuRunner, or open_model(..., delegate='gpu')")
        verify_against_manifest(self.path)  # a damaged copy that would still load is named, not run
        Interpreter, OpResolverType = _litert()
        resolver = (OpResolverType.AUTO if self.delegate is Delegate.XNNPACK
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        from edge.quiet import captured_fds

        try:
            with captured_fds():  # LiteRT's native INFO/ERROR lines; failures are reported below
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads,
                                               experimental_op_resolver_type=resolver)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: LiteRT cannot load it ({str(e).splitlines()[0][:120]}); "
                             "is it a complete .tflite file?") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.info = read_artifact_info(self.path)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dt = self.input["dtype"]
        if dt == np.float32:
            return x.astype(np.float32)
        scale, zp = self.input["quantization"]
        info = np.iinfo(dt)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dt)

    def predict(self, x: np.ndarray) -> np.ndarray:
        outs = []
        float_input = self.input["dtype"] == np.float32
        shape = tuple(self.input["shape"][1:])
        for sample in np.asarray(x, dtype=np.float32):
            if float_input and sample.shape == shape:
                # one copy, straight into the interpreter's input buffer (astype + set_tensor made two: 29.9 us
                # against 16.5 us for a 256x256 frame, medians of 3000 interleaved calls on the AVX-512 VNNI
                # EPYC, 2026-12-08; ~0.5% of a two-thread int8 run); the view is dropped at once, as invoke requires
                self.interpreter.tensor(self.input["index"])()[0] = sample
            else:  # quantized input, or a wrong shape: set_tensor's own checks and message
                self.interpreter.set_tensor(self.input["index"], self._quantize(sample[None]))
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.output["index"])
            if y.dtype != np.float32:
                scale, zp = self.output["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            outs.append(y.reshape(-1))
        return np.stack(outs)

    def describe(self) -> dict:
        return {**super().describe(), "delegate": self.delegate.value, "threads": self.threads,
                "input_dtype": np.dtype(self.input["dtype"]).name}


def _litert():
    """LiteRT's Interpreter: ai-edge-litert, else tflite-runtime (frozen at 2.14, boards that have it)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore
        except ImportError:
            raise ModelError("no LiteRT runtime: pip install ai-edge-litert (or tflite-runtime on boards)") from None
    return Interpreter, OpResolverType


def size_executorch_threadpool(portable_lib, threads: int) -> None:
    """Size the process's one ExecuTorch XNNPACK thread pool (it ignores torch.set_num_threads), and only when its
    size differs: ``_unsafe_reset_threadpool`` frees the pool that methods loaded before still run on
    (docs/benchmarking.md, the crash of issue 20). Its cpuinfo probe prints native log lines to stderr, which would
    sit above any one-line error: they are captured."""
    from edge.quiet import captured_fds

    with captured_fds():  # the first call creates the pool
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchRunner(Runner):
    kind = RuntimeKind.EXECUTORCH

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        import torch

        from edge.quiet import captured_fds, quiet_executorch_import

        # A damaged .pte can abort this process inside the runtime (edge/artifact/integrity.py): check it first.
        check_pte_header(self.path)
        checked = verify_against_manifest(self.path) is not None
        from edge.runtime.native import preload_executorch_xnnpack

        preload_executorch_xnnpack()  # a user's own build of the XNNPACK backend, when NASNET_EDGE_EXECUTORCH_XNNPACK names one
        with quiet_executorch_import(), captured_fds():  # the import's native cpuinfo lines go to stderr
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

        size_executorch_threadpool(portable_lib, threads)

        # a program for a backend this runtime lacks (e.g. --backend vulkan on the pip wheel): say exactly that
        missing = missing_backends(self.path, registered_backends())
        if missing:
            raise ModelError(f"{self.path}: {missing[0]} is not registered in this ExecuTorch runtime "
                             f"(registered: {', '.join(registered_backends()) or 'none'}); the program was exported "
                             f"for {', '.join(missing)}: run it with an ExecuTorch runtime built with that backend, "
                             "or export with --backend xnnpack")
        if not checked:  # no manifest to vouch for it: load it once where a crash cannot take this process
            probe_in_subprocess(self.path)
        try:
            with captured_fds():  # the runtime's native cpuinfo/XNNPACK log lines
                program = Runtime.get().load_program(self.path)
                self.method = program.load_method("forward")
        except Exception as e:  # the pybindings raise RuntimeError/ValueError with C++ status text
            raise ModelError(f"{self.path}: ExecuTorch cannot load it ({str(e).splitlines()[0][:120]}); "
                             "is it a complete .pte file made for this ExecuTorch version?") from None
        if self.method is None:
            raise ModelError(f"{self.path}: program has no 'forward' method")
        self._torch = torch
        self.info = read_artifact_info(self.path)
        # Which 4-D inputs want channels-last (NHWC) bytes: ExecuTorch copies an input's bytes without checking
        # their order (edge/artifact/pte_inputs.py), so the order is read from the program and matched here.
        try:
            self.channels_last = channels_last_inputs(self.path)
        except ValueError:  # loaded above, so the runtime read it: fall back to the default (NCHW) order
            self.channels_last = []
        self.layout = "NHWC" if self.channels_last[:1] == [True] else "NCHW"

    def predict(self, x: np.ndarray) -> np.ndarray:
        nhwc = self.layout == "NHWC"
        outs = []
        for sample in np.asarray(x, dtype=np.float32):
            outs.append(self.method.execute((image_tensor(sample, nhwc),))[0].numpy().reshape(-1))
        return np.stack(outs)

    def execute(self, *inputs):
        """Run the program's ``forward`` on raw tensors (e.g. a per-cell program's x and p, 1xCxHxW), each
        given to the program in the memory order it declares, whatever the tensor's own."""
        torch = self._torch
        fed = []
        for i, t in enumerate(inputs):
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                cl = i < len(self.channels_last) and self.channels_last[i]
                t = t.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            fed.append(t)
        return [o.clone() for o in self.method.execute(tuple(fed))]

    def describe(self) -> dict:
        return {**super().describe(), "delegate": "xnnpack", "threads": self.threads, "input_layout": self.layout}


# Backend ids a .pte names in its delegate table (ExecuTorch's partitioners' backend names).
KNOWN_BACKENDS = ("XnnpackBackend", "VulkanBackend", "CoreMLBackend", "MPSBackend", "QnnBackend", "OpenvinoBackend",
                  "CudaBackend", "MetalBackend", "NeuronBackend", "EthosUBackend", "ArmBackend", "VgfBackend")


def registered_backends() -> list[str]:
    """Backends this ExecuTorch runtime has (``_get_registered_backend_names`` of the pybindings)."""
    from edge.quiet import quiet_executorch_import

    with quiet_executorch_import():
        from executorch.extension.pybindings import portable_lib
    return list(portable_lib._get_registered_backend_names())


def program_backends(path: Path) -> list[str]:
    """The delegate backends a ``.pte`` uses: the manifest's ``backend`` beside it when there is one, else the
    backend ids found in the program's delegate table (flatbuffer strings)."""
    mp = manifest_path(path)
    if mp.is_file():
        try:
            b = json.loads(mp.read_text()).get("backend")
        except (ValueError, OSError):
            b = None
        if isinstance(b, str) and b:
            name = {"xnnpack": "XnnpackBackend", "vulkan": "VulkanBackend", "coreml": "CoreMLBackend",
                    "qnn": "QnnBackend", "mps": "MPSBackend"}.get(b.lower())
            if name:
                return [name]
    head = path.read_bytes()[: 1 << 20]  # the delegate table precedes the (large) segment data
    return [b for b in KNOWN_BACKENDS if b.encode() in head]


def missing_backends(path: Path, registered: list[str]) -> list[str]:
    return [b for b in program_backends(path) if b not in registered]


def torch_device(model) -> "Any":
    """The device of a model's parameters (inputs must be placed there)."""
    p = next(iter(model.parameters()), None)
    if p is None:
        b = next(iter(model.buffers()), None)
        return b.device if b is not None else "cpu"
    return p.device


class TorchRunner(Runner):
    kind = RuntimeKind.TORCH

    def __init__(self, weights: str | os.PathLike = "default", threads: int = 0, model=None, source=None,
                 device: str = "cpu"):
        import torch

        from edge.model.sources import load_torch_model

        if threads:
            torch.set_num_threads(threads)
        self.threads = threads
        if model is None:
            model, source = load_torch_model(weights)
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ModelError("no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        self.device = torch.device(device)
        self.model, self.source = model.eval().to(self.device), source
        self.path = source.path if source is not None else None
        self.info = ModelInfo(source.labels if source else [], model.config.preprocessing,
                              {"source": source.describe()} if source else {})
        self._torch = torch

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits on the CPU: the input goes to the model's device, the output is read back (which waits for
        a CUDA model to finish; :meth:`synchronize` makes that explicit for timing)."""
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
            y = self.model(t.to(torch_device(self.model), non_blocking=False))
            out = y.float().cpu().numpy()
        self.synchronize()
        return out

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "threads": self.threads}


class KerasRunner(Runner):
    kind = RuntimeKind.KERAS

    def __init__(self, weights: str | os.PathLike = "default", model=None, source=None):
        from edge.model.sources import load_keras_model

        if model is None:
            model, source = load_keras_model(weights, classifier_activation=None)
        self.model, self.source = model, source
        self.path = source.path if source is not None else None
        self.info = ModelInfo(source.labels if source else [], source.config.preprocessing if source else
                              Preprocessing(), {})

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(x, np.float32), verbose=0, batch_size=16))


def open_model(model: str | os.PathLike, *, threads: int = 1, delegate: Delegate | str = Delegate.XNNPACK,
               runtime: RuntimeKind | str | None = None, gpu_precision: str = "fp16") -> Runner:
    """A runner for ``model``: a ``.tflite``, a ``.pte``, weights (``.pt``/``.h5``), or 'default'.

    ``delegate='gpu'``: a ``.tflite`` on LiteRT's GPU accelerator (``gpu_precision`` fp16 or fp32, see
    :mod:`edge.runtime.gpu`), weights on CUDA."""
    spec = str(model)
    delegate = Delegate(delegate)
    if runtime is not None and RuntimeKind(runtime) is RuntimeKind.KERAS:
        return KerasRunner(spec)
    if spec in ("default", "imagenet") or spec.endswith((".pt", ".pth", ".h5")):
        return TorchRunner(spec, threads=threads, device="cuda" if delegate is Delegate.GPU else "cpu")
    path = Path(spec)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix == ".tflite" and delegate is Delegate.GPU:
        from edge.runtime.gpu import LiteRTGpuRunner

        return LiteRTGpuRunner(path, precision=gpu_precision)
    if path.suffix == ".tflite":
        return LiteRTRunner(path, threads=threads, delegate=delegate)
    if path.suffix == ".pte":
        if delegate is Delegate.GPU:
            raise ModelError(f"{path}: no GPU for ExecuTorch here: VulkanBackend is not registered in this ExecuTorch "
                             "runtime (the pip wheel has none); export with --backend vulkan and run it with an "
                             "ExecuTorch runtime built with Vulkan")
        return ExecuTorchRunner(path, threads=threads)
    raise ModelError(f"{path}: unsupported model type '{path.suffix}' (expected .tflite, .pte, .pt or .h5)")
