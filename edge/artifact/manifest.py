"""The manifest of a converted artifact: one type, one set of keys, for LiteRT ``.tflite`` and ExecuTorch ``.pte``.

Every converter writes ``<artifact>.json`` beside its artifact from a :class:`Manifest` (and a ``.tflite`` embeds
:meth:`Manifest.embedded`, the part that describes the file itself). Readers take it back with
:meth:`Manifest.from_dict`, which also reads the manifests of the converters before this type (schema 1, no
``schema`` key): their delegation reports had ``fallback_ops``/``fallback`` (LiteRT) against ``outside_ops``/
``outside`` (ExecuTorch), the activation ranges sat under ``calibration`` (LiteRT) or ``quantization``
(ExecuTorch), and a shipped artifact (``edge/assets/models/*_int8.tflite``) still carries such a manifest.
Code that holds a bare delegation dict (a benchmark reading ``cells.json``) uses :func:`ops_outside`.

Only the standard library here: the runtime and the benchmarks read manifests without importing a converter.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

SCHEMA = "nasnet-edge-artifact/2"
CELLS_SCHEMA = "nasnet-edge-cells/2"
OUTPUT_VALUES = "logits (apply softmax for probabilities)"


class Format(str, enum.Enum):
    TFLITE = "tflite"
    PTE = "pte"


class Converter(str, enum.Enum):
    """Which conversion backend made the artifact (``converters.pipeline.Backend``)."""
    LITERT = "litert"
    EXECUTORCH = "executorch"


# ExecuTorch delegates -> the device class a manifest's ``target`` names (LiteRT's is its ``--target``)
DELEGATE_TARGETS = {"xnnpack": "cpu", "vulkan": "gpu", "coreml": "npu", "qnn": "npu"}


# ----------------------------------------------------------------------------- parts of a manifest
@dataclass
class Delegation:
    """How a delegate partitions the artifact, the same keys for both runtimes.

    ``ops``/``delegated_ops`` count the operators of the program (LiteRT: interpreter nodes; ExecuTorch: edge
    ops inside and outside delegate calls); None only in a schema-1 ExecuTorch manifest, which did not count
    them. ``outside``: operator -> count of those left outside any delegate partition (LiteRT's own kernels,
    ExecuTorch's portable kernels). ``detail``: what only one runtime reports (ExecuTorch: XNNPACK node types
    and converts, the partitioner's reasons; LiteRT ``--target gpu``: the GPU accelerator's report, ``gpu``).
    """
    delegate: str
    partitions: int
    outside: dict[str, int]
    ops: int | None = None
    delegated_ops: int | None = None
    detail: dict = field(default_factory=dict)

    @classmethod
    def from_counts(cls, delegate: str, partitions: int, delegated: Mapping[str, int], outside: Mapping[str, int],
                    detail: dict | None = None) -> Delegation:
        """From per-operator counts inside and outside the delegate (``ops`` and the totals follow from them)."""
        inside, left = Counter(delegated), Counter(outside)
        return cls(delegate, int(partitions), {k: int(v) for k, v in left.most_common()},
                   sum(inside.values()) + sum(left.values()), sum(inside.values()), dict(detail or {}))

    @property
    def ops_outside(self) -> int:
        return sum(self.outside.values())

    @property
    def fully_delegated(self) -> bool:
        return self.ops_outside == 0

    def summary(self) -> str:
        """One line for the converters' output: ``xnnpack: 1 partition(s), 708/708 ops delegated, 0 outside``."""
        counted = f", {self.delegated_ops}/{self.ops} ops delegated" if self.ops is not None else ""
        listed = f" ({', '.join(f'{k} x{v}' for k, v in self.outside.items())})" if self.outside else ""
        return f"{self.delegate}: {self.partitions} partition(s){counted}, {self.ops_outside} outside{listed}"

    def to_dict(self) -> dict:
        return {"delegate": self.delegate, "partitions": self.partitions, "ops": self.ops,
                "delegated_ops": self.delegated_ops, "ops_outside": self.ops_outside, "outside": dict(self.outside),
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Delegation:
        """Schema 2, or a schema-1 report (LiteRT ``fallback_ops``/``fallback``; ExecuTorch ``outside_ops``/
        ``outside`` with its XNNPACK node counts beside them)."""
        d = dict(d)
        if "ops_outside" in d:
            return cls(d["delegate"], d["partitions"], dict(d["outside"]), d.get("ops"), d.get("delegated_ops"),
                       dict(d.get("detail") or {}))
        if "fallback_ops" in d:  # schema 1, LiteRT
            return cls(d.get("delegate", "xnnpack"), d["partitions"], dict(d.get("fallback") or {}), d.get("ops"),
                       d.get("delegated_ops"))
        if "outside_ops" in d:  # schema 1, ExecuTorch (its delegate was the manifest's ``backend``)
            known = {"partitions", "outside_ops", "outside"}
            return cls(d.get("delegate", "xnnpack"), d["partitions"], dict(d.get("outside") or {}),
                       detail={k: v for k, v in d.items() if k not in known})
        raise ValueError(f"not a delegation report: keys {sorted(d)}")


def ops_outside(delegation: Mapping[str, Any] | None) -> int | None:
    """Ops left outside the delegate in a delegation report of either schema (None when there is none)."""
    if not delegation:
        return None
    return Delegation.from_dict(delegation).ops_outside


@dataclass
class IO:
    """What the artifact takes and gives: element types (``float``, ``int8``, ``uint8``) and the image layout."""
    input: str
    output: str
    layout: str  # the image bytes' order: NHWC (LiteRT; ExecuTorch xnnpack, sizes 1x3xHxW channels-last) or NCHW
    values: str = OUTPUT_VALUES

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str, fmt: str = Format.TFLITE.value) -> IO:
        if isinstance(d, str):  # schema 1: LiteRT's --io value, or ExecuTorch's sentence
            if fmt == Format.PTE.value:
                return cls("float", "float", "NCHW")
            return cls(d, d, "NHWC")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class Quantization:
    """How a quantized artifact was quantized (None in the manifest of a float one)."""
    scheme: str
    activation_ranges: dict | None = None  # converters/ranges.py: the method, and 'auto''s scores of both
    input_grid: dict | None = None  # LiteRT int8: the input on the pixel grid (converters/quantized_input.py)
    fp32_parts: list[str] | None = None  # ExecuTorch int8: parts left in fp32 (--fp32-parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quantization:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass
class Validation:
    """The artifact against the float reference network on held-out images (``converters.common.compare``),
    with the ``--fail-under-agreement`` gate, or why it was not run (``skipped``)."""
    reference: str
    images_folder: str | None = None
    unreadable_skipped: int = 0
    metrics: dict = field(default_factory=dict)  # images, top1_agreement (+ci95), max_abs_prob_diff, mean_kl, ...
    gate: dict = field(default_factory=dict)  # fail_under_agreement, passed (only with a threshold)
    skipped: str | None = None

    @property
    def passed(self) -> bool | None:
        return self.gate.get("passed")

    def to_dict(self) -> dict:
        # flat, as every reader reads it: validation.top1_agreement, validation.passed
        if self.skipped:
            return {"reference": self.reference, "skipped": self.skipped}
        return {"reference": self.reference, **self.metrics, "images_folder": self.images_folder,
                "unreadable_skipped": self.unreadable_skipped, **self.gate}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Validation:
        d = dict(d)
        gate = {k: d.pop(k) for k in ("fail_under_agreement", "passed") if k in d}
        return cls(d.pop("reference", ""), d.pop("images_folder", None), d.pop("unreadable_skipped", 0),
                   metrics={k: v for k, v in d.items() if k != "skipped"}, gate=gate, skipped=d.get("skipped"))


# ----------------------------------------------------------------------------- the manifest
@dataclass
class Manifest:
    """Everything a converter knows about one artifact (``<artifact>.json``)."""
    # identity
    format: str  # Format
    converter: str  # Converter
    backend: str  # the delegate the artifact is made for: xnnpack, gpu (LiteRT --target gpu), vulkan, ...
    target: str  # the device class: cpu, gpu, npu
    model: str
    precision: str
    lowered: bool
    artifact: str
    # how it was made
    plan: dict | None  # Plan.describe(): target, passes, sha256 (None in manifests made before the plan)
    source: dict
    config: dict
    labels: list[str]
    preprocessing: dict
    io: IO
    created: str = ""
    command: str = ""
    about: dict | None = None  # name, version, author, license, description (the standard TFLite metadata's)
    calibration: dict | None = None  # the calibration images (folder, count, files); None without calibration
    quantization: Quantization | None = None
    # what came out
    validation: Validation | None = None
    delegation: Delegation | None = None
    op_histogram: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0
    sha256: str = ""
    tools: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    cells: dict | None = None  # folder, manifest, count, ops_outside of a --cells export
    schema: str = SCHEMA

    # the keys a .tflite embeds (what the file is and how to feed it; nothing that changes between two runs)
    EMBEDDED = ("schema", "format", "converter", "backend", "target", "model", "precision", "lowered", "plan",
                "labels", "preprocessing", "io", "about")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"schema": self.schema}  # first: what a reader checks before anything else
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else _plain(value)
        return out

    def embedded(self) -> dict:
        """What a ``.tflite`` carries inside (``nasnet_edge_manifest`` and ``manifest.json``): labels and
        preprocessing for every client, the artifact's identity, no times or paths."""
        d = self.to_dict()
        return {k: d[k] for k in self.EMBEDDED}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """A manifest as written (schema 2), or one of the converters before it (schema 1)."""
        d = dict(d)
        if d.get("schema") != SCHEMA:
            d = _upgrade_schema_1(d)
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"manifest keys not in schema {SCHEMA}: {sorted(unknown)}")
        d["io"] = IO.from_dict(d["io"], d["format"])
        for key, kind in (("quantization", Quantization), ("validation", Validation), ("delegation", Delegation)):
            if d.get(key) is not None:
                d[key] = kind.from_dict(d[key])
        return cls(**d)


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _upgrade_schema_1(d: dict) -> dict:
    """A schema-1 manifest's keys as schema 2 names them (nothing is dropped)."""
    fmt = d.get("format", Format.TFLITE.value)
    out = dict(d)
    out["schema"] = SCHEMA
    out.setdefault("plan", None)  # manifests before the compiled plan have none
    out.pop("output", None)  # LiteRT's "logits (apply softmax ...)": IO.values
    if fmt == Format.PTE.value:
        out["converter"] = Converter.EXECUTORCH.value
        out["target"] = DELEGATE_TARGETS.get(d.get("backend", "xnnpack"), d.get("backend", "xnnpack"))
        if out.get("delegation") is not None:
            out["delegation"] = {"delegate": d.get("backend", "xnnpack"), **out["delegation"]}
    else:
        out["converter"] = Converter.LITERT.value
        out["backend"] = "gpu" if d.get("target") == "gpu" else "xnnpack"
        out.setdefault("target", "cpu")
    calibration = dict(out["calibration"]) if out.get("calibration") else None
    ranges = calibration.pop("activation_ranges", None) if calibration else None
    grid = out.pop("input_grid", None)
    if out.get("quantization") is None and (ranges is not None or grid is not None):
        out["quantization"] = {"scheme": "TFLite full-integer post-training", "activation_ranges": ranges,
                               "input_grid": grid}
    out["calibration"] = calibration
    if out.get("delegation") is not None:
        delegation = Delegation.from_dict(out["delegation"])
        gpu = out.pop("delegation_gpu", None)
        if gpu is not None:
            delegation.detail["gpu"] = gpu
        out["delegation"] = delegation.to_dict()
    stage = out.get("stage_seconds") or {}
    if "export_breakdown" in stage:  # ExecuTorch's steps of its export stage
        stage = dict(stage)
        stage["convert_steps"] = stage.pop("export_breakdown")
        out["stage_seconds"] = stage
    if out.get("cells") and "outside_ops" in out["cells"]:
        out["cells"] = {**out["cells"], "ops_outside": out["cells"]["outside_ops"]}
        del out["cells"]["outside_ops"]
    return out


# ----------------------------------------------------------------------------- --cells
@dataclass
class PartEntry:
    """One part (stem, a cell, the head) of a ``--cells`` export."""
    index: int
    name: str
    file: str
    precision: str
    inputs: list[list[int]]  # per input, its shape without the batch
    layout: str
    output: list[int]
    macs: int
    params: int
    size_bytes: int
    delegation: Delegation
    convert_seconds: dict | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["delegation"] = self.delegation.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartEntry:
        d = dict(d)
        d["delegation"] = Delegation.from_dict(d["delegation"])
        d.setdefault("layout", "NHWC")
        d.setdefault("convert_seconds", d.pop("export_seconds", None))
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class CellsManifest:
    """``cells/cells.json``: the parts of a ``--cells`` export in order."""
    format: str
    converter: str
    backend: str
    model: str
    precision: str
    lowered: bool
    plan: dict
    parts: list[PartEntry]
    schema: str = CELLS_SCHEMA

    @property
    def total_macs(self) -> int:
        return sum(p.macs for p in self.parts)

    @property
    def ops_outside(self) -> int:
        return sum(p.delegation.ops_outside for p in self.parts)

    def to_dict(self) -> dict:
        return {"schema": self.schema, "format": self.format, "converter": self.converter, "backend": self.backend,
                "model": self.model, "precision": self.precision, "lowered": self.lowered, "plan": self.plan,
                "parts": [p.to_dict() for p in self.parts], "total_macs": self.total_macs,
                "ops_outside": self.ops_outside}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellsManifest:
        fmt = d.get("format") or ("pte" if d["parts"] and d["parts"][0]["file"].endswith(".pte") else "tflite")
        converter = d.get("converter") or (Converter.EXECUTORCH.value if fmt == "pte" else Converter.LITERT.value)
        return cls(fmt, converter, d.get("backend", "xnnpack"), d["model"], d["precision"], d["lowered"],
                   d.get("plan") or {}, [PartEntry.from_dict(p) for p in d["parts"]])
