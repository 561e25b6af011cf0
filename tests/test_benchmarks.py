"""Benchmark harness: local runs, the real SSH target against a local sshd, the adb target via a stand-in."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.devices import DeviceError, parse_benchmark_model, parse_executor_runner
from conftest import assert_one_line_error, run_module


def test_local_benchmark_writes_json_markdown_and_plot(tflite_int8, tflite_fp32, tflite_dir, tmp_path):
    a, b = tflite_dir / tflite_fp32["artifact"], tflite_dir / tflite_int8["artifact"]
    out = tmp_path / "bench"
    # GPU rows (LiteRT's GPU accelerator on lavapipe, ~1 minute of shader compilation per full model):
    # tests/test_gpu.py, on the small network
    r = run_module("benchmarks.run", a, b, "--threads", "1", "--delegate", "xnnpack,none", "--runs", "6",
                   "--rounds", "2", "--warmup", "1", "--output", out, "--quiet", "--baseline", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "nasnet-edge-benchmark/1" and res["environment"]["cores"] >= 1
    ok = [x for x in res["results"] if x["status"] == "ok"]
    assert len(ok) == 4  # 2 models x (xnnpack, none)
    for x in ok:
        assert x["latency_ms"]["n"] == 6 and x["latency_ms"]["median"] > 0 and x["load_ms"] > 0
        assert {"median", "p90", "p99", "mean", "std", "min"} <= set(x["latency_ms"])
        assert x["process_peak_rss_mb"] > 0 and x["size_bytes"] > 0
    assert res["ratios"] and all("ci95" in q for q in res["ratios"])
    assert (out / "results.md").read_text().count("| local |") == 4
    assert (out / "latency.png").stat().st_size > 1000
    # comparing a result with itself: every ratio is 1 and the interval says "no measurable change"
    r = run_module("benchmarks.compare", out / "results.json", out / "results.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("no measurable change") == 4 and "| 1.000 |" in r.stdout
    assert_one_line_error(run_module("benchmarks.compare", out / "results.md", out / "results.json"))


def test_per_cell_benchmark_table_and_chart(small_tflite_cells, tmp_path):
    r = run_module("benchmarks.run", "--cells", small_tflite_cells, "--runs", "3", "--rounds", "1",
                   "--output", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "cells.json").read_text())["results"][0]
    assert len(res["parts"]) == 9 and res["sum_of_parts_ms"] > 0
    assert set(res["by_kind_ms"]) == {"stem", "normal", "reduction", "head"}
    assert (tmp_path / "cells.png").stat().st_size > 1000


@pytest.mark.parametrize("args", [["missing.tflite"], ["README.md"], ["x.tflite", "--device", "ssh://nobody@"],
                                  ["--cells", "/nonexistent"]])
def test_bad_benchmark_inputs_give_one_line_errors(args, tmp_path):
    if args[0] == "x.tflite":
        (tmp_path / "x.tflite").write_bytes(b"0")
        args = [str(tmp_path / "x.tflite")] + args[1:]
    assert_one_line_error(run_module("benchmarks.run", *args))


# ----------------------------------------------------------------------------- SSH, for real
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with a throw-away host key and client key (Debian openssh-server)."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(sshd_bin).exists(), "openssh-server is not installed (.ci/run installs it)"
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    import getpass

    user = getpass.getuser()
    config = d / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d / 'host_key'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        PidFile {d / 'sshd.pid'}
        Subsystem sftp /usr/lib/openssh/sftp-server
        """))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield {"port": port, "user": user, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts")}
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_device_runs_the_harness_remotely_and_brings_results_back(sshd, tflite_int8, tflite_dir, tmp_path):
    # a file name a shell would love to interpret: quoting must keep it a file name
    model = tmp_path / "evil name; touch pwned.tflite"
    model.write_bytes((tflite_dir / tflite_int8["artifact"]).read_bytes())
    out = tmp_path / "ssh"
    r = run_module("benchmarks.run", model, "--device", f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}",
                   "--device", "local", "--ssh-key", sshd["key"], "--known-hosts", sshd["known_hosts"],
                   "--remote-python", sys.executable, "--runs", "4", "--rounds", "2", "--warmup", "1",
                   "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    devices = {x["device"] for x in res["results"]}
    assert devices == {f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}", "local"}
    remote = [x for x in res["results"] if x["device"].startswith("ssh://")][0]
    assert remote["status"] == "ok" and remote["latency_ms"]["n"] == 4
    assert res["devices"][remote["device"]]["cores"] >= 1
    assert not Path("pwned.tflite").exists() and not (Path("/tmp/nasnet-edge-bench") / "pwned.tflite").exists()


def test_ssh_unreachable_host_is_one_line(tmp_path, tflite_int8, tflite_dir):
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device",
                   f"ssh://nobody@127.0.0.1:{free_port()}", "--quiet")
    assert_one_line_error(r)
    assert "cannot reach" in r.stderr


def test_ssh_board_without_runtime_names_what_to_install(sshd, tflite_int8, tflite_dir, tmp_path):
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")  # no site-packages: no numpy, no LiteRT
    bare.chmod(0o755)
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device",
                   f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}", "--ssh-key", sshd["key"],
                   "--known-hosts", sshd["known_hosts"], "--remote-python", str(bare), "--quiet")
    assert_one_line_error(r)
    assert "pip install ai-edge-litert" in r.stderr


# ----------------------------------------------------------------------------- adb, via a stand-in
# Real output of LiteRT's benchmark_model, as quoted in its documentation (tensorflow/lite/tools/benchmark
# README, "Reducing variance" / sample output), and of ExecuTorch's executor_runner.
BENCHMARK_MODEL_OUTPUT = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/mobilenet_quant_v1_224.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/mobilenet_quant_v1_224.tflite
The input model file size (MB): 4.27635
Initialized session in 4.128ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=25 first=34637 curr=17656 min=17349 max=34637 avg=18722.2 std=3338

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=56 first=17712 curr=17715 min=16972 max=19398 avg=17796.8 std=450

Inference timings in us: Init: 4128, First inference: 34637, Warmup (avg): 18722.2, Inference (avg): 17796.8
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=2.5625 overall=9.07422
Peak memory footprint (MB): init=3.14844 overall=10.3125
"""
EXECUTOR_RUNNER_OUTPUT = """\
I 00:00:00.000640 executorch:executor_runner.cpp:82] Model file mv2_xnnpack_fp32.pte is loaded.
I 00:00:00.000650 executorch:executor_runner.cpp:91] Using method forward
I 00:00:00.010345 executorch:executor_runner.cpp:138] Setting up planned buffer 0, size 3261440.
I 00:00:00.172417 executorch:executor_runner.cpp:161] Method loaded.
I 00:00:00.172427 executorch:executor_runner.cpp:171] Inputs prepared.
I 00:00:00.482104 executorch:executor_runner.cpp:180] Model executed successfully 20 time(s) in 309.650 ms.
"""


def test_parsers_read_the_documented_tool_output():
    lit = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    assert lit["load_ms"] == pytest.approx(4.128) and lit["first_ms"] == pytest.approx(34.637)
    assert lit["latency_ms"]["mean"] == pytest.approx(17.7968) and lit["latency_ms"]["n"] == 56
    assert lit["latency_ms"]["min"] == pytest.approx(16.972) and lit["peak_memory_mb"] == pytest.approx(10.3125)
    et = parse_executor_runner(EXECUTOR_RUNNER_OUTPUT)
    assert et["latency_ms"]["mean"] == pytest.approx(15.4825) and et["latency_ms"]["n"] == 20
    with pytest.raises(DeviceError):
        parse_benchmark_model("Segmentation fault")


STAND_IN_ADB = r'''#!{python}
"""STAND-IN for Android's adb (no phone exists on CI): runs "device" commands against a local folder.

Behaviour is set by env: FAKE_ADB_ROOT (the phone's filesystem), FAKE_ADB_STATE (device|unauthorized|none).
"""
import os, shlex, shutil, subprocess, sys
root = os.environ["FAKE_ADB_ROOT"]
state = os.environ.get("FAKE_ADB_STATE", "device")
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
def local(p):
    return os.path.join(root, p.lstrip("/"))
if args[0] == "devices":
    print("List of devices attached")
    if state != "none":
        print("STANDIN01\t" + state)
    sys.exit(0)
if args[0] == "push":
    os.makedirs(os.path.dirname(local(args[2])), exist_ok=True)
    shutil.copy(args[1], local(args[2]))
    print("1 file pushed")
    sys.exit(0)
if args[0] == "shell":
    argv = shlex.split(args[1])
    props = {"ro.product.model": "Stand-in Phone", "ro.soc.model": "SM8550", "ro.build.version.release": "14",
             "ro.product.cpu.abi": "arm64-v8a"}
    if argv[0] == "getprop":
        print(props.get(argv[1], ""))
    elif argv[0] == "dumpsys":
        print("Current Battery Service state:\n  temperature: 312")
    elif argv[0] == "cat":
        print("schedutil")
    elif argv[0] in ("mkdir", "chmod"):
        pass
    else:  # a pushed tool: run the local copy, mapping device paths into the folder
        argv = [a.replace("/data/local/tmp", local("/data/local/tmp")) for a in argv]
        sys.exit(subprocess.run([sys.executable] + argv).returncode)
    sys.exit(0)
sys.exit(1)
'''

STAND_IN_TOOL = r'''#!/usr/bin/env python3
"""STAND-IN for {tool} on the phone: prints the documented output format, records its arguments."""
import sys, pathlib
pathlib.Path(sys.argv[0] + ".args").write_text(" ".join(sys.argv[1:]))
print({output!r})
'''


@pytest.fixture
def stand_in_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(STAND_IN_ADB.replace("{python}", sys.executable))
    adb.chmod(0o755)
    tools = {}
    for tool, output in (("benchmark_model", BENCHMARK_MODEL_OUTPUT), ("executor_runner", EXECUTOR_RUNNER_OUTPUT)):
        p = tmp_path / tool
        p.write_text(STAND_IN_TOOL.format(tool=tool, output=output))
        tools[tool] = p
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path / "phone"))
    return tools


def test_adb_device_pushes_runs_and_parses_through_a_stand_in(stand_in_adb, tflite_int8, tflite_dir, tmp_path):
    out = tmp_path / "adb"
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device", "adb", "--threads", "1,4",
                   "--delegate", "xnnpack,gpu", "--litert-benchmark", stand_in_adb["benchmark_model"],
                   "--runs", "10", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    recs = res["results"]
    assert len(recs) == 4 and all(x["device"] == "adb" and x["status"] == "ok" for x in recs)
    assert recs[0]["latency_ms"]["mean"] == pytest.approx(17.7968)
    env = res["devices"]["adb"]["android"]
    assert env["model"] == "Stand-in Phone" and env["soc"] == "SM8550" and env["android"] == "14"
    assert env["cpu_governor"] == "schedutil" and env["battery_temp_before_c"] == pytest.approx(31.2)
    args = (tmp_path / "phone" / "data/local/tmp/nasnet_edge/benchmark_model.args").read_text()
    assert "--use_gpu=true" in args and "--num_threads=4" in args


@pytest.mark.parametrize("state,expect", [("none", "no Android device attached"), ("unauthorized", "unauthorized")])
def test_adb_device_states_are_explained(stand_in_adb, monkeypatch, tflite_int8, tflite_dir, state, expect):
    monkeypatch.setenv("FAKE_ADB_STATE", state)
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device", "adb",
                   "--litert-benchmark", stand_in_adb["benchmark_model"], "--quiet")
    assert_one_line_error(r)
    assert expect in r.stderr


def test_adb_without_the_tool_says_which_flag(stand_in_adb, tflite_int8, tflite_dir):
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device", "adb", "--quiet")
    assert_one_line_error(r)
    assert "--litert-benchmark" in r.stderr
