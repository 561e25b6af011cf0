"""The Android demo's frame-processing core (plain Kotlin, no Android SDK): compiled and tested with a JDK.

Golden test: for the same real camera-like frames, the Kotlin path (YUV_420_888 -> RGB -> rotate -> crop ->
resize -> normalize) gives the Python preprocessing's tensor within one int8 quantization step, and the
same top-k for the same logits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from edge.model.config import Preprocessing
from edge.labels import softmax, top_k
from edge.preprocessing import list_images, load_rgb, preprocess, rgb_to_yuv420, yuv420_to_rgb

CORE = REPO / "android_demo" / "core"
JUNIT = [Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar")]


@pytest.fixture(scope="module")
def core_jar(tmp_path_factory) -> Path:
    kotlinc = shutil.which("kotlinc")
    assert kotlinc, "kotlinc not found (.ci/run installs Debian's kotlin)"
    out = tmp_path_factory.mktemp("kotlin") / "core.jar"
    srcs = sorted(str(p) for p in (CORE / "src" / "main").rglob("*.kt"))
    r = subprocess.run([kotlinc, *srcs, "-include-runtime", "-d", str(out)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_kotlin_unit_tests_pass(core_jar, tmp_path):
    assert all(j.is_file() for j in JUNIT), "junit4 not installed (.ci/run installs Debian's junit4)"
    cp = ":".join(map(str, [core_jar, *JUNIT]))
    tests = sorted(str(p) for p in (CORE / "src" / "test").rglob("*.kt"))
    out = tmp_path / "tests"
    r = subprocess.run(["kotlinc", *tests, "-cp", cp, "-d", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(["java", "-cp", f"{cp}:{out}", "org.junit.runner.JUnitCore",
                        "ai.nasnetedge.core.FrameProcessorTest"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK (" in r.stdout, r.stdout[-3000:]


def manifest(tmp_path: Path, pre: Preprocessing, labels: list[str]) -> Path:
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps({"labels": labels, "preprocessing": pre.to_dict()}))
    return p


@pytest.mark.parametrize("rotation,pixel_stride", [(0, 1), (90, 2), (270, 1), (180, 2)])
def test_golden_frames_match_python_preprocessing(core_jar, tmp_path, rotation, pixel_stride):
    pre = Preprocessing()
    image = list_images(REPO / "edge" / "assets" / "samples")[rotation // 90]
    rgb = load_rgb(image)
    rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))  # the sensor sees the scene rotated
    rgb = np.pad(rgb, ((0, 0), (0, 96), (0, 0)), mode="edge")[:, : rgb.shape[1] + 96]  # a landscape frame
    h, w = rgb.shape[:2]
    y, u, v = rgb_to_yuv420(rgb)
    if pixel_stride == 2:  # NV21-style interleaved chroma: every other byte of a shared buffer
        u2, v2 = np.zeros(u.size * 2, np.uint8), np.zeros(v.size * 2, np.uint8)
        u2[::2], v2[::2] = u.ravel(), v.ravel()
        u_bytes, v_bytes, uv_row = u2, v2, w
    else:
        u_bytes, v_bytes, uv_row = u.ravel(), v.ravel(), w // 2
    for name, arr in (("y", y.ravel()), ("u", u_bytes), ("v", v_bytes)):
        (tmp_path / name).write_bytes(arr.tobytes())
    m = manifest(tmp_path, pre, ["x"])
    out = tmp_path / "x.f32"
    r = subprocess.run(["java", "-cp", str(core_jar), "ai.nasnetedge.core.GoldenMainKt", "yuv", tmp_path / "y",
                        tmp_path / "u", tmp_path / "v", str(w), str(h), str(w), str(uv_row), str(pixel_stride),
                        str(rotation), m, out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    kotlin = np.fromfile(out, dtype="<f4").reshape(pre.size, pre.size, 3)
    # Python reference: the same YUV decoded by the reference conversion, rotated upright, preprocessed
    upright = np.rot90(yuv420_to_rgb(y, u, v), k=-(rotation // 90))
    python = preprocess(np.ascontiguousarray(upright), pre, bgr=False)
    step = pre.scale  # one int8 quantization step of the model input
    assert np.abs(kotlin - python).max() <= step + 1e-6


def test_golden_top_k_matches_python(core_jar, tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=10).astype("<f4")
    (tmp_path / "l.f32").write_bytes(logits.tobytes())
    labels = [f"class {i}" for i in range(10)]
    m = manifest(tmp_path, Preprocessing(), labels)
    r = subprocess.run(["java", "-cp", str(core_jar), "ai.nasnetedge.core.GoldenMainKt", "topk", tmp_path / "l.f32",
                        m, "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = [(int(a), float(b)) for a, b, _ in (ln.split("\t") for ln in r.stdout.strip().splitlines())]
    want = top_k(softmax(logits.astype(np.float64)), labels, 3)
    assert [g[0] for g in got] == [p.index for p in want]
    np.testing.assert_allclose([g[1] for g in got], [p.probability for p in want], rtol=1e-5)
