"""The conversion pipeline (converters/pipeline.py) and the manifest type (edge/artifact/manifest.py).

The pipeline's tests run the real stages (load, build with the real plan, convert, validate, report, cells,
write) with a stand-in backend: a linear classifier on the image's mean colour, "converted" to a ``.npy``
file, so they take seconds. The real backends are run end to end by test_tflite.py and test_executorch.py.
"""

from __future__ import annotations

import enum
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shipped_photos
from converters import pipeline
from converters.common import Precision, artifact_base
from converters.pipeline import Backend, Built, Converted, Job, Reference
from edge.artifact.manifest import (IO, SCHEMA, CellsManifest, Delegation, Manifest, PartEntry, Quantization,
                                    Validation, ops_outside)

# the manifest's keys: one set for every runtime (docs/manifest.md lists them; change both together)
MANIFEST_KEYS = {"schema", "format", "converter", "backend", "target", "model", "precision", "lowered", "artifact",
                 "created", "command", "plan", "source", "config", "labels", "preprocessing", "io", "about",
                 "calibration", "quantization", "validation", "delegation", "op_histogram", "size_bytes", "sha256",
                 "tools", "stage_seconds", "cells"}
DELEGATION_KEYS = {"delegate", "partitions", "ops", "delegated_ops", "ops_outside", "outside", "detail"}


class StandInFormat(str, enum.Enum):
    NPY = "npy"


class StandInConverter(str, enum.Enum):
    STAND_IN = "stand_in"


class StandIn(Backend):
    """Logits = mean colour @ W; int8 rounds W to 8 bits. ``fail_at``: a method that raises KeyboardInterrupt
    (as a Ctrl-C there would); ``disagree``: the artifact gives the negated logits."""

    converter = StandInConverter.STAND_IN
    format = StandInFormat.NPY
    reference_description = "the stand-in's float weights"
    tool_packages = ("numpy",)

    def __init__(self, fail_at: str | None = None, disagree: bool = False):
        self.fail_at, self.disagree = fail_at, disagree
        self.builds, self.embedded = 0, []

    def _maybe_fail(self, where: str) -> None:
        if where == self.fail_at:
            raise KeyboardInterrupt

    backend = "stand_in"
    target = "cpu"

    def reference(self, source, images):
        w = np.random.default_rng(0).normal(size=(3, source.config.num_classes)).astype(np.float32)
        return Reference(w, {"w": w}, images.mean((1, 2)) @ w)

    def plan_target(self, job, precision):
        return "xnnpack_fp32" if job.lowered else "reference"

    def build(self, job, loaded, plan, precision):
        self.builds += 1
        return Built(plan, loaded.reference.model, loaded.reference.weights, loaded.config.preprocessing)

    def artifact_name(self, job, base, precision):
        return f"{base}_stand_in_{precision.value}.npy"

    def convert(self, job, loaded, built, precision):
        self._maybe_fail("convert")
        w, quantization = built.model, None
        if precision is Precision.INT8:
            step = np.abs(w).max() / 127
            w, quantization = np.round(w / step) * step, Quantization("stand-in: weights rounded to 8 bits")
        return Converted(-w if self.disagree else w, IO("float", "float", "NHWC"), quantization)

    def serialize(self, converted, embedded, path):
        self.embedded.append(embedded)
        with open(path, "wb") as f:
            np.save(f, converted.payload)

    def run(self, path, images):
        self._maybe_fail("run")
        return images.mean((1, 2)) @ np.load(path)

    def report(self, path, converted, built, loaded, logits):
        self._maybe_fail("report")
        return Delegation.from_counts(self.backend, 1, {"MATMUL": 1}, {}), {"MATMUL": 1}

    def export_cells(self, job, loaded, built, converted, precision, folder):
        cells = folder / "cells"
        cells.mkdir(parents=True)
        np.save(cells / "00_all.npy", converted.payload)
        self._maybe_fail("export_cells")
        part = PartEntry(0, "all", "00_all.npy", precision.value, [[3]], "NHWC", [loaded.config.num_classes],
                         3 * loaded.config.num_classes, 3 * loaded.config.num_classes, 0,
                         Delegation.from_counts(self.backend, 1, {"MATMUL": 1}, {}))
        manifest = CellsManifest(self.format.value, self.converter.value, self.backend, loaded.config.name,
                                 precision.value, job.lowered, built.plan.describe(), [part])
        (cells / "cells.json").write_text(json.dumps(manifest.to_dict()))
        return manifest


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """Three validation and three calibration photos of the shipped sets (a real load stage in a second)."""
    root = tmp_path_factory.mktemp("photos")
    for folder in ("validation", "calibration"):
        (root / folder).mkdir()
        for f in shipped_photos(folder)[:3]:
            shutil.copy(f, root / folder / f.name)
    return root / "validation", root / "calibration"


def job(out: Path, photos, *precisions: Precision, **kw) -> Job:
    validation, calibration = photos
    return Job(precisions=precisions or (Precision.FP32,), output=out, validation=validation,
               calibration=calibration, **kw)


def test_a_stand_in_backend_runs_the_real_pipeline_and_writes_one_manifest_type(tmp_path, photos):
    from edge.model.config import NASNetConfig
    from edge.model.passes import XNNPACK_FP32, build_plan
    from edge.model.weights import sha256

    backend = StandIn()
    manifests = pipeline.run(job(tmp_path, photos, Precision.FP32, Precision.INT8), backend)
    assert [m.precision for m in manifests] == ["fp32", "int8"]
    assert backend.builds == 1  # one form: the two precisions share the build
    cfg = NASNetConfig.from_dict(manifests[0].config)
    base, plan = artifact_base(cfg, lowered=True), build_plan(cfg, XNNPACK_FP32)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for m in manifests for n in (m.artifact, m.artifact + ".json"))
    for m, embedded in zip(manifests, backend.embedded):
        on_disk = json.loads((tmp_path / (m.artifact + ".json")).read_text())
        assert set(on_disk) == MANIFEST_KEYS and set(on_disk["delegation"]) == DELEGATION_KEYS
        assert on_disk == json.loads(json.dumps(m.to_dict())) and Manifest.from_dict(on_disk) == m
        assert m.artifact == f"{base}_stand_in_{m.precision}.npy" and m.schema == SCHEMA
        assert m.plan["sha256"] == plan.digest() and m.plan["passes"] == list(XNNPACK_FP32.passes)
        assert embedded == {k: m.to_dict()[k] for k in Manifest.EMBEDDED}
        assert m.sha256 == sha256(tmp_path / m.artifact) and m.size_bytes == (tmp_path / m.artifact).stat().st_size
        assert m.validation.metrics["images"] == 3 and m.validation.passed is None  # no gate asked for
    fp32, int8 = manifests
    assert fp32.validation.metrics["max_abs_logit_diff"] == 0 and fp32.quantization is None
    assert int8.quantization.scheme.startswith("stand-in") and int8.calibration["count"] == 3
    assert fp32.calibration is None
    # the shared stages in both, the build in the artifact it was made for
    assert set(fp32.stage_seconds) == {"load", "reference", "build", "convert", "validate", "report"}
    assert set(int8.stage_seconds) == {"load", "reference", "convert", "validate", "report"}


@pytest.mark.parametrize("where", ["convert", "run", "report", "export_cells", "manifest_rename"])
@pytest.mark.parametrize("earlier_run", [False, True])
def test_an_interrupted_run_leaves_the_output_folder_as_it_was(tmp_path, photos, where, earlier_run, monkeypatch):
    """Ctrl-C in any stage, or between the artifact's rename and its manifest's: no new file or folder, no
    temporary, and what an earlier run wrote there under the same names is still there, whole."""
    out = tmp_path / "out"
    out.mkdir()
    before: dict[str, bytes] = {}
    if earlier_run:
        pipeline.run(job(out, photos, cells=True), StandIn())
        before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        assert len(before) == 4  # artifact, manifest, cells/cells.json, cells/00_all.npy
    if where == "manifest_rename":
        replace = pipeline.os.replace

        def interrupted(src, dst):
            if Path(src).name.endswith(".npy.json.tmp"):  # the new manifest's rename, the last of the commit
                raise KeyboardInterrupt
            return replace(src, dst)

        monkeypatch.setattr(pipeline.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(job(out, photos, cells=True), StandIn(fail_at=where, disagree=True))
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and sorted(p.name for p in out.iterdir()) == sorted({k.split("/")[0] for k in before})


def test_cells_and_their_manifest_land_beside_the_artifact(tmp_path, photos):
    (m,) = pipeline.run(job(tmp_path, photos, Precision.INT8, cells=True), StandIn())
    assert m.cells == {"folder": "cells", "manifest": "cells/cells.json", "count": 1, "ops_outside": 0}
    cells = json.loads((tmp_path / "cells" / "cells.json").read_text())
    assert CellsManifest.from_dict(cells).to_dict() == cells and (tmp_path / "cells" / "00_all.npy").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cells", m.artifact, m.artifact + ".json"])
    assert "cells" in m.stage_seconds


def test_the_agreement_gate_fails_the_run_through_the_real_pipeline(tmp_path, photos, capsys):
    """``--fail-under-agreement``: the artifact and its manifest are written (with ``passed: false``) and the
    command exits 1 with one line naming the threshold."""
    from converters.common import converter_main
    from converters.tflite import build_parser

    validation, calibration = photos
    rc = converter_main(build_parser, lambda args: pipeline.convert(args, StandIn(disagree=True)),
                        ["--output", str(tmp_path), "--validation", str(validation), "--fail-under-agreement", "90"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: top-1 agreement ") and err.endswith("is below --fail-under-agreement "
                                                                                  "90.0%"), err
    (manifest,) = tmp_path.glob("*.json")
    v = json.loads(manifest.read_text())["validation"]
    assert v["passed"] is False and v["fail_under_agreement"] == 0.9


def full_manifest() -> Manifest:
    return Manifest(
        format="tflite", converter="litert", backend="xnnpack", target="cpu", model="nasnet_mobile",
        precision="int8", lowered=True, artifact="nasnet_mobile_edge_int8.tflite",
        plan={"target": "xnnpack_int8", "passes": ["fuse_factorized"], "sha256": "ab" * 32},
        source={"kind": "default", "sha256": "cd" * 32}, config={"name": "nasnet_mobile"}, labels=["a", "b"],
        preprocessing={"size": 224, "mean": 128.0, "std": 127.5}, io=IO("uint8", "uint8", "NHWC"),
        created="2025-01-01T00:00:00+00:00", command="python -m converters.tflite --int8",
        about={"name": "x"}, calibration={"folder": "package", "count": 2, "files": ["a.jpg", "b.jpg"]},
        quantization=Quantization("int8", {"method": "mse"}, {"zero_point_uint8": 128}, None),
        validation=Validation("Keras", "package validation set", 1, {"images": 2, "top1_agreement": 1.0},
                              {"fail_under_agreement": 0.97, "passed": True}),
        delegation=Delegation.from_counts("xnnpack", 1, {"CONV_2D": 3}, {"QUANTIZE": 1}, {"gpu": {"status": "ok"}}),
        op_histogram={"CONV_2D": 3, "QUANTIZE": 1}, size_bytes=10, sha256="ef" * 32, tools={"python": "3.11"},
        stage_seconds={"load": 1.0, "convert_steps": {"torch.export": 2.0}},
        cells={"folder": "cells", "manifest": "cells/cells.json", "count": 18, "ops_outside": 0})


def test_the_manifest_round_trips_through_json():
    from dataclasses import fields

    assert {f.name for f in fields(Manifest)} == MANIFEST_KEYS  # the schema is pinned here and in docs/manifest.md
    docs = (REPO / "docs/manifest.md").read_text()
    assert all(f"`{k}`" in docs for k in MANIFEST_KEYS | DELEGATION_KEYS), "docs/manifest.md misses a key"
    m = full_manifest()
    d = json.loads(json.dumps(m.to_dict()))
    assert set(d) == MANIFEST_KEYS and set(d["delegation"]) == DELEGATION_KEYS
    assert Manifest.from_dict(d) == m and Manifest.from_dict(d).to_dict() == d
    assert d["delegation"]["ops"] == 4 and d["delegation"]["ops_outside"] == 1 and d["validation"]["passed"] is True
    skipped = Validation("PyTorch", skipped="the vulkan delegate does not run on this machine")
    assert Validation.from_dict(skipped.to_dict()) == skipped
    with pytest.raises(ValueError, match="not in schema"):
        Manifest.from_dict({**d, "fallback_ops": 0})


def test_cells_manifest_round_trips_through_json():
    part = PartEntry(0, "stem", "00_stem_int8.pte", "int8", [[3, 224, 224]], "NCHW", [32, 111, 111], 10, 5, 99,
                     Delegation.from_counts("xnnpack", 1, {"aten.convolution": 1}, {}), {"torch.export": 1.0})
    cells = CellsManifest("pte", "executorch", "xnnpack", "nasnet_mobile", "int8", True, {"target": "xnnpack_fp32"},
                          [part])
    d = json.loads(json.dumps(cells.to_dict()))
    assert CellsManifest.from_dict(d) == cells and d["total_macs"] == 10 and d["ops_outside"] == 0


SCHEMA_1 = {  # manifests the converters wrote before the one manifest type, committed in the repository
    "litert": REPO / "edge/assets/models/nasnet_mobile_imagenette_int8.tflite.json",  # shipped: still loaded
    "litert_auto": REPO / "results/quantization/v1_v3_ranges/manifest_v3_litert_auto.tflite.json",
    "executorch": REPO / "results/quantization/v1_v3_ranges/manifest_v3_executorch_auto.pte.json",
}


@pytest.mark.parametrize("which", sorted(SCHEMA_1))
def test_schema_1_manifests_are_read_with_the_reconciled_keys(which):
    old = json.loads(SCHEMA_1[which].read_text())
    m = Manifest.from_dict(old)
    assert m.schema == SCHEMA and m.labels == old["labels"] and m.sha256 == old["sha256"]
    outside_before = old["delegation"].get("fallback_ops", old["delegation"].get("outside_ops"))
    assert m.delegation.ops_outside == outside_before == ops_outside(old["delegation"])
    assert set(m.to_dict()) == MANIFEST_KEYS and Manifest.from_dict(m.to_dict()) == m
    if old["format"] == "pte":
        assert (m.converter, m.backend, m.io.layout) == ("executorch", old["backend"], "NCHW")
        assert m.delegation.detail["xnnpack_converts"] == old["delegation"]["xnnpack_converts"]
        assert m.quantization.activation_ranges == old["quantization"]["activation_ranges"]
    else:
        assert (m.converter, m.backend, m.io.input) == ("litert", "xnnpack", old["io"])
        assert m.delegation.ops == old["delegation"]["ops"]
        ranges = (old["calibration"] or {}).get("activation_ranges")
        assert (m.quantization.activation_ranges if m.quantization else None) == ranges
        assert (m.quantization.input_grid if m.quantization else None) == old.get("input_grid")


def test_the_shipped_schema_1_artifact_still_loads_and_passes_its_integrity_check():
    from edge.artifact.integrity import verify_against_manifest
    from edge.runtime.runners import open_model

    path = SCHEMA_1["litert"].with_suffix("")
    assert verify_against_manifest(path)["sha256"]
    runner = open_model(path)
    assert len(runner.labels) == 10 and runner.preprocessing.size == 224


def test_frame_input_samples_the_image_where_the_crop_does():
    """--frame-input (the LiteRT default): resize the square to size / crop fraction and take the center ``size``:
    the same sampling points as cropping and resizing (converters/pipeline.py FrameInput), up to the border ring."""
    import cv2

    from converters.pipeline import FrameInput
    from edge.model.config import Preprocessing
    from edge.preprocessing import preprocess

    pre = Preprocessing()  # NASNet: 224 px at 87.5%
    f = FrameInput.of(pre)
    assert (f.size, f.frame, f.pad) == (224, 256, 16)
    assert f.preprocessing(pre).size == 256 and f.preprocessing(pre).crop_fraction == 1.0
    odd = FrameInput.of(Preprocessing(size=64))  # 64 / 0.875 = 73.1: widened to an even margin
    assert (odd.frame - odd.size) % 2 == 0 and odd.pad == 5
    rng = np.random.default_rng(0)
    square = cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (0, 0), 3)  # a smooth image
    via_frame = f.center(preprocess(square, f.preprocessing(pre), bgr=False)[None])[0]
    via_crop = preprocess(square, pre, bgr=False)
    inner = np.abs(via_frame - via_crop)[2:-2, 2:-2]
    assert via_frame.shape == via_crop.shape == (224, 224, 3) and inner.max() < 0.02, inner.max()
