"""Shared, session-scoped fixtures: expensive artifacts are made once per test run."""

from __future__ import annotations

import os
import threading
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


def small_nasnet(num_classes: int = 5, lowered=None, realistic_bn: bool = True):
    """(config, PyTorch model in eval mode): NASNet-A with the real genotypes and stem but 96 final filters, one cell
    per stack and 48 px inputs, with realistic BatchNorm statistics: per-cell tests in seconds, not minutes."""
    import torch

    from edge.config import nasnet_mobile
    from edge.torch_model import build_torch_model

    cfg = nasnet_mobile(num_classes=num_classes).with_(penultimate_filters=96, num_blocks=1, stem_filters=32,
                                                       input_size=48)
    torch.manual_seed(0)
    model = build_torch_model(cfg, lowered=lowered)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random init leaves mean 0 / var 1, which hides layout bugs
        for bn in () if not realistic_bn else (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0, 0.1, generator=g)
            bn.running_mean.normal_(0, 0.2, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
    return cfg, model.eval()


@pytest.fixture(scope="session")
def small_tflite_cells(tmp_path_factory) -> Path:
    """``converters.tflite`` per-cell export (int8, edge form) of :func:`small_nasnet`: the cells folder."""
    from converters.common import Precision
    from converters.tflite import export_cells
    from edge.keras_model import build_keras_model, load_keras_weights
    from edge.lowering import EDGE, lowered_keras_weights

    # Default BatchNorm statistics here: with the random ones, XNNPACK refuses to prepare an int8 node of the
    # first reduction cell of this toy network ("failed to prepare", seen with LiteRT 2.3; not with the real
    # NASNet-Mobile). Not yet root-caused; noted in the ExecuTorch/lowering issue notes.
    cfg, model = small_nasnet(realistic_bn=False)
    weights = lowered_keras_weights(model.keras_weights(), cfg, EDGE)
    whole = build_keras_model(cfg, classifier_activation=None, lowered=EDGE)
    load_keras_weights(whole, weights)
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 48, 48, 3)).astype(np.float32)
    out = tmp_path_factory.mktemp("small_cells")
    export_cells(cfg, weights, EDGE, Precision.INT8, calibration, "int8", out, whole)
    return out / "cells"


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
    """The main job, as the README runs it: edge form, full int8, default model."""
    return _convert_tflite(tflite_dir, "--int8")


@pytest.fixture(scope="session")
def tflite_fp32(tflite_dir) -> dict:
    return _convert_tflite(tflite_dir, "--precision", "fp32")


@pytest.fixture(scope="session")
def tflite_stock_int8(tflite_dir) -> dict:
    return _convert_tflite(tflite_dir, "--int8", "--no-lowering")


# The ExecuTorch exports are the slowest artifacts (minutes each, mostly single-threaded torch.export/FX
# passes). They run one after the other in a background process chain, started as soon as the tests that
# need them are collected, so that they use the second core while the TFLite and model tests run on the
# first; the tests that need them run last.
_PTE_JOBS = {"pte_int8": ["--int8", "--num-calibration", "48"], "pte_fp32": ["--precision", "fp32"]}
_pte_done: dict = {}  # name -> threading.Event, set when its export has finished
_pte_rc: dict = {}
_pte_procs: list = []
_pte_stop = threading.Event()
_PTE_DIR: list[Path] = []


def _run_pte_chain(names: list[str], out: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core: the test process keeps the other
    try:
        for name in names:
            if _pte_stop.is_set():  # the session ended (a subset of the tests ran): start nothing more
                break
            with open(out / f"{name}.log", "w") as log:
                proc = subprocess.Popen([sys.executable, "-m", "converters.executorch", "--output", str(out),
                                         *_PTE_JOBS[name]], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
                _pte_procs.append(proc)
                _pte_rc[name] = proc.wait()
            _pte_done[name].set()
    finally:  # never leave a fixture waiting on a chain that died
        for name in names:
            _pte_rc.setdefault(name, -1)
            _pte_done[name].set()


def pytest_collection_modifyitems(session, config, items):
    import tempfile

    def uses_pte(item) -> bool:
        return any(n in getattr(item, "fixturenames", ()) for n in _PTE_JOBS)

    # tests that wait for the background exports run last, so the wait overlaps the rest of the suite
    items[:] = [i for i in items if not uses_pte(i)] + [i for i in items if uses_pte(i)]
    needed = [n for n in _PTE_JOBS if any(n in getattr(item, "fixturenames", ()) for item in items)]
    if not needed or config.getoption("collectonly"):
        return
    out = Path(tempfile.mkdtemp(prefix="nasnet_pte_"))
    _PTE_DIR.append(out)
    for name in needed:
        _pte_done[name] = threading.Event()
    threading.Thread(target=_run_pte_chain, args=(needed, out), daemon=True).start()


def pytest_sessionfinish(session, exitstatus):
    import shutil

    _pte_stop.set()
    for proc in _pte_procs:
        if proc.poll() is None:
            proc.kill()
    for d in _PTE_DIR:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pte_dir(tmp_path_factory) -> Path:
    return _PTE_DIR[0] if _PTE_DIR else tmp_path_factory.mktemp("pte")


def _convert_pte(out: Path, name: str) -> dict:
    """The manifest of the background export ``name`` (started at collection), waiting for it."""
    import json

    done = _pte_done.get(name)
    if done is None:  # not started (e.g. a fixture requested indirectly): run it here
        from converters.executorch import build_parser, convert

        manifest = convert(build_parser().parse_args(["--output", str(out), *_PTE_JOBS[name]]))
        return json.loads((out / (manifest["artifact"] + ".json")).read_text())
    assert done.wait(timeout=2400), f"background export {name} did not finish in 40 minutes"
    rc = _pte_rc[name]
    log = (out / f"{name}.log").read_text(errors="replace")
    assert rc == 0, f"python -m converters.executorch {' '.join(_PTE_JOBS[name])} failed ({rc}):\n{log[-3000:]}"
    precision = "int8" if "--int8" in _PTE_JOBS[name] else "fp32"
    return json.loads((out / f"nasnet_mobile_edge_xnnpack_{precision}.pte.json").read_text())


@pytest.fixture(scope="session")
def pte_fp32(pte_dir) -> dict:
    return _convert_pte(pte_dir, "pte_fp32")


@pytest.fixture(scope="session")
def pte_int8(pte_dir) -> dict:
    return _convert_pte(pte_dir, "pte_int8")
