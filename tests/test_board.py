"""Linux boards over SSH: an emulated aarch64 Debian board (``benchmarks.board``) and output verification.

The board tests start a real arm64 Debian userland under qemu-user with sshd on 127.0.0.1 and run the
toolkit's SSH target against it: XNNPACK's ARM kernels, the aarch64 LiteRT wheel, another libc build. They
need root (debootstrap, chroot, mounts) and about 6 minutes the first time, so they run when
``NASNET_EDGE_BOARD=DIR`` names the board's folder: ``.ci/run`` does that from nothing on every run, after
the suite. The other tests here (verification maths, emulation detection, cpuinfo, errors) always run.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, run_module

BOARD = os.environ.get("NASNET_EDGE_BOARD")
needs_board = pytest.mark.skipif(not BOARD, reason="set NASNET_EDGE_BOARD=DIR (root; ~6 min the first time) to "
                                 "start the emulated aarch64 board; .ci/run does")
SHIPPED_INT8 = REPO / "edge/assets/models/nasnet_mobile_imagenette_int8.tflite"


# ----------------------------------------------------------------------------- always
def test_fake_cpuinfo_names_the_emulated_core():
    from benchmarks.board import CPUS, cpuinfo_text

    text = cpuinfo_text("cortex-a76", 2)
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd0b" in text
    assert "asimddp" in text.split("Features\t:")[1].splitlines()[0]  # dotprod: XNNPACK's int8 kernels use it
    assert "asimddp" not in cpuinfo_text("cortex-a72", 1) and set(CPUS) == {"cortex-a76", "cortex-a72"}


def test_this_machine_is_not_taken_for_qemu_user():
    from benchmarks.remote_runner import emulation, environment

    emu = emulation()
    assert emu is None or not emu.startswith("qemu-user"), emu
    env = environment()
    assert env["emulated"] == bool(emu) and env["cores"] >= 1 and env["versions"]["python"]


def test_int8_outputs_are_compared_in_quantization_steps_and_logits():
    from benchmarks.devices import compare_outputs

    local = np.array([[10, -3, 7], [0, 5, 1]], np.int8)
    remote = local.copy()
    remote[1, 2] = 6  # one step up on one output: a different top-1 on that photo
    logits = (local.astype(np.float32) - 1) * 0.5
    v = compare_outputs(remote, local, logits, (0.5, 1), "m.tflite")
    assert not v["bit_identical"] and v["max_abs_diff_quantized_steps"] == 5
    assert v["max_abs_diff"] == pytest.approx(2.5) and v["top1_agreement"] == 0.5
    same = compare_outputs(local.copy(), local, logits, (0.5, 1), "m.tflite")
    assert same["bit_identical"] and same["max_abs_diff"] == 0 and same["top1_agreement"] == 1.0
    f = compare_outputs(logits + 1e-6, logits, logits, None, "m.tflite")
    assert not f["bit_identical"] and f["max_abs_diff"] == pytest.approx(1e-6, rel=0.05)
    from benchmarks.devices import DeviceError

    with pytest.raises(DeviceError, match="not the same artifact"):
        compare_outputs(local[:1], local, logits, (0.5, 1), "m.tflite")


def test_remote_runner_reports_missing_runtimes_per_row(tmp_path):
    """A .pte on a board without ExecuTorch is an 'unavailable' row naming the install command, not a failed run."""
    import subprocess

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cases": [{"model": str(tmp_path / "m.pte"), "local": "m.pte", "threads": 1,
                                          "delegate": "xnnpack"}], "runs": 1, "rounds": 1, "warmup": 0}))
    runner = tmp_path / "runner"
    runner.mkdir()
    (runner / "remote_runner.py").write_text((REPO / "benchmarks/remote_runner.py").read_text())
    # a Python that has numpy but cannot import executorch: the package path is hidden by a blocking module
    (runner / "executorch.py").write_text("raise ImportError('blocked for this test')\n")
    r = subprocess.run([sys.executable, str(runner / "remote_runner.py"), str(job)], capture_output=True, text=True,
                       cwd=runner, env={**os.environ, "PYTHONPATH": str(runner)}, timeout=300)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    (row,) = doc["results"]
    assert row["status"] == "unavailable" and "pip install executorch" in row["missing"], row
    assert "executorch" in doc["missing"]


def test_remote_runner_times_a_pte_at_the_shape_it_is_sent_and_names_a_wrong_one(small_input_pte, tmp_path):
    """The host sends each .pte's input shape from its manifest; the runner times the program at it, names a shape
    the program does not take (one error row, the other cases still timed), and without one asks the program."""
    import subprocess

    cases = [{"model": str(small_input_pte), "local": "a.pte", "threads": 1, "delegate": "xnnpack", **extra}
             for extra in ({"input_shape": [1, 3, 48, 48]}, {"input_shape": [1, 3, 224, 224]}, {})]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cases": cases, "runs": 2, "rounds": 1, "warmup": 0}))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/remote_runner.py"), str(job)], capture_output=True,
                       text=True, timeout=600)
    rows = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    by_shape = {str(row.get("input_shape")): row for row in rows}
    sent, wrong, asked = by_shape["[1, 3, 48, 48]"], by_shape["[1, 3, 224, 224]"], by_shape["None"]
    assert sent.get("status", "ok") == "ok" and len(sent["times_ms"]) == 2, sent
    assert asked.get("status", "ok") == "ok" and len(asked["times_ms"]) == 2, asked
    assert wrong["status"] == "error" and "[1, 3, 224, 224]" in wrong["reason"] and "[1, 3, 48, 48]" in wrong["reason"]


def test_verification_table_marks_emulated_boards():
    from benchmarks.devices import verification_markdown

    result = {"devices": {"local": {}, "ssh://root@127.0.0.1:2222": {
        "cpu": "Cortex-A76", "cores": 2, "os": "Linux-aarch64", "versions": {"python": "3.11.2", "ai_edge_litert": "2.3.0"},
        "emulated": True, "emulation": "qemu-user: aarch64 binaries run through qemu-aarch64-static",
        "qemu_cpu": "cortex-a76", "verification": [{"model": "a_int8.tflite", "status": "ok", "images": 20,
                                                    "bit_identical": True, "max_abs_diff": 0.0,
                                                    "top1_agreement": 1.0}]}}}
    text = "\n".join(verification_markdown(result))
    assert "**EMULATED**" in text and "QEMU_CPU=cortex-a76" in text and "| a_int8.tflite | 20 | yes | 0 |" in text


def test_board_commands_give_one_line_errors(tmp_path):
    r = run_module("benchmarks.board", "status", "--dir", tmp_path / "none")
    assert_one_line_error(r)
    assert "board up --dir" in r.stderr
    r = run_module("benchmarks.board", "up", "--dir", tmp_path / "b", "--cpu", "max")
    assert_one_line_error(r)
    assert "cortex-a76" in r.stderr and not (tmp_path / "b").exists()
    r = run_module("benchmarks.run", SHIPPED_INT8, "--board", tmp_path / "none", "--quiet")
    assert_one_line_error(r)


# ----------------------------------------------------------------------------- the emulated board
@pytest.fixture(scope="module")
def board():
    r = run_module("benchmarks.board", "up", "--dir", BOARD, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((Path(BOARD) / "board.json").read_text())
    # a second start reuses every stage: it only checks the mounts and that sshd answers
    r = run_module("benchmarks.board", "up", "--dir", BOARD, "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((Path(BOARD) / "board.json").read_text())
    yield {**again, "first_up": first}
    r = run_module("benchmarks.board", "down", "--dir", BOARD, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [ln for ln in open("/proc/mounts") if str(Path(BOARD).resolve()) in ln], "mounts left behind"


@pytest.fixture(scope="module")
def board_models(tmp_path_factory):
    """The shipped int8 .tflite, an fp32 .tflite of the default model (converted here) and a small .pte."""
    out = tmp_path_factory.mktemp("board_models")
    r = run_module("converters.tflite", "--precision", "fp32", "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    from conftest import artifact_manifests

    (m,) = artifact_manifests(out, "fp32")  # the file the manifest names, not a guess from file names
    fp32 = out / m["artifact"]
    import torch

    from conftest import small_nasnet
    from converters.common import Precision
    from converters.executorch import export_program, write_program

    _, model = small_nasnet(lowered=True)
    edge = export_program(model, (torch.zeros(1, 3, 48, 48),), Precision.FP32, None, "xnnpack", progress=False)
    pte = out / "small_nasnet_fp32.pte"
    write_program(edge, pte)
    return {"int8": SHIPPED_INT8, "fp32": fp32, "pte": pte}


@needs_board
def test_board_is_aarch64_and_second_start_reuses_everything(board):
    assert board["first_up"]["emulated"] and board["qemu_cpu"] == "cortex-a76"
    assert set(board["reused"]) == {"rootfs", "runtime", "keys"}, board
    from benchmarks.board import Board

    r = Board(BOARD, board["port"], board["qemu_cpu"]).ssh("uname", "-m")
    assert r.stdout.strip() == "aarch64"


@needs_board
def test_int8_and_fp32_on_the_board_agree_with_this_machine(board, board_models, tmp_path):
    out = tmp_path / "run"
    r = run_module("benchmarks.run", board_models["int8"], board_models["fp32"], board_models["pte"], "--board", BOARD,
                   "--runs", "2", "--rounds", "1", "--warmup", "0", "--verify-images", "12", "--output", out,
                   "--quiet", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    env = res["devices"][board["device"]]
    assert env["machine"] == "aarch64" and env["emulated"] and env["qemu_cpu"] == "cortex-a76", env
    assert env["cpu"] == "Cortex-A76" and env["versions"]["ai_edge_litert"] == "2.3.0"
    rows = {Path(x["model"]).name: x for x in res["results"] if x["device"] == board["device"]}
    assert rows[SHIPPED_INT8.name]["status"] == "ok" and rows[SHIPPED_INT8.name]["emulated"] is True
    assert rows[board_models["fp32"].name]["status"] == "ok"
    pte = rows[board_models["pte"].name]
    assert pte["status"] == "unavailable" and "pip install executorch" in pte["reason"] and "CUDA" in pte["reason"]
    ver = {Path(v["model"]).name: v for v in env["verification"]}
    int8, fp32 = ver[SHIPPED_INT8.name], ver[board_models["fp32"].name]
    # int8: XNNPACK's integer kernels on ARM (NEON dotprod) and x86 compute the same integers
    assert int8["images"] == 12 and int8["bit_identical"], int8
    # fp32: other kernels sum in another order (NEON vs AVX FMA): not bit-identical, same answers, tiny error
    assert fp32["top1_agreement"] == 1.0 and fp32["max_rel_diff"] < 1e-4, fp32
    md = (out / "results.md").read_text()
    assert "**EMULATED**" in md


@needs_board
def test_a_damaged_transfer_is_caught_by_the_sha256_check(board, tmp_path):
    """STAND-IN for a broken link: an `scp` that copies only the first kilobyte of each model."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scp"
    fake.write_text(f"""#!/bin/sh
# copies a truncated version of any .tflite it is given, then hands over to the real scp
args=""
for a in "$@"; do
  case "$a" in
    *.tflite) if [ -f "$a" ]; then head -c 1024 "$a" > "{tmp_path}/cut.tflite"; a="{tmp_path}/cut.tflite"; fi;;
  esac
  args="$args '$a'"
done
eval exec {shutil.which('scp')} $args
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    import subprocess

    r = subprocess.run([sys.executable, "-m", "benchmarks.run", str(SHIPPED_INT8), "--board", BOARD, "--no-verify",
                        "--runs", "1", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert_one_line_error(r)
    assert "sha256" in r.stderr and "truncated" in r.stderr


@needs_board
def test_board_without_the_runtime_names_the_command_and_setup_installs_it(board):
    r = run_module("benchmarks.run", SHIPPED_INT8, "--device", board["device"], "--ssh-key", board["ssh_key"],
                   "--known-hosts", board["known_hosts"], "--remote-python", "python3", "--no-verify", "--runs", "1",
                   "--quiet", timeout=600)
    assert_one_line_error(r)
    assert "pip install ai-edge-litert==2.3.0" in r.stderr and "--setup" in r.stderr
    r = run_module("benchmarks.run", SHIPPED_INT8, "--device", board["device"], "--ssh-key", board["ssh_key"],
                   "--known-hosts", board["known_hosts"], "--remote-python", "python3", "--setup", "--runs", "1",
                   "--rounds", "1", "--warmup", "0", "--verify-images", "2", "--quiet", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
