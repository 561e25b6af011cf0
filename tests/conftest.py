"""Shared, session-scoped fixtures: expensive artifacts are made once per test run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def real_val_images(n_per_class: int = 1) -> list[Path]:
    """Real photographs: Imagenette val from ../shared when present, else the package's samples."""
    from edge.preprocessing import list_images

    root = SHARED_DATA / "imagenette" / "val"
    if root.is_dir():
        return [p for d in sorted(root.iterdir()) for p in list_images(d)[:n_per_class]]
    from edge.verify import sample_images_dir

    return list_images(sample_images_dir())[: 10 * n_per_class]


def randomize_bn(model, seed: int = 0) -> None:
    """Realistic BatchNorm statistics (random init leaves mean 0 / var 1, which hides layout bugs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype("f"), rng.normal(0, 0.1, b.shape).astype("f"),
                               rng.normal(0, 0.2, m.shape).astype("f"), rng.uniform(0.5, 2.0, v.shape).astype("f")])


@pytest.fixture(scope="session")
def real_images() -> list[Path]:
    return real_val_images(1)


@pytest.fixture(scope="session")
def keras_reference():
    """keras.applications.NASNetMobile with random weights and realistic BN statistics."""
    import keras

    model = keras.applications.NASNetMobile(weights=None)
    randomize_bn(model)
    return model


@pytest.fixture(scope="session")
def official_h5(tmp_path_factory, keras_reference) -> Path:
    """A file in the official NASNet-mobile.h5 layout (Keras 2 names with ':0' and scope prefixes)."""
    from edge.weights import save_keras_model_as_h5

    path = tmp_path_factory.mktemp("weights") / "NASNet-mobile.h5"
    save_keras_model_as_h5(keras_reference, path, scope_prefix=True, colon_suffix=True)
    return path


@pytest.fixture(scope="session")
def official_no_top_h5(tmp_path_factory) -> Path:
    import keras

    from edge.weights import save_keras_model_as_h5

    model = keras.applications.NASNetMobile(weights=None, include_top=False, input_shape=(224, 224, 3))
    randomize_bn(model, seed=1)
    path = tmp_path_factory.mktemp("weights") / "NASNet-mobile-no-top.h5"
    save_keras_model_as_h5(model, path, colon_suffix=False)
    return path


def run_module(module: str, *args: str, timeout: int = 900):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err


@pytest.fixture(scope="session")
def tflite_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tflite")


def _convert_tflite(out: Path, *args: str) -> dict:
    import json

    from converters.tflite import build_parser, convert

    manifest = convert(build_parser().parse_args(["--output", str(out), *args]))
    return json.loads((out / (manifest["artifact"] + ".json")).read_text())


@pytest.fixture(scope="session")
def tflite_int8(tflite_dir) -> dict:
    """The main job, as the README runs it: edge form, full int8, default model, with per-cell export."""
    return _convert_tflite(tflite_dir, "--int8", "--cells")


@pytest.fixture(scope="session")
def tflite_fp32(tflite_dir) -> dict:
    return _convert_tflite(tflite_dir, "--precision", "fp32")


@pytest.fixture(scope="session")
def tflite_stock_int8(tflite_dir) -> dict:
    return _convert_tflite(tflite_dir, "--int8", "--no-lowering")


@pytest.fixture(scope="session")
def pte_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pte")


def _convert_pte(out: Path, *args: str) -> dict:
    import json

    from converters.executorch import build_parser, convert

    manifest = convert(build_parser().parse_args(["--output", str(out), *args]))
    return json.loads((out / (manifest["artifact"] + ".json")).read_text())


@pytest.fixture(scope="session")
def pte_fp32(pte_dir) -> dict:
    return _convert_pte(pte_dir, "--precision", "fp32")


@pytest.fixture(scope="session")
def pte_int8(pte_dir) -> dict:
    return _convert_pte(pte_dir, "--int8", "--num-calibration", "48")
