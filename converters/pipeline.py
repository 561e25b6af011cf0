"""One conversion pipeline for every runtime: load -> build -> convert -> validate -> report -> write.

    load      the weights (``--weights``), the validation images and, for int8, the calibration images; then the
              backend's float reference network and its logits on the validation images (``reference``)
    build     per form: the plan of the target (``edge.model.passes.build_plan``), the network the backend emits
              from it, and its weights (precisions that convert the same form share one build)
    convert   the backend's converter (TFLite converter; torch.export + PT2E + lowering), serialized under a
              temporary name in the output folder
    validate  the temporary file through the backend's runtime on the held-out images, against the reference
    report    the delegation report, one schema for both runtimes (:class:`~edge.artifact.manifest.Delegation`)
    cells     ``--cells``: every part as its own artifact, into a temporary folder
    write     the artifact, its ``cells/`` and its manifest renamed into place, the manifest last

A :class:`Backend` holds only what differs between runtimes; :func:`run` is the rest, so both converters
write the same :class:`~edge.artifact.manifest.Manifest` and leave nothing partial behind on an error or a
Ctrl-C. ``converters.tflite.LiteRTBackend`` and ``converters.executorch.ExecuTorchBackend`` implement it.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import enum
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Hashable

import numpy as np

from converters.common import (DEFAULT_NUM_CALIBRATION, ImageSet, Precision, Stages, agreement_gate,
                               agreement_threshold, artifact_base, check_image_folder, check_output_dir,
                               command_line, compare, crop_fraction, interval_warning, json_default, load_images,
                               now_iso, package_folder, precisions_of, tool_versions, validation_table)
from edge.artifact.manifest import (IO, CellsManifest, Converter, Delegation, Format, Manifest, Quantization,
                                    Validation)

if TYPE_CHECKING:
    from edge.model.config import Preprocessing
    from edge.model.plan import Plan
    from edge.model.sources import WeightsSource

log = logging.getLogger(__name__)


class Stage(str, enum.Enum):
    """The pipeline's stages: the keys of a manifest's ``stage_seconds``."""
    LOAD = "load"
    REFERENCE = "reference"
    BUILD = "build"
    CONVERT = "convert"
    VALIDATE = "validate"
    REPORT = "report"
    CELLS = "cells"
    WRITE = "write"


# stages run once per run, recorded in every artifact's manifest of that run
SHARED_STAGES = (Stage.LOAD, Stage.REFERENCE)


@dataclass(frozen=True)
class Job:
    """What one run is asked for, whatever the runtime (the converters' common flags)."""
    weights: str = "default"
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    output: Path = Path("artifacts")
    calibration: Path | None = None
    num_calibration: int = DEFAULT_NUM_CALIBRATION
    validation: Path | None = None
    lowered: bool = True
    cells: bool = False
    threshold: float | None = None  # --fail-under-agreement, as a fraction
    name: str | None = None  # --name: the artifact's base name instead of the configuration's
    crop_fraction: float | None = None  # --crop-fraction: the artifact's preprocessing crop instead of the model's
    frame_input: bool = False  # --frame-input (LiteRT): the whole square in, the center crop inside the model

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Job:
        return cls(weights=args.weights, precisions=tuple(precisions_of(args)), output=args.output,
                   calibration=args.calibration, num_calibration=args.num_calibration, validation=args.validation,
                   lowered=not args.no_lowering, cells=bool(args.cells),
                   threshold=agreement_threshold(args.fail_under_agreement), name=args.name,
                   crop_fraction=crop_fraction(args.crop_fraction),
                   frame_input=bool(getattr(args, "frame_input", False)))

    @property
    def calibrated(self) -> bool:
        return Precision.INT8 in self.precisions


@dataclass
class Reference:
    """The backend's float reference network (not lowered) and what it gives on the validation images."""
    model: object
    weights: dict  # the reference network's Keras-layout weights: what every target's plan lowers
    logits: np.ndarray


@dataclass(frozen=True)
class FrameInput:
    """``--frame-input``: the artifact takes the whole center square at ``frame`` pixels and crops the network's
    ``size`` x ``size`` center inside the graph, ``pad`` pixels off each side.

    Why (issue 19, docs/clients.md): MediaPipe Tasks and other standard clients resize the whole frame to the
    model's input; the toolkit center-crops 87.5% first. With a 256-pixel input whose center 224 the model
    slices, such a client resizes to 256 and the model sees the toolkit's crop: resizing the square to
    size / crop_fraction and taking the center ``size`` samples the image at the same points as cropping
    ``crop_fraction`` and resizing to ``size`` (same scale, same half-pixel centers; only the outermost ring's
    bilinear neighbours differ, inside the image instead of clamped at the crop's edge)."""
    size: int
    frame: int

    @property
    def pad(self) -> int:
        return (self.frame - self.size) // 2

    @classmethod
    def of(cls, pre: Preprocessing) -> "FrameInput":
        frame = int(round(pre.size / pre.crop_fraction))
        frame += (frame - pre.size) % 2  # an even margin: the same number of pixels off each side
        return cls(pre.size, frame)

    def preprocessing(self, pre: Preprocessing) -> Preprocessing:
        """What the artifact declares: the whole center square, resized to ``frame``."""
        return dataclasses.replace(pre, size=self.frame, crop_fraction=1.0)

    def center(self, batch: np.ndarray) -> np.ndarray:
        """The network's input inside a batch of frames (NHWC)."""
        return batch[:, self.pad:self.pad + self.size, self.pad:self.pad + self.size]


@dataclass
class Loaded:
    """The load stage's result: shared by every precision of a run."""
    source: WeightsSource
    validation: ImageSet
    calibration: ImageSet | None
    reference: Reference
    frame: FrameInput | None = None  # --frame-input: validation and calibration hold frames

    @property
    def config(self):
        return self.source.config


@dataclass
class Built:
    """One form of the network: the plan for a target, the emitted network and the weights it loads."""
    plan: Plan
    model: object
    weights: dict
    preprocessing: Preprocessing  # what the artifact declares (LiteRT int8: the input on the pixel grid)
    input_shift: float = 0.0  # the artifact's input minus the reference's, for the same image
    extra: dict = field(default_factory=dict)  # the backend's own (LiteRT: the input grid, the shared SavedModel)

    def close(self) -> None:
        for value in self.extra.values():
            close = getattr(value, "close", None)
            if close is not None:
                close()


@dataclass
class Converted:
    """The convert stage's result, before serialization."""
    payload: object  # LiteRT: flatbuffer bytes; ExecuTorch: the lowered edge program
    io: IO
    quantization: Quantization | None = None
    steps: dict = field(default_factory=dict)  # seconds of the converter's own steps, where it reports them


class Backend(abc.ABC):
    """What a runtime contributes to :func:`run`: its emitter, converter, runtime and delegation report."""

    converter: ClassVar[Converter]
    format: ClassVar[Format]
    reference_description: ClassVar[str]  # validation.reference
    tool_packages: ClassVar[tuple[str, ...]]  # tools: their installed versions

    # -- identity
    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """The delegate the artifact is made for (``xnnpack``, ``gpu``, ``vulkan``, ...)."""

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """The device class (``cpu``, ``gpu``, ``npu``)."""

    # -- before anything is loaded, then once the source is known
    def check(self, job: Job) -> None:
        """Refuse what cannot work before anything is loaded (raise ConversionError)."""

    def check_source(self, job: Job, source: WeightsSource) -> None:
        """Refuse what does not fit the network the weights imply (raise ConversionError)."""

    # -- load
    @abc.abstractmethod
    def reference(self, source: WeightsSource, images: np.ndarray) -> Reference:
        """The float reference network of ``source`` and its logits on ``images`` (NHWC)."""

    # -- build
    @abc.abstractmethod
    def plan_target(self, job: Job, precision: Precision) -> str:
        """The target (``edge.model.passes.TARGETS``) whose plan ``precision`` converts."""

    def form_key(self, job: Job, precision: Precision) -> Hashable:
        """Precisions with equal keys convert one build of the network."""
        return self.plan_target(job, precision)

    def build_label(self, job: Job, precision: Precision) -> str:
        return f"build the {'edge form' if job.lowered else 'stock graph'}"

    @abc.abstractmethod
    def build(self, job: Job, loaded: Loaded, plan: Plan, precision: Precision) -> Built:
        """The network of ``plan`` emitted for this runtime, with the reference weights lowered for it."""

    # -- convert
    @abc.abstractmethod
    def artifact_name(self, job: Job, base: str, precision: Precision) -> str:
        """The file name, from :func:`converters.common.artifact_base` (the configuration's name or --name)."""

    def convert_label(self, precision: Precision) -> str:
        return f"convert to {precision.value}"

    @abc.abstractmethod
    def convert(self, job: Job, loaded: Loaded, built: Built, precision: Precision) -> Converted:
        ...

    def about(self, loaded: Loaded, precision: Precision, lowered: bool, io: IO) -> dict | None:
        """Name, version, author, license, description of the artifact, where its format carries them."""
        return None

    @abc.abstractmethod
    def serialize(self, converted: Converted, embedded: dict, path: Path) -> None:
        """Write the artifact to ``path`` (a temporary name); ``embedded``: the manifest's part a file carries."""

    # -- validate
    @property
    def validate_label(self) -> str:
        return "validate on held-out images"

    @abc.abstractmethod
    def run(self, path: Path, images: np.ndarray) -> np.ndarray | None:
        """Logits of the artifact at ``path`` on ``images`` (NHWC, already on the artifact's input); None
        when its delegate does not run on this machine (:meth:`cannot_run`)."""

    def cannot_run(self) -> str:
        return f"the {self.backend} delegate does not run on this machine"

    # -- report
    @abc.abstractmethod
    def report(self, path: Path, converted: Converted, built: Built, loaded: Loaded,
               logits: np.ndarray | None) -> tuple[Delegation, dict[str, int]]:
        """(delegation report, operator histogram) of the artifact."""

    def summary_lines(self, manifest: Manifest) -> list[str]:
        """Lines printed after the delegation line (LiteRT --target gpu: the GPU's)."""
        return []

    # -- cells
    @abc.abstractmethod
    def export_cells(self, job: Job, loaded: Loaded, built: Built, converted: Converted, precision: Precision,
                     folder: Path) -> CellsManifest:
        """Every part as its own artifact in ``folder/cells`` (with ``cells.json``)."""


# ----------------------------------------------------------------------------- writing
class ArtifactWriter:
    """The artifact, its ``cells/`` and its manifest appear together, or not at all.

    Everything is written under temporary names in the output folder (``.<name>.tmp`` and so on) and renamed at
    :meth:`commit`, the manifest last. What an older run left under the same names is renamed aside first and
    restored if the commit does not complete, so an error or a Ctrl-C at any point leaves the folder as it
    was: never a new artifact without its manifest, nor an older manifest beside a new artifact.
    """

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.staging = path.with_name(f".{path.name}.cells.tmp")  # holds cells/ until the commit
        self.manifest_path = path.with_name(path.name + ".json")
        self._manifest_tmp = path.with_name(f".{self.manifest_path.name}.tmp")

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, *exc) -> None:
        for p in (self.tmp, self._manifest_tmp):
            if p.exists():
                p.unlink()
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, manifest: dict) -> None:
        try:
            with open(self._manifest_tmp, "w") as f:
                json.dump(manifest, f, indent=1, default=json_default)
                f.write("\n")
        except OSError as e:  # name the file the user asked for
            raise OSError(e.errno, e.strerror, str(self.manifest_path)) from None
        cells = self.staging / "cells"
        moves = [(self.tmp, self.path)]
        if cells.is_dir():
            moves.append((cells, self.path.parent / "cells"))
        moves.append((self._manifest_tmp, self.manifest_path))  # last: a manifest means everything is in place
        aside: list[tuple[Path, Path]] = []  # (what an older run left, where it waits)
        placed: list[Path] = []
        try:
            for _, final in moves:
                if final.exists():
                    backup = final.with_name(f".{final.name}.old.tmp")
                    os.replace(final, backup)
                    aside.append((final, backup))
            for src, final in moves:
                os.replace(src, final)
                placed.append(final)
        except BaseException:
            for final in placed:
                shutil.rmtree(final, ignore_errors=True) if final.is_dir() else final.unlink(missing_ok=True)
            for final, backup in aside:
                os.replace(backup, final)
            raise
        for _, backup in aside:
            shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the pipeline
def run(job: Job, backend: Backend) -> list[Manifest]:
    """Convert ``job`` with ``backend``: one artifact and one manifest per precision, in order.

    Precisions share the load stage and, where :meth:`Backend.form_key` says so, the build; each artifact is
    the file a run of that precision alone writes.
    """
    out_dir = check_output_dir(job.output)
    check_inputs(job)
    backend.check(job)
    forms = {backend.form_key(job, p) for p in job.precisions}
    per_artifact = 4 + job.cells  # convert, validate, report, [cells], write
    progress = Stages(len(SHARED_STAGES) + len(forms) + len(job.precisions) * per_artifact)
    loaded = load(job, backend, progress)
    built: dict[Hashable, Built] = {}
    try:
        manifests = [_convert_one(job, backend, loaded, built, precision, out_dir, progress)
                     for precision in job.precisions]
    finally:
        for b in built.values():
            b.close()
    print_summary(manifests, backend, out_dir)
    return manifests


def check_inputs(job: Job) -> None:
    """The files and folders the command line names exist: checked before the backend's check, which imports its
    toolchain (ExecuTorch's partitioner: ~5 s), so a mistyped path is answered at once."""
    from edge.model.sources import check_weights_argument

    check_weights_argument(job.weights)
    for folder, what in ((job.validation, "validation"), (job.calibration if job.calibrated else None, "calibration")):
        if folder is not None:
            check_image_folder(folder, what)


def load(job: Job, backend: Backend, progress: Stages) -> Loaded:
    from edge.model.sources import resolve_weights

    with progress.stage("load weights and images", Stage.LOAD.value):
        source = resolve_weights(job.weights)
        backend.check_source(job, source)
        if job.crop_fraction is not None:  # every later stage (reference, calibration, validation, manifest) reads it
            cfg = source.config
            source = dataclasses.replace(source, config=cfg.with_(
                preprocessing=dataclasses.replace(cfg.preprocessing, crop_fraction=job.crop_fraction)))
        pre = source.config.preprocessing
        # frame input: the artifact's images are frames, the reference network sees their center (none where
        # there is no crop to take: the network's input is already the whole square)
        frame = FrameInput.of(pre) if job.frame_input else None
        if frame is not None and frame.pad > 0:
            pre = frame.preprocessing(pre)
        else:
            frame = None
        validation = load_images(job.validation or package_folder("validation"), pre, what="validation")
        calibration = None
        if job.calibrated:  # never a validation image, when both come from one folder
            calibration = load_images(job.calibration or package_folder("calibration"), pre,
                                      limit=job.num_calibration, what="calibration",
                                      exclude={f.resolve() for f in validation.files})
    with progress.stage("build the reference network and predict the validation images", Stage.REFERENCE.value):
        reference = backend.reference(source, frame.center(validation.batch) if frame else validation.batch)
    return Loaded(source, validation, calibration, reference, frame)


def _convert_one(job: Job, backend: Backend, loaded: Loaded, built: dict, precision: Precision, out_dir: Path,
                 progress: Stages) -> Manifest:
    from edge.model.passes import build_plan
    from edge.model.weights import sha256

    own: dict[str, float] = {}  # this artifact's stages
    key = backend.form_key(job, precision)
    if key not in built:
        with progress.stage(backend.build_label(job, precision), Stage.BUILD.value, own):
            plan = build_plan(loaded.config, backend.plan_target(job, precision))
            built[key] = backend.build(job, loaded, plan, precision)
    form = built[key]
    cfg, src = loaded.config, loaded.source
    name = backend.artifact_name(job, artifact_base(cfg, job.lowered, job.name), precision)
    calibrated = loaded.calibration if precision is Precision.INT8 else None

    with ArtifactWriter(out_dir / name) as writer:
        with progress.stage(backend.convert_label(precision) + (" (calibrating)" if calibrated else ""),
                            Stage.CONVERT.value, own):
            converted = backend.convert(job, loaded, form, precision)
            manifest = Manifest(
                format=backend.format.value, converter=backend.converter.value, backend=backend.backend,
                target=backend.target, model=cfg.name, precision=precision.value, lowered=job.lowered,
                artifact=name, plan=form.plan.describe(), source=src.describe(), config=cfg.to_dict(),
                labels=list(src.labels), preprocessing=form.preprocessing.to_dict(), io=converted.io,
                about=backend.about(loaded, precision, job.lowered, converted.io),
                calibration=calibrated.describe(job.calibration) if calibrated is not None else None,
                quantization=converted.quantization)
            backend.serialize(converted, manifest.embedded(), writer.tmp)
        with progress.stage(f"{backend.validate_label} ({precision.value})", Stage.VALIDATE.value, own):
            logits = backend.run(writer.tmp, loaded.validation.batch + np.float32(form.input_shift))
            manifest.validation = _validation(job, backend, loaded, logits)
        with progress.stage(f"delegation report ({precision.value})", Stage.REPORT.value, own):
            manifest.delegation, manifest.op_histogram = backend.report(writer.tmp, converted, form, loaded, logits)
        if job.cells:
            with progress.stage(f"per-cell export ({precision.value})", Stage.CELLS.value, own):
                cells = backend.export_cells(job, loaded, form, converted, precision, writer.staging)
            manifest.cells = {"folder": "cells", "manifest": "cells/cells.json", "count": len(cells.parts),
                              "ops_outside": cells.ops_outside}
        manifest.size_bytes, manifest.sha256 = writer.tmp.stat().st_size, sha256(writer.tmp)
        manifest.created, manifest.command = now_iso(), command_line()
        manifest.tools = tool_versions(*backend.tool_packages)
        manifest.stage_seconds = {**{s.value: progress.timings[s.value] for s in SHARED_STAGES}, **own}
        if converted.steps:
            manifest.stage_seconds["convert_steps"] = converted.steps
        with progress.stage(f"write {name}", Stage.WRITE.value):
            writer.commit(manifest.to_dict())
    return manifest


def _validation(job: Job, backend: Backend, loaded: Loaded, logits: np.ndarray | None) -> Validation:
    if logits is None:
        return Validation(backend.reference_description, skipped=backend.cannot_run())
    metrics = compare(loaded.reference.logits, logits)
    return Validation(backend.reference_description,
                      images_folder=str(job.validation) if job.validation else "package validation set",
                      unreadable_skipped=len(loaded.validation.skipped), metrics=metrics,
                      gate=agreement_gate(metrics, job.threshold))


def print_summary(manifests: list[Manifest], backend: Backend, out_dir: Path) -> None:
    print()
    rows = [(m.artifact, m.validation.metrics) for m in manifests if not m.validation.skipped]
    if rows:
        print(validation_table(rows))
    for m in manifests:
        if m.validation.skipped:
            print(f"\n{m.artifact}: not validated: {m.validation.skipped}")
        elif Precision(m.precision).quantized and (warning := interval_warning(m.validation.metrics)):
            log.warning(warning)
        print(f"\n{m.artifact}: {m.delegation.summary()}")
        for line in backend.summary_lines(m):
            print(line)
        print(f"wrote {out_dir / m.artifact} ({m.size_bytes / 1e6:.1f} MB) and {m.artifact}.json")


def convert(args: argparse.Namespace, backend: Backend) -> dict | list[dict]:
    """The converters' ``convert(args)``: the manifest as written, or one per precision when there are several."""
    manifests = [m.to_dict() for m in run(Job.from_args(args), backend)]
    return manifests[0] if len(manifests) == 1 else manifests
