"""Shared, session-scoped fixtures: expensive artifacts are made once per test run."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One TensorFlow intra-op thread in the test process, as in the background chain (below): the chain keeps one
# core busy for most of the run, and a second TensorFlow thread there only contends with it (set before any
# test imports TensorFlow, which reads it once).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

# The Ctrl-C tests send SIGINT to a converter or a benchmark run, as a terminal's Ctrl-C would. A suite started
# in the background of a non-interactive shell (`nohup ... &`, some CI runners) inherits SIGINT *ignored*, every
# child inherits that, and Python then installs no KeyboardInterrupt handler: the signal is dropped and those
# tests fail for the launcher's reason (seen in this project's CI rehearsals: SigIgn 0x1001007). A handler here
# is reset to the default in every child at exec, so children see SIGINT as a user's terminal delivers it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "edge" / "assets"
# The suite uses only what the repository holds or makes: the shipped photos (edge/assets/README.md: 100
# calibration photos from Imagenette train, 200 validation and 30 sample photos from Imagenette val, all
# named <wnid>_...), videos made from them, generated networks. Never a data folder beside the checkout: a user's clone has none,
# and .ci/run runs the suite in a copy of the repository with no folder beside it to prove it.


def shipped_photos(folder: str, wnid: str | None = None) -> list[Path]:
    """Shipped photos of ``edge/assets/<folder>`` (calibration, validation, samples), of one class if given."""
    from edge.preprocessing import list_images

    return [f for f in list_images(ASSETS / folder) if wnid is None or f.name.startswith(wnid + "_")]


def shipped_classes() -> list[str]:
    """The wnids of the shipped photos' classes, sorted (Imagenette's 10)."""
    return sorted({f.name.split("_")[0] for f in shipped_photos("validation")})


def class_folders(root: Path, split_sources: dict[str, tuple[str, int]], classes: list[str]) -> Path:
    """ImageNet layout ``root/<split>/<wnid>/`` made by copying shipped photos: ``{split: (asset folder, n)}``."""
    import shutil

    for split, (folder, n) in split_sources.items():
        for wnid in classes:
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for f in shipped_photos(folder, wnid)[:n]:
                shutil.copy(f, d / f.name)
    return root


def real_val_images(n_per_class: int = 1) -> list[Path]:
    """Real photographs, ``n_per_class`` of each class, from the shipped held-out validation set."""
    return [f for wnid in shipped_classes() for f in shipped_photos("validation", wnid)[:n_per_class]]


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

    from edge.model.config import nasnet_mobile
    from edge.model.torch_emit import build_torch_model

    cfg = nasnet_mobile(num_classes=num_classes).with_(penultimate_filters=96, num_blocks=1, stem_filters=32,
                                                       input_size=48)
    torch.manual_seed(0)
    # lowered: a target of edge.model.passes (True: XNNPACK's float edge form, what ExecuTorch is given)
    model = build_torch_model(cfg, "xnnpack_fp32" if lowered is True else (lowered or "reference"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random init leaves mean 0 / var 1, which hides layout bugs
        for bn in () if not realistic_bn else (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0, 0.1, generator=g)
            bn.running_mean.normal_(0, 0.2, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
    return cfg, model.eval()


@pytest.fixture(scope="session")
def small_tflite_cells() -> Path:
    """``python -m converters.tflite --int8 --io int8 --cells`` of :func:`small_nasnet` (the chain's
    ``tflite_small_int8``): the cells folder."""
    return Path(background_manifest("tflite_small_int8")["_path"]).parent / "cells"


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
    from edge.model.weights import save_keras_model_as_h5

    path = tmp_path_factory.mktemp("weights") / "NASNet-mobile.h5"
    save_keras_model_as_h5(keras_reference, path, scope_prefix=True, colon_suffix=True)
    return path


@pytest.fixture(scope="session")
def official_no_top_h5(tmp_path_factory) -> Path:
    import keras

    from edge.model.weights import save_keras_model_as_h5

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
def tflite_int8() -> dict:
    """The main job, as the README runs it (``python -m converters.tflite --int8``): edge form, full int8,
    default model; the first job of the background chain."""
    return background_manifest("tflite_int8", "int8")


@pytest.fixture(scope="session")
def tflite_dir(tflite_int8) -> Path:
    """The main job's output folder (the fp32 edge artifact is copied in beside it by ``tflite_fp32``)."""
    return Path(tflite_int8["_path"]).parent


# The slowest artifacts (minutes each: the main job, the ExecuTorch exports, mostly single-threaded
# torch.export/FX passes, and the TFLite conversions that only a few tests read) are made one after the other
# in a background process chain, started as soon as the tests that need them are collected, so that they use
# the second core while the tests on the main process use the first; the tests that need them run last. Each
# job is the real command line, as a user runs it. {calibration_with_a_broken_file} is made before its job
# starts.
_JOBS: dict[str, tuple[str, list[str]]] = {
    "tflite_int8": ("converters.tflite", ["--int8"]),  # the main job, first: most of the tail tests read it
    # the small network's GPU form with its per-part export (tests/test_gpu.py); as a job, the test process no
    # longer spends 50 s on its ten conversions, and the CLI's --weights --target gpu --cells path is the one tested;
    # also the one conversion with another crop than the model's (--crop-fraction, checked by the fixture)
    "tflite_small_gpu": ("converters.tflite", ["--weights", "{small_network_weights}", "--precision", "fp32",
                                               "--target", "gpu", "--cells", "--validation", "{validation_subset}",
                                               "--crop-fraction", "1.0"]),
    # the three float artifacts in one run, as a user makes them all at once (one build, one SavedModel);
    # validated on {validation_subset} (their tests check agreement and delegation, not the 200-photo figure:
    # the reference network and three validations on 200 photos were 75 s of this job)
    "tflite_float": ("converters.tflite", ["--precision", "fp32,fp16,dynamic", "--validation", "{validation_subset}"]),
    # both ExecuTorch programs in one run, as a user makes them at once: one load, one reference network and one
    # prediction of the validation images for both (two runs repeated them: 25-30 s of the chain)
    "pte": ("converters.executorch", ["--precision", "fp32,int8", "--num-calibration", "48",
                                      "--validation", "{validation_subset}"]),
    # the stock graph's int8 pins where upstream XNNPACK falls back (which ops, not accuracy): on the small
    # network (the same cells' ops, 31 s instead of 103 s), with the calibrator's own ranges (one quantization)
    "tflite_stock_int8": ("converters.tflite", ["--weights", "{small_network_weights}", "--int8", "--no-lowering",
                                                "--activation-ranges", "minmax"]),
    # the small network in int8 with its per-cell export (int8 input, as the per-cell tests read the parts), and
    # the same conversion again from the same photos in a folder that also holds a broken file, with the range
    # method the first one's 'auto' chose ('auto' gives the bytes that method alone gives)
    "tflite_small_int8": ("converters.tflite", ["--weights", "{small_network_weights}", "--int8", "--io", "int8",
                                                "--cells"]),
    "tflite_small_int8_again": ("converters.tflite", [
        "--weights", "{small_network_weights}", "--int8", "--io", "int8",
        "--calibration", "{calibration_with_a_broken_file}", "--activation-ranges", "{ranges_of:tflite_small_int8}"]),
}
# session fixtures -> (the background job that makes their artifact, its precision when the job makes several)
_FIXTURE_JOBS: dict[str, tuple[str, str | None]] = {
    **{name: (name, None) for name in _JOBS if name not in ("tflite_float", "pte")},
    **{f"pte_{p}": ("pte", p) for p in ("fp32", "int8")},
    **{f"tflite_{p}": ("tflite_float", p) for p in ("fp32", "fp16", "dynamic")},
    "tflite_dir": ("tflite_int8", None),
    "small_tflite_cells": ("tflite_small_int8", None),
}
_job_done: dict = {}  # name -> threading.Event, set when its job has finished
_job_rc: dict = {}
_job_seconds: dict = {}
_job_procs: list = []
_jobs_stop = threading.Event()
_chain_running = threading.Event()  # set while the background chain has a job to run
_torch_threads: list[int] = []  # torch's thread count in this process before the chain started
_JOBS_DIR: list[Path] = []


def _job_output(out: Path, name: str) -> Path:
    """Each job's own folder: two TFLite jobs write an artifact of the same name."""
    return out / name


def _job_args(out: Path, name: str) -> list[str]:
    module, args = _JOBS[name]
    if any("{calibration_with_a_broken_file}" in a for a in args):
        calib = out / "calibration_with_a_broken_file"
        calib.mkdir(exist_ok=True)
        for f in shipped_photos("calibration"):
            (calib / f.name).write_bytes(f.read_bytes())
        (calib / "broken.jpg").write_bytes(b"not a jpeg")
        args = [a.replace("{calibration_with_a_broken_file}", str(calib)) for a in args]
    if "{validation_subset}" in args:
        subset = out / "validation_subset"
        if not subset.is_dir():  # made by the first job that needs it (the chain runs one job at a time)
            tmp = out / ".validation_subset"
            tmp.mkdir(exist_ok=True)
            for f in real_val_images(VALIDATION_SUBSET_PER_CLASS):
                (tmp / f.name).write_bytes(f.read_bytes())
            tmp.rename(subset)
        args = [str(subset) if a == "{validation_subset}" else a for a in args]
    args = [a.replace("{small_network_weights}", str(out / SMALL_WEIGHTS)) for a in args]
    for k, a in enumerate(args):
        if a.startswith("{ranges_of:"):  # read when this job starts: that job, earlier in the chain, has finished
            earlier = a[len("{ranges_of:"):-1]
            found = artifact_manifests(_job_output(out, earlier), precision="int8")
            assert found, f"the manifest of {earlier} is missing: it runs before {name}"
            args[k] = found[0]["quantization"]["activation_ranges"]["method"]
    return ["--output", str(_job_output(out, name)), *args]


SMALL_WEIGHTS = "small_nasnet.pt"
VALIDATION_SUBSET_PER_CLASS = 5  # {validation_subset}: 50 of the 200 shipped validation photos


def _write_small_weights(out: Path) -> None:
    """:func:`small_nasnet` (5 classes) as a toolkit ``.pt``, for the chain's jobs that take
    ``{small_network_weights}``. Default BatchNorm statistics: with the random ones XNNPACK refuses an int8
    node of the toy network's first reduction cell (see ``small_tflite_cells``)."""
    from edge.model.weights import save_toolkit_weights

    _, model = small_nasnet(realistic_bn=False)
    save_toolkit_weights(out / SMALL_WEIGHTS, model)


def _run_chain(names: list[str], out: Path) -> None:
    import subprocess
    import sys
    import time

    # one core: the test process keeps the other (TensorFlow's own pool, Keras predict and the converter's
    # calibration, would otherwise take both)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    try:
        for name in names:
            if _jobs_stop.is_set():  # the session ended (a subset of the tests ran): start nothing more
                break
            t = time.perf_counter()
            with open(out / f"{name}.log", "w") as log:
                proc = subprocess.Popen([sys.executable, "-m", _JOBS[name][0], *_job_args(out, name)], cwd=REPO,
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
                _job_procs.append(proc)
                _job_rc[name] = proc.wait()
            _job_seconds[name] = time.perf_counter() - t
            _job_done[name].set()
    finally:  # never leave a fixture waiting on a chain that died
        _chain_running.clear()
        for name in names:
            _job_rc.setdefault(name, -1)
            _job_done[name].set()


def background_manifest(name: str, precision: str | None = None) -> dict:
    """The manifest of the background job ``name`` (started at collection), waiting for it; ``_path`` is
    the artifact's path. ``precision`` picks one artifact of a job that makes several."""
    import tempfile

    out = _JOBS_DIR[0] if _JOBS_DIR else Path(tempfile.mkdtemp(prefix="nasnet_jobs_"))
    done = _job_done.get(name)
    if done is None:  # not started (e.g. a fixture requested indirectly): run it here
        import importlib

        if not _JOBS_DIR:
            _JOBS_DIR.append(out)
        if any("{small_network_weights}" in a for a in _JOBS[name][1]) and not (out / SMALL_WEIGHTS).exists():
            _write_small_weights(out)
        mod = importlib.import_module(_JOBS[name][0])
        mod.convert(mod.build_parser().parse_args(_job_args(out, name)))
    else:
        assert done.wait(timeout=2400), f"background job {name} did not finish in 40 minutes"
        log = (out / f"{name}.log").read_text(errors="replace")
        assert _job_rc[name] == 0, (f"python -m {_JOBS[name][0]} {' '.join(_job_args(out, name))} failed "
                                    f"({_job_rc[name]}):\n{log[-3000:]}")
    folder = _job_output(out, name)
    module = _JOBS[name][0]
    fmt = "pte" if module == "converters.executorch" else "tflite"
    found = [m for m in artifact_manifests(folder, precision) if m["format"] == fmt]
    assert len(found) == 1, (name, [m["artifact"] for m in found])
    return {**found[0], "_path": str(folder / found[0]["artifact"])}


def artifact_manifests(folder: Path, precision: str | None = None) -> list[dict]:
    """The artifact manifests in ``folder`` (of ``precision`` when given), read from the manifests themselves:
    no fact is taken from a file name."""
    import json

    from edge.artifact.manifest import SCHEMA

    found = []
    for f in sorted(folder.glob("*.json")):
        try:
            m = json.loads(f.read_text())
        except ValueError:
            continue
        if isinstance(m, dict) and m.get("schema") == SCHEMA and (precision is None or m["precision"] == precision):
            found.append(m)
    return found


def cell_part(cells: Path, name: str) -> Path:
    """The file of part ``name`` (``stem``, ``head``, ...) of a ``--cells`` export, from its cells.json."""
    import json

    (part,) = [p for p in json.loads((cells / "cells.json").read_text())["parts"] if p["name"] == name]
    return cells / part["file"]


# Fixtures that convert, export or build a real NASNet-Mobile (minutes, or tens of seconds): a test that uses one
# is marked slow, so `-m "not slow"` (the fast subset, README) leaves it out without anyone having to remember.
SLOW_FIXTURES = {*_FIXTURE_JOBS,
                 "keras_reference", "official_h5", "official_no_top_h5", "tiny_imagenette",
                 "bad", "small_gpu", "small_input_pte"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(session, config, items):
    import tempfile

    for item in items:  # before -m deselects (below, inside the yield), so that -m "not slow" sees the marks
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    result = yield
    # after -k / -m: a subset starts only the background jobs its selected tests need

    def jobs_of(item) -> set[str]:
        return {_FIXTURE_JOBS[f][0] for f in getattr(item, "fixturenames", ()) if f in _FIXTURE_JOBS}

    # tests that wait for the background jobs run last, so the wait overlaps the rest of the suite
    items[:] = [i for i in items if not jobs_of(i)] + [i for i in items if jobs_of(i)]
    used = set().union(*map(jobs_of, items)) if items else set()
    needed = [n for n in _JOBS if n in used]
    if not needed or config.getoption("collectonly"):
        return result
    out = Path(tempfile.mkdtemp(prefix="nasnet_jobs_"))
    _JOBS_DIR.append(out)
    if any("{small_network_weights}" in a for name in needed for a in _JOBS[name][1]):
        _write_small_weights(out)  # here, not in the chain's thread: small_nasnet seeds torch's global RNG
    for name in needed:
        _job_done[name] = threading.Event()
    _chain_running.set()
    threading.Thread(target=_run_chain, args=(needed, out), daemon=True).start()
    # The chain's jobs have the second core (OMP_NUM_THREADS=1), so torch in this process gets one thread too
    # while they run. With its default two, each parallel op (thousands of small ones on the 48 px networks)
    # waits at an OpenMP barrier for the thread that the busy core has preempted, and the spinning threads take
    # time from the chain. The cost grows with the load on the machine: PT2E calibration of small_nasnet took
    # 9 s an image instead of 0.3 s on a loaded machine, and beside a busy-looping process
    # test_fp32_parts_stay_float_... took 175 s with two threads, 94 s with one (as in a quiet full run).
    # The original count comes back for the tests after the chain (pytest_runtest_setup).
    import torch

    _torch_threads.append(torch.get_num_threads())
    torch.set_num_threads(1)
    return result


def pytest_runtest_setup(item):
    """One torch thread while the background chain runs (a test may have set another), the original after."""
    if not _torch_threads:
        return
    import torch

    if _chain_running.is_set():
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
    else:
        torch.set_num_threads(_torch_threads.pop())


def pytest_terminal_summary(terminalreporter):
    if _job_seconds:
        terminalreporter.write_line("background jobs (second core): " + ", ".join(
            f"{k} {v:.0f}s" for k, v in _job_seconds.items()))


def pytest_sessionfinish(session, exitstatus):
    import shutil

    _jobs_stop.set()
    for proc in _job_procs:
        if proc.poll() is None:
            proc.kill()
    for d in _JOBS_DIR:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pte_dir(pte_fp32) -> Path:
    """The ExecuTorch job's output folder (both programs)."""
    return Path(pte_fp32["_path"]).parent


@pytest.fixture(scope="session")
def pte_fp32() -> dict:
    return background_manifest("pte", "fp32")


@pytest.fixture(scope="session")
def pte_int8() -> dict:
    return background_manifest("pte", "int8")


@pytest.fixture(scope="session")
def tflite_stock_int8() -> dict:
    return background_manifest("tflite_stock_int8")


@pytest.fixture(scope="session")
def tflite_fp32(tflite_dir) -> dict:
    """The fp32 edge form, as a user makes it, beside the main job's int8 in ``tflite_dir`` (made in the chain)."""
    import shutil

    m = background_manifest("tflite_float", "fp32")
    src = Path(m["_path"])
    for f in (src, src.with_name(src.name + ".json")):
        if not (tflite_dir / f.name).exists():
            shutil.copy2(f, tflite_dir / f.name)
    return m


@pytest.fixture(scope="session")
def tflite_small_int8() -> dict:
    """The small network's int8 conversion (with its per-cell export)."""
    return background_manifest("tflite_small_int8")


@pytest.fixture(scope="session")
def tflite_small_gpu() -> dict:
    """The small network's GPU form in fp32 (``--target gpu --cells``)."""
    return background_manifest("tflite_small_gpu")


@pytest.fixture(scope="session")
def tflite_small_int8_again() -> dict:
    """The small network's int8 conversion again, from the same calibration photos given as a folder that
    also holds a broken file."""
    return background_manifest("tflite_small_int8_again")


@pytest.fixture(scope="session")
def tflite_fp16() -> dict:
    return background_manifest("tflite_float", "fp16")


@pytest.fixture(scope="session")
def tflite_dynamic() -> dict:
    return background_manifest("tflite_float", "dynamic")


SMALL_PTE_SIZE = 48  # not 224: a harness that assumes 224 px fails on it


@pytest.fixture(scope="session")
def small_input_pte(tmp_path_factory) -> Path:
    """A two-layer CNN as an XNNPACK fp32 ``.pte`` at 48 px, with a manifest as the converter writes one (its
    ``config`` and ``preprocessing`` give the input size): for the harness's input-shape paths, in seconds."""
    import json

    import torch

    from edge.model.config import nasnet_mobile
    from edge.quiet import quiet_executorch_import

    with quiet_executorch_import():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    example = (torch.zeros(1, 3, SMALL_PTE_SIZE, SMALL_PTE_SIZE),)
    program = to_edge_transform_and_lower(torch.export.export(Tiny().eval(), example),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path_factory.mktemp("small_pte") / "tiny_xnnpack_fp32.pte"
    path.write_bytes(program.buffer)
    cfg = nasnet_mobile(num_classes=5).with_(input_size=SMALL_PTE_SIZE)
    manifest = {"format": "pte", "model": "tiny", "precision": "fp32", "lowered": False,
                "preprocessing": cfg.preprocessing.to_dict(), "config": cfg.to_dict(),
                "io": "float32 NCHW in, float32 logits out (apply softmax for probabilities)"}
    path.with_name(path.name + ".json").write_text(json.dumps(manifest))
    return path
