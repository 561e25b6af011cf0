"""One benchmark record (a row of ``results.json``) for every target: local, SSH boards and adb phones.

Every producer builds a :class:`Record` (``benchmarks.run.case_record`` for local cases,
``benchmarks.devices.ssh_record`` for boards, ``benchmarks.devices.run_adb`` for phones) and every consumer
(the Markdown table, the plot, ratios, the recommendation, ``benchmarks.compare``) reads rows back through
:meth:`Record.from_dict`, so a row means the same whichever target made it.

The rule that makes medians, percentiles and ratios comparable: a record stores the time of every timed run
(``times_ms``) and the statistics are computed from them in one place (:attr:`Record.latency_ms`, with
:func:`benchmarks.stats.summarize`), never copied from a tool's printout. A device tool that cannot give
per-run times leaves ``times_ms`` empty and its printed statistics in ``summary_ms`` (a mean stays a mean);
such a row says so (``timing: "summary"``) and :meth:`Record.ratio_skip_reason` says why ratios leave it out.

Environment and output verification stay per device in the result document (``devices[<device>]``): a device
is described once, not in each of its rows, and a record names its device in ``device``.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from converters.common import Precision
from edge.artifact.manifest import ops_outside
from edge.errors import UserError
from edge.runtime.runners import Delegate, RuntimeKind

# Times are kept to 0.1 us: finer digits are timer noise, and rounding once here (for every producer) makes
# the statistics of a record the statistics of exactly what its JSON holds.
TIME_DECIMALS = 4


class RecordError(UserError):
    """A benchmark record that cannot be read (a damaged or foreign results.json)."""


class Status(str, enum.Enum):
    OK = "ok"
    ERROR = "error"  # it was tried and failed: ``reason`` says how (a crash, a timeout, a bad file)
    UNAVAILABLE = "unavailable"  # it cannot run on that device at all: ``reason`` says what is missing


class Timing(str, enum.Enum):
    """Where a record's latency statistics come from."""

    PER_RUN = "per-run"  # ``times_ms`` holds every timed run; median, p90, p99 ... are computed from them
    SUMMARY = "summary"  # the device tool printed summary statistics only (``summary_ms``); no per-run times
    NONE = "none"  # nothing was timed (an error or unavailable row)


def _enum(kind: type[enum.Enum], value: Any, what: str):
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise RecordError(f"unknown {what} {value!r} (expected one of: "
                          f"{', '.join(str(m.value) for m in kind)})") from None


def _number(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise RecordError(f"a time must be a number, not {x!r}") from None
    if not math.isfinite(v):
        raise RecordError(f"a time must be a finite number, not {x!r}")
    return round(v, TIME_DECIMALS)


@dataclass
class Record:
    """One case (model x runtime x delegate x threads [x GPU precision]) on one device, and what was measured.

    Fields that do not apply to a row (memory a phone tool does not report, a GPU adapter on a CPU row) are
    ``None`` and absent from its JSON. Derived values (``name``, ``latency_ms``, ``timing``) are properties:
    written by :meth:`to_dict`, recomputed (not trusted) by :meth:`from_dict`.
    """

    # --- identity of the case
    model: str  # the artifact's path on the machine that ran the harness, or "default"
    runtime: RuntimeKind
    delegate: Delegate
    threads: int
    device: str = "local"  # local, ssh://user@host:port, adb or adb:SERIAL (a key of the result's "devices")
    gpu_precision: Precision | None = None  # LiteRT GPU rows: fp16 (the accelerator's default) or fp32
    status: Status = Status.OK
    reason: str = ""  # why a row is not ok, one line
    # --- the artifact: its file and its manifest (artifact_facts)
    size_bytes: int | None = None
    precision: Precision | None = None
    lowered: bool | None = None
    format: str | None = None  # "tflite" or "pte", from the manifest
    network: str | None = None  # manifest model + source weights: what the recommendation compares within
    top1_agreement: float | None = None  # manifest validation report, against the fp32 reference network
    validation_images: int | None = None
    validation_reference: str | None = None
    # --- delegation: how much of the graph the accelerator runs
    partitions: int | None = None
    ops_outside: int | str | None = None  # ops outside the delegate, on the runtime's own kernels; a GPU row may say "some (...)"
    fully_accelerated: bool | None = None  # LiteRT GPU rows
    adapter: dict | None = None  # LiteRT GPU rows: the adapter LiteRT picked
    label: str | None = None  # LiteRT GPU rows, e.g. "functional check, not a GPU timing"
    gpu_not_supported: list | None = None  # LiteRT GPU rows: what the accelerator left to the CPU
    executorch_pool_threads: int | None = None  # the XNNPACK pool the method ran on
    xnnpack_build: dict | None = None  # ExecuTorch rows: the XNNPACK backend library mapped and its compiler
    outputs_vs_wheel: dict | None = None  # rows of another XNNPACK build: outputs against the wheel build's
    emulated: bool | None = None  # SSH boards: the board is emulated (qemu); latencies are functional checks
    # --- timings (milliseconds)
    times_ms: list[float] = field(default_factory=list)  # every timed run, in the order they ran
    # --scaling-ceiling, 1-thread rows: N copies of this case, each its own worker, run at once in every round
    concurrent_copies: int | None = None
    concurrent_times_ms: list[float] | None = None  # every copy's runs while all N ran
    load_ms: float | None = None
    first_ms: float | None = None  # the first inference after loading (GPU: shader compilation included)
    summary_ms: dict | None = None  # a device tool's printed statistics, only where it gave no per-run times
    timing_method: str | None = None  # how times were taken where not by the harness's own loop (adb tools)
    # --- memory
    rss_growth_mb: float | None = None  # local: resident growth from the load and first run
    process_peak_rss_mb: float | None = None  # local: the case's worker process's peak (VmHWM)
    worker_base_rss_mb: float | None = None
    peak_growth_mb: float | None = None
    peak_memory_mb: float | None = None  # adb: the peak footprint benchmark_model reports for its process
    memory_scope: str | None = None  # whose memory the figures are
    worker_imports: list | None = None
    worker_pid: int | None = None
    # --- a failure's details
    completed_runs: int | None = None
    worker_log: str | None = None
    traceback: str | None = None
    # keys this version does not know (a newer file, an older field since dropped): kept, written back as they are
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runtime = _enum(RuntimeKind, self.runtime, "runtime")
        self.delegate = _enum(Delegate, self.delegate, "delegate")
        self.status = _enum(Status, self.status, "status")
        self.precision = _enum(Precision, self.precision, "precision")
        self.gpu_precision = _enum(Precision, self.gpu_precision, "GPU precision")
        try:
            self.threads = int(self.threads)
        except (TypeError, ValueError):
            raise RecordError(f"threads must be a whole number, not {self.threads!r}") from None
        self.times_ms = [_number(t) for t in self.times_ms]

    # ------------------------------------------------------------------ derived
    @property
    def name(self) -> str:
        return Path(self.model).name

    @property
    def timing(self) -> Timing:
        if self.times_ms:
            return Timing.PER_RUN
        return Timing.SUMMARY if self.summary_ms else Timing.NONE

    @property
    def latency_ms(self) -> dict | None:
        """median, p90, p99, mean, std, min, max, n of ``times_ms``: the one place statistics are computed."""
        from benchmarks.stats import summarize

        return summarize(self.times_ms) if self.times_ms else None

    @property
    def median_ms(self) -> float | None:
        """The median: of the per-run times, else one a device tool computed itself (never its mean)."""
        if self.times_ms:
            return self.latency_ms["median"]
        return (self.summary_ms or {}).get("median")

    @property
    def measured(self) -> bool:
        """An ok row with a median to rank it by (the recommendation's candidates)."""
        return self.status is Status.OK and self.median_ms is not None

    @property
    def delegate_label(self) -> str:
        label = f"{self.delegate.value}/{self.gpu_precision.value}" if self.gpu_precision else self.delegate.value
        if self.xnnpack_build and self.xnnpack_build.get("override"):  # another build of ExecuTorch's XNNPACK
            label += f" ({self.xnnpack_build.get('label') or (self.xnnpack_build.get('compiler') or 'own').split(' (')[0]} build)"
        return label

    @property
    def case(self) -> str:
        """The case as tables name it: file, runtime/delegate/threads."""
        return f"{self.name} {self.runtime.value}/{self.delegate_label}/{self.threads}t"

    @property
    def peak_mb(self) -> float | None:
        """The peak memory of the process that ran the case, as this target measures it (``memory_scope``)."""
        return self.process_peak_rss_mb if self.process_peak_rss_mb is not None else self.peak_memory_mb

    def ratio_skip_reason(self) -> str | None:
        """Why this row cannot take part in a ratio (None when it can): a ratio's noise interval is a bootstrap
        over the runs of both rows, so a row needs its per-run times."""
        if self.status is not Status.OK:
            return f"{self.status.value}: {' '.join(self.reason.split())}"
        if self.times_ms:
            return None
        s = self.summary_ms or {}
        what = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()
                         if k in ("mean", "median", "n"))
        return ("no per-run times: the device tool reported summary statistics only"
                + (f" ({what})" if what else "") + "; a ratio's noise interval needs every run")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """The row as ``results.json`` holds it: None fields left out, derived statistics written beside the
        per-run times they come from, unknown keys read from an older or newer file written back."""
        out: dict = {"model": self.model, "name": self.name}
        for f in fields(self):
            if f.name in ("model", "extra"):
                continue
            v = getattr(self, f.name)
            if v is None or (f.name == "reason" and not v) or (f.name == "times_ms" and not v):
                continue
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        if self.timing is not Timing.NONE:
            out["timing"] = self.timing.value
            out["latency_ms"] = self.latency_ms  # None for a summary row: its figures are in summary_ms
            if out["latency_ms"] is None:
                del out["latency_ms"]
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        """A row of ``results.json`` (this version's, or an older one's) as a record.

        ``Record.from_dict(r.to_dict()) == r``. Derived keys are recomputed. Rows written before every target
        kept per-run times: their ``latency_ms`` becomes ``summary_ms`` (what was printed, not recomputable),
        and an adb row's ``median``, which held the tool's mean, is dropped.
        """
        if not isinstance(d, dict):
            raise RecordError(f"a benchmark record is a JSON object, not {type(d).__name__}")
        missing = [k for k in ("model", "runtime", "delegate", "threads") if k not in d]
        if missing:
            raise RecordError(f"benchmark record lacks {', '.join(repr(k) for k in missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        derived = {"name", "timing", "latency_ms"}
        d = {**d}
        if "fallback_ops" in d:  # results written before the manifests' keys were reconciled
            d.setdefault("ops_outside", d.pop("fallback_ops"))
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known and k not in derived}
        kwargs.setdefault("status", Status.OK)
        kwargs["times_ms"] = list(d.get("times_ms") or [])
        if not kwargs["times_ms"] and d.get("latency_ms") and not d.get("summary_ms"):
            legacy = dict(d["latency_ms"])
            if str(d.get("device", "")).startswith("adb") and legacy.get("median") == legacy.get("mean"):
                legacy.pop("median", None)  # the old adb parser stored the tool's mean under "median"
            kwargs["summary_ms"] = legacy
        return cls(**kwargs, extra=extra)

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_artifact(cls, model: str | Path, runtime: RuntimeKind | str, delegate: Delegate | str, threads: int,
                     device: str = "local", **measured: Any) -> "Record":
        """A record of ``model`` with what its file and manifest say (:func:`artifact_facts`) filled in, the
        same way for every target; ``measured`` are the fields the target measured."""
        return cls(model=str(model), runtime=runtime, delegate=delegate, threads=threads, device=device,
                   **{**artifact_facts(model), **measured})


def manifest_accuracy(m: dict) -> dict:
    """What the recommendation needs from an artifact's manifest: which network it is (``model`` and the source
    weights' sha256, else their path) and its validation report's top-1 agreement with the fp32 reference."""
    src = m.get("source") or {}
    ident = src.get("sha256") or src.get("path") or src.get("kind")
    out = {"network": f"{m['model']}@{str(ident)[:12]}" if m.get("model") and ident else m.get("model")}
    v = m.get("validation") or {}
    if isinstance(v.get("top1_agreement"), (int, float)):
        out.update({"top1_agreement": float(v["top1_agreement"]), "validation_images": v.get("images"),
                    "validation_reference": v.get("reference")})
    return out


def artifact_facts(model: str | Path) -> dict:
    """Size, precision, format, delegation and accuracy of an artifact, from its file and the manifest beside it
    (``<name>.json``, written by the converters); nothing for ``default`` or a file without a manifest."""
    p = Path(model)
    if not p.is_file():
        return {}
    out: dict = {"size_bytes": p.stat().st_size}
    mp = p.with_name(p.name + ".json")
    if not mp.is_file():
        return out
    try:
        m = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return out  # loading the artifact names an unreadable manifest (edge.artifact.integrity); not this table
    if not isinstance(m, dict):
        return out
    out.update({k: m.get(k) for k in ("precision", "lowered", "format")})
    if out["precision"] not in {p.value for p in Precision}:
        out["precision"] = None  # a manifest of another tool: no precision this harness knows
    d = m.get("delegation") or {}
    out["partitions"] = d.get("partitions")
    out["ops_outside"] = ops_outside(d)  # either manifest schema (edge/artifact/manifest.py)
    out.update(manifest_accuracy(m))
    return out


def records_of(result: dict, where: str = "results") -> list[Record]:
    """The rows of a result document as records; a row that cannot be read is named by its index."""
    rows = result.get("results")
    if not isinstance(rows, list):
        raise RecordError(f"{where}: no list of results")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(row if isinstance(row, Record) else Record.from_dict(row))
        except RecordError as e:
            raise RecordError(f"{where}: result {i}: {e}") from None
    return out


def as_records(rows: list) -> list[Record]:
    """Records from records or rows (dicts), for callers that hold either."""
    return [r if isinstance(r, Record) else Record.from_dict(r) for r in rows]
