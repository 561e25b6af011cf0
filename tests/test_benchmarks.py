"""Benchmark harness: local runs, the real SSH target against a local sshd, the adb target via a stand-in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.devices import DeviceError, parse_benchmark_model, parse_executor_runner
from conftest import ASSETS, REPO, assert_one_line_error, run_module


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
                   "--threads", "1,2", "--output", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.loads((tmp_path / "cells.json").read_text())
    results = saved["results"]
    assert [res["threads"] for res in results] == [1, 2]  # every thread count asked for, per folder
    # per-cell figures carry the machine they came from, as whole-model results do
    assert saved["environment"]["isa"]["class"] and "core_to_core" in saved["environment"]
    res = results[0]
    assert len(res["parts"]) == 9 and res["sum_of_parts_ms"] > 0
    assert set(res["by_kind_ms"]) == {"stem", "normal", "reduction", "head"}
    assert (tmp_path / "cells.png").stat().st_size > 1000
    md = (tmp_path / "cells.md").read_text()
    assert md.startswith("CPU ISA: ")  # the machine first, as in results.md
    assert "Thread scaling" in md and md.count("| cell_") == 3 * 7  # 7 cells: two per-thread tables + scaling


@pytest.mark.parametrize("args", [["missing.tflite"], ["README.md"], ["x.tflite", "--device", "ssh://nobody@"],
                                  ["--cells", "/nonexistent"], ["x.tflite", "--scaling-ceiling", "--threads", "2"],
                                  ["x.tflite", "--threads", "x"], ["x.tflite", "--threads", "0,2"],
                                  ["--cells", "/nonexistent", "--threads", "1,two"]])
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


def test_pte_input_shape_comes_from_the_manifest(tmp_path):
    from benchmarks.devices import pte_input_shape
    from edge.model.config import nasnet_mobile

    pte = tmp_path / "m.pte"
    pte.write_bytes(b"\0\0\0\0ET12")
    assert pte_input_shape(pte) is None  # no manifest: the board asks the program itself
    manifest = pte.with_name("m.pte.json")
    manifest.write_text(json.dumps({"config": nasnet_mobile().with_(input_size=331).to_dict()}))
    assert pte_input_shape(pte) == [1, 3, 331, 331]
    manifest.write_text(json.dumps({"preprocessing": {"size": 48, "crop_fraction": 0.875, "scale": 0.5, "offset": 0}}))
    assert pte_input_shape(pte) == [1, 3, 48, 48]
    manifest.write_text("{not json")
    with pytest.raises(DeviceError, match="not readable JSON"):
        pte_input_shape(pte)


def test_ssh_device_sends_the_pte_input_shape_and_the_board_times_it(sshd, small_input_pte, tmp_path):
    """A .pte at 48 px: the host sends the shape from its manifest, the board's runner times it at that shape
    (it used to time every .pte at 224 px, which a 48 px program refuses)."""
    out = tmp_path / "ssh"
    device = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    r = run_module("benchmarks.run", small_input_pte, "--device", device, "--ssh-key", sshd["key"], "--known-hosts",
                   sshd["known_hosts"], "--remote-python", sys.executable, "--runs", "2", "--rounds", "1",
                   "--warmup", "0", "--verify-images", "2", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    job = json.loads((Path("/tmp/nasnet-edge-bench") / "job.json").read_text())  # the board is this machine
    assert [c["input_shape"] for c in job["cases"]] == [[1, 3, 48, 48]]
    res = json.loads((out / "results.json").read_text())
    (row,) = res["results"]
    assert row["status"] == "ok" and row["runtime"] == "executorch" and row["latency_ms"]["n"] == 2, row
    assert row["precision"] == "fp32" and row["timing"] == "per-run"  # the artifact's facts, as a local row's
    (v,) = res["devices"][device]["verification"]
    assert v["status"] == "ok" and v["bit_identical"], v


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
if args[0] == "pull":
    shutil.copy(local(args[1]), args[2])
    print("1 file pulled")
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
"""STAND-IN for __TOOL__ on the phone: prints what the real tool prints, records its arguments and its times.

benchmark_model (LiteRT, tflite/tools/benchmark): run with --num_runs=1 --min_secs=0 it times one run after
--warmup_runs and prints as the real tool does (each line "INFO: "-prefixed; Stat::OutputToStream: "count=0",
"count=1 curr=T" or "count=N first=.. curr=.. min=.. max=.. avg=.. std=.."). The run's time in us comes from
FAKE_BM_TIMES_US, a JSON object {--use_xnnpack value: [us, ...]} taken in order, else a fixed sequence. Run
any other way it prints the documented sample output. With --output_filepath (used by --verify) it does what
the real tool does with it: runs the model once on the raw input file of --input_layer_value_files and writes
the output tensor's bytes.
executor_runner (ExecuTorch, examples/portable/executor_runner): --num_executions=N executions, each one's time
printed as "Iteration i of N: T ms" and then the total; FAKE_ET_ITERATIONS=0 makes it an older runner that
prints the total only. Each process appends its run times to <this file>.times as one JSON list.
"""
import json, os, sys
me = sys.argv[0]
with open(me + ".args", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)


def take(key):  # the how-many-th process of this kind this is
    path = f"{me}.count.{key}"
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    return n


def log_times(times):
    with open(me + ".times", "a") as f:
        f.write(json.dumps(times) + "\n")


def stat(v):  # Stat<int64_t>::OutputToStream
    if not v:
        return "count=0"
    if min(v) == max(v):
        return f"count={len(v)} curr={v[-1]}" + ("(all same)" if len(v) > 1 else "")
    avg = sum(v) / len(v)
    std = int((sum(x * x for x in v) / len(v) - avg * avg) ** 0.5)
    return f"count={len(v)} first={v[0]} curr={v[-1]} min={min(v)} max={max(v)} avg={avg:g} std={std}"


if "__TOOL__" == "executor_runner":
    n = int(flags.get("num_executions", 1))
    k = take("et")
    times = [round(14.0 + 0.25 * ((7 * k + i) % 9), 3) for i in range(n)]
    log_times(times)
    print(f"I 00:00:00.000640 executorch:executor_runner.cpp:476] Model file {flags['model_path']} is loaded.")
    print("I 00:00:00.172417 executorch:executor_runner.cpp:161] Method loaded.")
    if os.environ.get("FAKE_ET_ITERATIONS", "1") != "0":
        for i, t in enumerate(times):
            print(f"I 00:00:00.2{i:05d} executorch:executor_runner.cpp:779] Iteration {i + 1} of {n}: {t:f} ms")
    print(f"I 00:00:00.482104 executorch:executor_runner.cpp:791] Model executed successfully {n} time(s) in "
          f"{sum(times):f} ms.")
elif "output_filepath" in flags:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=flags["graph"], num_threads=int(flags.get("num_threads", 1)))
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    name, path = flags["input_layer_value_files"].rsplit(":", 1)
    assert name.replace("::", ":") == d_in["name"], (name, d_in["name"])
    x = np.fromfile(path, dtype=d_in["dtype"]).reshape(d_in["shape"])
    it.set_tensor(d_in["index"], x)
    it.invoke()
    it.get_tensor(d_out["index"]).tofile(flags["output_filepath"])
    print(__OUTPUT__)
elif flags.get("num_runs") == "1" and flags.get("min_secs") == "0":
    key = flags.get("use_xnnpack", "true")
    seq = json.loads(os.environ.get("FAKE_BM_TIMES_US", "{}")).get(key) or [17000 + 37 * i for i in range(40)]
    run = int(seq[take("bm_" + key) % len(seq)])
    warm = [run + 900 - 10 * i for i in range(int(flags.get("warmup_runs", 1)))]  # warming up: slower runs
    log_times([run / 1000])
    lines = ["STARTING!", f"Num threads: [{flags.get('num_threads')}]", f"Graph: [{flags['graph']}]",
             f"Loaded model {flags['graph']}", "The input model file size (MB): 6.12215",
             "Initialized session in 4.128ms.",
             f"Running benchmark for at least {len(warm)} iterations and at least 0 seconds but terminate if "
             "exceeding 150 seconds.", stat(warm), "",
             "Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 150 "
             "seconds.", stat([run]), "",
             f"Inference timings in us: Init: 4128, First inference: {warm[0] if warm else 0}, "
             f"Warmup (avg): {sum(warm) / len(warm) if warm else 0:g}, Inference (avg): {run}",
             "Overall peak memory footprint (MB) via periodic monitoring: 10.3125"]
    print("\n".join("INFO: " + line for line in lines))
else:
    print(__OUTPUT__)
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
        p.write_text(STAND_IN_TOOL.replace("__TOOL__", tool).replace("__OUTPUT__", repr(output)))
        tools[tool] = p
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path / "phone"))
    return tools


def phone_log(tmp_path: Path, tool: str, what: str = "times") -> list:
    """What the stand-in ``tool`` did on the "phone": its argument lines, or each process's run times."""
    text = (tmp_path / "phone" / f"data/local/tmp/nasnet_edge/{tool}.{what}").read_text()
    return text.splitlines() if what == "args" else [json.loads(x) for x in text.splitlines()]


def test_adb_device_pushes_runs_and_parses_through_a_stand_in(stand_in_adb, tflite_int8, tflite_dir, tmp_path):
    out = tmp_path / "adb"
    r = run_module("benchmarks.run", tflite_dir / tflite_int8["artifact"], "--device", "adb", "--threads", "1,4",
                   "--delegate", "xnnpack,gpu", "--litert-benchmark", stand_in_adb["benchmark_model"],
                   "--runs", "10", "--verify-images", "3", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    recs = res["results"]
    assert len(recs) == 4 and all(x["device"] == "adb" and x["status"] == "ok" for x in recs)
    # per-run times, one benchmark_model process per timed run: the times the "phone" printed
    runs = [t for (t,) in phone_log(tmp_path, "benchmark_model")]
    assert sorted(t for x in recs for t in x["times_ms"]) == sorted(runs) and len(runs) == 40
    for x in recs:
        assert x["timing"] == "per-run" and x["latency_ms"]["n"] == 10 and "summary_ms" not in x
        assert x["latency_ms"]["median"] == pytest.approx(float(np.median(x["times_ms"])))
        assert x["load_ms"] == pytest.approx(4.128) and x["peak_memory_mb"] == pytest.approx(10.3125)
    env = res["devices"]["adb"]["android"]
    assert env["model"] == "Stand-in Phone" and env["soc"] == "SM8550" and env["android"] == "14"
    assert env["cpu_governor"] == "schedutil" and env["battery_temp_before_c"] == pytest.approx(31.2)
    args = "\n".join(phone_log(tmp_path, "benchmark_model", "args"))
    assert "--use_gpu=true" in args and "--num_threads=4" in args
    assert "--num_runs=10" not in args and args.count("--num_runs=1 --min_secs=0") == 40
    # --verify (default): 3 photos through benchmark_model on the "phone", compared with this machine's run
    (v,) = res["devices"]["adb"]["verification"]
    assert v["status"] == "ok" and v["images"] == 3 and v["bit_identical"] and v["top1_agreement"] == 1.0, v
    assert args.count("--output_filepath=") == 3 and "Outputs on `adb`" in (out / "results.md").read_text()


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


# ----------------------------------------------------------------------------- one record for every target
# Per-run times a device might report, in ms: exact in us (benchmark_model prints whole us) and at 0.1 us.
TIMES_A = [10.0, 12.5, 11.25, 30.0, 10.5, 11.0, 10.75, 13.0]
TIMES_B = [20.0, 21.5, 19.75, 22.0, 40.0, 20.5, 21.0, 20.25]


def _local_record(times, delegate="xnnpack", **kw):
    from benchmarks.run import Case, case_record

    c = Case(str(SHIPPED_INT8), "litert", delegate, 1, load_ms=12.0, first_ms=15.0, rss_mb=30.0, times=list(times),
             meta={"process_peak_rss_mb": 90.0, "worker_base_rss_mb": 40.0, "worker_imports": ["ai_edge_litert"],
                   "worker_pid": 4242}, **kw)
    return case_record(c)


def _ssh_record(times, delegate="xnnpack", **row):
    from benchmarks.devices import ssh_record

    base = {"model": "/tmp/nasnet-edge-bench/00.tflite", "local": str(SHIPPED_INT8), "threads": 1,
            "delegate": delegate, "load_ms": 12.0, "first_ms": 15.0, "times_ms": list(times)}
    return ssh_record({**base, **row}, {"emulated": True, "machine": "aarch64"}, "ssh://pi@board:22")


class FakePhone:
    """Answers ``ADB.shell`` with what the device tools print (the stand-in tool's formats, in-process)."""

    def __init__(self, runs_us=(), et_iterations=None, et_total=None):
        self.runs_us, self.et_iterations, self.et_total, self.argv = list(runs_us), et_iterations, et_total, []

    def shell(self, *argv):
        self.argv.append(argv)
        if "executor_runner" in argv[0]:
            n = int(next(a for a in argv if a.startswith("--num_executions=")).split("=")[1])
            its = "".join(f"I 00:00:00.2 executorch:executor_runner.cpp:779] Iteration {i + 1} of {n}: {t:f} ms\n"
                          for i, t in enumerate(self.et_iterations or []))
            total = self.et_total if self.et_iterations is None else sum(self.et_iterations)
            return its + f"I 00:00:00.4 executorch:executor_runner.cpp:791] Model executed successfully {n} time(s) " \
                         f"in {total:f} ms.\n"
        run = self.runs_us.pop(0)
        return (f"INFO: count=1 curr={run + 700}\nINFO: \nINFO: count=1 curr={run}\nINFO: \n"
                f"INFO: Inference timings in us: Init: 4128, First inference: {run + 700}, Warmup (avg): {run + 700}, "
                f"Inference (avg): {run}\nINFO: Overall peak memory footprint (MB) via periodic monitoring: 10.5\n")


def _adb_record(times, delegate="xnnpack"):
    from benchmarks.devices import AdbCase
    from benchmarks.record import Record

    rec = Record.for_artifact(SHIPPED_INT8, "litert", delegate, 1, device="adb", timing_method="one process a run")
    case = AdbCase(rec, "/data/local/tmp/nasnet_edge/benchmark_model", "/data/local/tmp/nasnet_edge/00.tflite", 1)
    phone = FakePhone(runs_us=[round(t * 1000) for t in times])
    case.run(phone, len(times) // 2)  # two rounds, as the harness visits it
    case.run(phone, len(times) - len(times) // 2)
    assert all("--num_runs=1" in a and "--min_secs=0" in a for a in phone.argv)
    return rec


def _round_trip(r):
    from benchmarks.record import Record

    d = json.loads(json.dumps(r.to_dict()))
    assert Record.from_dict(d) == r and Record.from_dict(d).to_dict() == d
    return d


def test_records_of_local_ssh_and_adb_round_trip_through_json():
    from benchmarks.devices import AdbCase
    from benchmarks.record import Record, Status, Timing
    from benchmarks.run import Case, case_record

    local, ssh, adb = _local_record(TIMES_A), _ssh_record(TIMES_A), _adb_record(TIMES_A)
    for r in (local, ssh, adb):
        d = _round_trip(r)
        assert d["timing"] == "per-run" and d["times_ms"] == TIMES_A and d["latency_ms"]["n"] == len(TIMES_A)
        assert d["name"] == SHIPPED_INT8.name and d["precision"] == "int8" and d["network"]  # from the manifest
    assert local.memory_scope == "worker process of this case" and local.peak_growth_mb == 50.0
    gpu_meta = {"label": "functional check, not a GPU timing", "adapter": {"software": True},
                "fully_accelerated": False, "gpu_not_supported": ["CONCATENATION: not supported"]}
    gpu = case_record(Case(str(SHIPPED_INT8), "litert", "gpu", 1, times=TIMES_A, gpu_precision="fp16", meta=gpu_meta))
    d = _round_trip(gpu)
    assert d["delegate"] == "gpu" and d["gpu_precision"] == "fp16" and gpu.delegate_label == "gpu/fp16"
    assert "partitions" not in d and d["ops_outside"] == "some (not fully accelerated)"  # not XNNPACK's figures
    assert d["label"] == gpu_meta["label"] and d["gpu_not_supported"] == gpu_meta["gpu_not_supported"]
    assert ssh.emulated is True and ssh.device == "ssh://pi@board:22"
    assert adb.load_ms == pytest.approx(4.128) and adb.first_ms == pytest.approx(TIMES_A[0] + 0.7)
    assert adb.peak_memory_mb == 10.5 and adb.peak_mb == 10.5
    # rows that were not measured: no statistics, their reason, and the same round trip
    crashed = case_record(Case(str(SHIPPED_INT8), "litert", "xnnpack", 2, status="error", reason="worker killed",
                               meta={"worker_log": "Fatal Python error", "completed_runs": 3}))
    missing = _ssh_record([], status="unavailable", missing="python3 -m pip install ai-edge-litert")
    for r in (crashed, missing):
        d = _round_trip(r)
        assert "latency_ms" not in d and "timing" not in d and d["status"] == r.status.value != "ok"
    assert crashed.worker_log and "pip install ai-edge-litert" in missing.reason
    # an executor_runner that prints only its total: a summary, said to be one, never a median
    rec = Record.for_artifact(SHIPPED_INT8.with_suffix(".pte"), "executorch", "xnnpack", 1, device="adb")
    AdbCase(rec, "/x/executor_runner", "/x/01.pte", 2).run(FakePhone(et_total=75.0), 3)
    d = _round_trip(rec)
    assert rec.timing is Timing.SUMMARY and d["timing"] == "summary" and "latency_ms" not in d and not rec.times_ms
    assert d["summary_ms"] == {"mean": 15.0, "n": 5, "warmup_runs_included": 2} and rec.median_ms is None
    assert "no per-run times" in rec.ratio_skip_reason() and rec.status is Status.OK


def test_statistics_and_ratios_are_computed_the_same_way_for_every_target():
    from benchmarks.run import ratios
    from benchmarks.stats import ratio_with_noise, summarize

    made = {"local": (_local_record(TIMES_A), _local_record(TIMES_B, "none")),
            "ssh": (_ssh_record(TIMES_A), _ssh_record(TIMES_B, "none")),
            "adb": (_adb_record(TIMES_A), _adb_record(TIMES_B, "none"))}
    for target, (a, b) in made.items():
        assert a.latency_ms == summarize(TIMES_A) and b.latency_ms == summarize(TIMES_B), target
        assert a.latency_ms["p99"] == pytest.approx(float(np.percentile(TIMES_A, 99)))
        (q,), skipped = ratios([a, b], baseline="int8")
        assert not skipped and q["case"].endswith("litert/none/1t")
        assert {k: q[k] for k in ("ratio", "ci95")} == ratio_with_noise(TIMES_B, TIMES_A), target


def test_ratios_name_rows_without_per_run_times_and_the_table_says_why():
    from benchmarks.record import Record
    from benchmarks.run import ratios

    summary = Record.for_artifact(SHIPPED_INT8.with_suffix(".pte"), "executorch", "xnnpack", 1, device="adb",
                                  summary_ms={"mean": 15.0, "n": 5})
    per_run = _adb_record(TIMES_A)
    rows, skipped = ratios([per_run, summary], None)
    assert rows == [] and skipped == [{"case": summary.case, "device": "adb", "reason": summary.ratio_skip_reason()}]
    assert "mean 15.00" in skipped[0]["reason"] and "needs every run" in skipped[0]["reason"]


def test_record_from_dict_reads_older_rows_and_names_bad_ones():
    from benchmarks.record import Record, RecordError, records_of

    # an adb row of the old parser: the tool's mean stored under "median", no per-run times
    old_adb = {"model": "m.tflite", "name": "m.tflite", "runtime": "litert", "delegate": "xnnpack", "threads": 4,
               "status": "ok", "device": "adb", "warmup_avg_ms": 18.7, "peak_memory_mb": 10.3,
               "latency_ms": {"mean": 17.8, "min": 17.0, "median": 17.8, "n": 56}}
    r = Record.from_dict(old_adb)
    assert r.summary_ms == {"mean": 17.8, "min": 17.0, "n": 56} and r.median_ms is None and not r.measured
    assert r.extra == {"warmup_avg_ms": 18.7} and r.to_dict()["warmup_avg_ms"] == 18.7  # kept, written back
    # a local row of results/ (statistics beside per-run times): the statistics are recomputed, not trusted
    row = {"model": "a.tflite", "runtime": "litert", "delegate": "xnnpack", "threads": 1, "status": "ok",
           "times_ms": TIMES_A, "latency_ms": {"median": 999.0}}
    assert Record.from_dict(row).median_ms == float(np.median(TIMES_A))
    for bad, says in (({**row, "runtime": "tvm"}, "unknown runtime 'tvm'"), ({"model": "a.tflite"}, "lacks"),
                      ({**row, "times_ms": [1.0, "fast"]}, "a time must be a number"),
                      ({**row, "threads": "two"}, "threads must be a whole number")):
        with pytest.raises(RecordError, match=says):
            records_of({"results": [row, bad]}, "x.json")
        try:
            records_of({"results": [row, bad]}, "x.json")
        except RecordError as e:
            assert str(e).startswith("x.json: result 1: ") and "\n" not in str(e)


def test_committed_results_read_through_the_record_and_render():
    """Every results.json under results/ (older rows included) reads, round-trips and renders as a table."""
    from benchmarks.record import Record, records_of
    from benchmarks.run import markdown

    files = sorted((REPO / "results").rglob("results.json"))
    assert files
    for f in files:
        doc = json.loads(f.read_text())
        for r in records_of(doc, str(f)):
            assert Record.from_dict(r.to_dict()) == r
        assert markdown(doc).count(" | ") > 10


def test_parsers_read_per_run_output():
    # benchmark_model as LiteRT prints it now ("INFO: " lines), no warm-up: its first inference is the timed run
    one = parse_benchmark_model("INFO: count=0\nINFO: \nINFO: count=1 curr=17715\nINFO: \nINFO: Inference timings in "
                                "us: Init: 4128, First inference: 0, Warmup (avg): nan, Inference (avg): 17715\n")
    assert one["times_ms"] == [17.715] and one["first_ms"] is None and one["load_ms"] == pytest.approx(4.128)
    assert "median" not in one["latency_ms"]  # the tool computes no median: none is made up from its mean
    many = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    assert many["times_ms"] == [] and "median" not in many["latency_ms"]
    lines = "".join(f"I 00:00:00.2 executorch:executor_runner.cpp:779] Iteration {i} of 3: {t} ms\n"
                    for i, t in ((1, 30.5), (2, 15.25), (3, 15.0)))
    et = parse_executor_runner(lines + "I 00:00:00.4 executorch:executor_runner.cpp:791] Model executed "
                               "successfully 3 time(s) in 60.750000 ms.\n")
    assert et["iterations_ms"] == [30.5, 15.25, 15.0] and et["latency_ms"] == {"mean": 20.25, "n": 3}
    assert parse_executor_runner(EXECUTOR_RUNNER_OUTPUT)["iterations_ms"] == []
    with pytest.raises(DeviceError, match="cut short"):
        parse_executor_runner(lines.splitlines()[0] + "\nModel executed successfully 3 time(s) in 60.75 ms.")


@pytest.mark.parametrize("iterations", ["1", "0"])
def test_adb_times_litert_and_executorch_per_run_through_the_stand_in(iterations, stand_in_adb, tmp_path,
                                                                       monkeypatch):
    """benchmark_model: one process per timed run, its times in the record as the "phone" printed them.
    executor_runner: its per-iteration times, the warm-up ones of each process dropped; an older runner
    (FAKE_ET_ITERATIONS=0) prints only a total, and the record says it has a summary, not per-run times."""
    monkeypatch.setenv("FAKE_ET_ITERATIONS", iterations)
    monkeypatch.setenv("FAKE_BM_TIMES_US", json.dumps({"true": [round(t * 1000) for t in TIMES_A],
                                                       "false": [round(t * 1000) for t in TIMES_B]}))
    pte = tmp_path / "tiny.pte"  # the stand-in runner does not read it; nothing on this side loads it
    pte.write_bytes(b"\0\0\0\0ET12 stand-in program")
    out = tmp_path / "adb"
    r = run_module("benchmarks.run", SHIPPED_INT8, pte, "--device", "adb", "--delegate", "xnnpack,none",
                   "--litert-benchmark", stand_in_adb["benchmark_model"], "--executorch-runner",
                   stand_in_adb["executor_runner"], "--runs", "8", "--rounds", "2", "--warmup", "2", "--no-verify",
                   "--baseline", "int8", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    rows = {(Path(x["model"]).suffix, x["delegate"]): x for x in res["results"]}
    from benchmarks.record import Record
    from benchmarks.stats import ratio_with_noise, summarize

    assert all(Record.from_dict(x).to_dict() == x for x in res["results"])
    xnn, ref = rows[".tflite", "xnnpack"], rows[".tflite", "none"]
    assert xnn["times_ms"] == TIMES_A and ref["times_ms"] == TIMES_B and xnn["latency_ms"] == summarize(TIMES_A)
    assert rows[".pte", "none"]["status"] == "unavailable"
    et, runs = rows[".pte", "xnnpack"], phone_log(tmp_path, "executor_runner")
    assert len(runs) == 2 and all(len(x) == 2 + 4 for x in runs)  # per round: 2 warm-up + 8 // 2 timed
    args = "\n".join(phone_log(tmp_path, "executor_runner", "args"))
    assert args.count("--num_executions=6") == 2
    ratio = {q["case"]: q for q in res["ratios"]}
    assert ratio[f"{SHIPPED_INT8.name} litert/none/1t"]["ratio"] == ratio_with_noise(TIMES_B, TIMES_A)["ratio"]
    md = (out / "results.md").read_text()
    if iterations == "1":
        assert et["timing"] == "per-run" and et["times_ms"] == [t for x in runs for t in x[2:]]
        assert et["first_ms"] == runs[0][0] and not res["ratios_skipped"]
        assert "tiny.pte executorch/xnnpack/1t" in ratio
    else:
        total = sum(t for x in runs for t in x)
        assert et["timing"] == "summary" and "times_ms" not in et and "latency_ms" not in et
        assert et["summary_ms"]["mean"] == pytest.approx(total / 12) and et["summary_ms"]["n"] == 12
        assert "median" not in et["summary_ms"] and "no per-run times" in et["timing_method"]
        (skip,) = res["ratios_skipped"]
        assert skip["case"] == "tiny.pte executorch/xnnpack/1t" and "no per-run times" in skip["reason"]
        assert "Not in the ratios:" in md and "| no per-run times (mean" in md


# ----------------------------------------------------------------------------- worker processes (issue 20)
# The shipped int8 model needs no conversion: these run in seconds.

SHIPPED_INT8 = ASSETS / "models" / "nasnet_mobile_imagenette_int8.tflite"


@pytest.mark.parametrize("fault,expect", [
    ("segv@run:/2t]", "worker killed by signal 11 (SIGSEGV) during timed runs (round 1)"),
    ("segv@load:/2t]", "worker killed by signal 11 (SIGSEGV) while loading the model"),
    ("exit@run:/2t]", "worker exited with status 3 during timed runs"),
])
def test_a_case_whose_worker_crashes_is_recorded_and_the_others_are_measured(fault, expect, tmp_path, monkeypatch):
    # the test hook of benchmarks/case_worker.py: the worker of the 2-thread case kills itself on purpose
    monkeypatch.setenv("NASNET_EDGE_BENCH_FAULT", fault)
    out = tmp_path / "bench"
    r = run_module("benchmarks.run", SHIPPED_INT8, "--threads", "1,2", "--runs", "6", "--rounds", "2", "--warmup",
                   "1", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    ok, crashed = sorted(res["results"], key=lambda x: x["threads"])
    assert crashed["status"] == "error" and crashed["reason"].startswith(expect), crashed
    assert "latency_ms" not in crashed and crashed.get("worker_log") is not None
    assert ok["status"] == "ok" and ok["latency_ms"]["n"] == 6
    # each case had its own process, which imported LiteRT and nothing heavier
    assert ok["memory_scope"] == "worker process of this case" and ok["worker_imports"] == ["ai_edge_litert"]
    assert ok["process_peak_rss_mb"] >= ok["worker_base_rss_mb"] > 0 and ok["peak_growth_mb"] > 0
    assert ok["worker_pid"] > 0
    assert f"error: {expect}" in (out / "results.md").read_text()


def test_a_case_whose_worker_hangs_times_out_and_the_others_are_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("NASNET_EDGE_BENCH_FAULT", "hang@run:/1t]")
    out = tmp_path / "bench"
    t = time.perf_counter()
    r = run_module("benchmarks.run", SHIPPED_INT8, "--threads", "1,2", "--runs", "4", "--rounds", "2", "--warmup",
                   "0", "--case-timeout", "5", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.perf_counter() - t < 120
    hung, ok = sorted(json.loads((out / "results.json").read_text())["results"], key=lambda x: x["threads"])
    assert hung["status"] == "error" and hung["reason"].startswith("timed out after 5 s during timed runs"), hung
    assert ok["status"] == "ok" and ok["latency_ms"]["n"] == 4


def test_the_harness_process_itself_loads_no_runtime(tmp_path):
    """Every runtime lives in a worker: the parent has nothing a runtime could crash or whose pool could clash."""
    code = ("import sys; from benchmarks.run import main; "
            f"rc = main([{str(SHIPPED_INT8)!r}, '--runs', '2', '--rounds', '1', '--warmup', '0', '--quiet']); "
            "print('HEAVY', sorted(m for m in ('ai_edge_litert', 'tensorflow', 'torch', 'executorch') "
            "if m in sys.modules)); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout, r.stdout[-500:]


def test_ctrl_c_writes_the_runs_finished_so_far_and_stops_the_workers(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run", str(SHIPPED_INT8), "--threads", "1,2", "--runs",
                             "4", "--rounds", "2", "--warmup", "0", "--min-time", "600", "--output", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.set_blocking(proc.stderr.fileno(), False)
    seen, deadline = b"", time.time() + 300
    while b"timing:" not in seen and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        seen += proc.stderr.read() or b""
    assert b"timing:" in seen, seen[-2000:]
    time.sleep(3)  # some rounds
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, seen[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert all(x["status"] == "ok" and x["latency_ms"]["n"] >= 2 for x in res["results"]), res["results"]
    for x in res["results"]:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.kill(x["worker_pid"], 0)


def test_the_scaling_ceiling_runs_n_copies_at_once_and_reads_the_speedup_against_it(tmp_path):
    """--scaling-ceiling: the 1-thread case gets a second worker and, once per round, both run at once; the table
    reads the 2-thread speed-up against 2 x alone / together."""
    out = tmp_path / "bench"
    r = run_module("benchmarks.run", SHIPPED_INT8, "--threads", "1,2", "--runs", "6", "--rounds", "2", "--warmup",
                   "1", "--scaling-ceiling", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    one, two = sorted(res["results"], key=lambda x: x["threads"])
    assert one["concurrent_copies"] == 2 and len(one["concurrent_times_ms"]) == 2 * 6 and one["latency_ms"]["n"] == 6
    assert "concurrent_copies" not in two and two["latency_ms"]["n"] == 6
    (q,) = res["scaling"]
    together = float(np.median(one["concurrent_times_ms"]))
    assert q["threads"] == 2 and q["ceiling"] == pytest.approx(2 * one["latency_ms"]["median"] / together)
    assert q["share_of_ceiling"] == pytest.approx(q["speedup"] / q["ceiling"])
    assert q["speedup"] == pytest.approx(one["latency_ms"]["median"] / two["latency_ms"]["median"])
    md = (out / "results.md").read_text()
    assert "Thread scaling" in md and f"{q['ceiling']:.2f}x" in md


def test_thread_scaling_pairs_each_case_with_itself_at_one_thread():
    from benchmarks.run import thread_scaling

    def rec(name, threads, ms, together=None):
        r = {"model": name, "runtime": "litert", "delegate": "xnnpack", "threads": threads, "times_ms": [ms] * 5}
        if together:
            r.update(concurrent_copies=2, concurrent_times_ms=[together] * 10)
        return r

    items = thread_scaling([rec("a.tflite", 1, 10.0, 11.0), rec("a.tflite", 2, 6.0), rec("b.tflite", 1, 20.0),
                            rec("b.tflite", 2, 10.0), rec("c.tflite", 2, 5.0)])
    a, b = items
    assert a["case"].startswith("a.tflite") and a["speedup"] == pytest.approx(10 / 6)
    assert a["ceiling"] == pytest.approx(2 * 10 / 11) and a["share_of_ceiling"] == pytest.approx((10 / 6) / (20 / 11))
    assert b["speedup"] == pytest.approx(2.0) and "ceiling" not in b  # no copies measured: no ceiling claimed
    assert len(items) == 2  # c has no 1-thread row to compare with


def test_runtime_pairs_compare_each_executorch_row_with_litert_on_the_same_network_precision_and_threads():
    from benchmarks.run import runtime_pairs

    def rec(name, runtime, precision, threads, ms, build=None):
        r = {"model": name, "runtime": runtime, "delegate": "xnnpack", "threads": threads, "precision": precision,
             "network": "nasnet_mobile@abc", "times_ms": [ms * (1 + 0.001 * i) for i in range(20)]}
        if build:
            r["xnnpack_build"] = {"override": True, "label": build}
        return r

    items = runtime_pairs([rec("a_int8.tflite", "litert", "int8", 1, 5.0), rec("a_int8.tflite", "litert", "int8", 2, 3.0),
                           rec("a_fp32.tflite", "litert", "fp32", 1, 10.0), rec("a_int8.pte", "executorch", "int8", 1, 6.0),
                           rec("a_int8.pte", "executorch", "int8", 1, 4.9, "clang 19.1.7"),
                           rec("a_int8.pte", "executorch", "int8", 2, 3.3), rec("a_fp16.pte", "executorch", "fp16", 1, 9.0)])
    assert [(q["baseline"], q["threads"], round(q["ratio"], 2)) for q in items] == [
        ("a_int8.tflite litert/xnnpack/1t", 1, 1.2), ("a_int8.tflite litert/xnnpack/1t", 1, 0.98),
        ("a_int8.tflite litert/xnnpack/2t", 2, 1.1)]  # the fp16 .pte has no LiteRT twin: not compared
    assert "clang 19.1.7 build" in items[1]["case"] and items[1]["ci95"][0] <= items[1]["ratio"] <= items[1]["ci95"][1]


def test_executorch_at_two_thread_counts_beside_litert_int8_completes(pte_fp32, tmp_path):
    """Issue 20's crash: <int8 .tflite> <fp32 .pte> --threads 1,2 died with SIGSEGV. ExecuTorch has one thread pool
    per process and _unsafe_reset_threadpool frees the pool earlier-loaded methods still run on (a use-after-free;
    benchmarks/case_worker.py). Each case now has its own worker, whose pool is sized once, to its threads."""
    out = tmp_path / "bench"
    r = run_module("benchmarks.run", SHIPPED_INT8, pte_fp32["_path"], "--threads", "1,2", "--runs", "8", "--rounds",
                   "4", "--warmup", "1", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert [x["status"] for x in res["results"]] == ["ok"] * 4, res["results"]
    et = [x for x in res["results"] if x["runtime"] == "executorch"]
    assert [x["executorch_pool_threads"] for x in et] == [x["threads"] for x in et] == [1, 2]
    assert all("tensorflow" not in x["worker_imports"] for x in et)
    assert res["recommendation"]["items"], res["recommendation"]


def test_a_pte_is_also_timed_with_another_build_of_executorchs_xnnpack(pte_fp32, tmp_path):
    """--executorch-xnnpack LIB: every .pte case gets a twin whose worker maps LIB as ExecuTorch's XNNPACK backend
    (here the wheel's own library named explicitly, the plumbing a clang build goes through), labelled by compiler."""
    from edge.runtime.native import xnnpack_builds

    lib = xnnpack_builds()["executorch"]["library"]
    # a second "build": the same library under another folder, with the record scripts/build_executorch_xnnpack.sh
    # writes beside what it builds (the table names a build by that record: compiler and flags)
    other = tmp_path / "gcc-sched" / "libexecutorch_backend_xnnpack.so"
    other.parent.mkdir()
    shutil.copy(lib, other)
    (tmp_path / "gcc-sched" / "libexecutorch_backend_xnnpack.so.json").write_text(json.dumps(
        {"compiler": "gcc-sched", "flags": ["-fschedule-insns", "-fsched-pressure"]}))
    out = tmp_path / "bench"
    r = run_module("benchmarks.run", pte_fp32["_path"], "--executorch-xnnpack", lib, "--executorch-xnnpack", other,
                   "--runs", "2", "--rounds", "1", "--warmup", "0", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    builds = [x.get("xnnpack_build") for x in res["results"]]
    assert [x["status"] for x in res["results"]] == ["ok"] * 3
    assert [b["override"] for b in builds] == [False, True, True]
    assert [b["library"] for b in builds] == [lib, lib, str(other)], builds
    assert all(b["compiler"].startswith("GCC") for b in builds), builds
    assert builds[2]["label"] == f"{builds[2]['compiler'].split(' (')[0]} -fschedule-insns -fsched-pressure"
    md = (out / "results.md").read_text()
    assert "xnnpack (GCC 13.3.1 build)" in md and "XNNPACK builds: litert clang" in md
    assert "xnnpack (GCC 13.3.1 -fschedule-insns -fsched-pressure build)" in md
    # each other build's outputs against the wheel build's, on shipped validation photos: the same library, so exact
    checks = [x.get("outputs_vs_wheel") for x in res["results"]]
    assert checks[0] is None and all(c["bit_identical"] and c["images"] == 50 and c["top1_agreement"] == 1.0
                                     for c in checks[1:]), checks
    assert md.count(": bit-identical on 50 photos") == 2
    bad = run_module("benchmarks.run", pte_fp32["_path"], "--executorch-xnnpack", tmp_path / "libother.so")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "libexecutorch_backend_xnnpack.so" in bad.stderr


# ----------------------------------------------------------------------------- ISA features
CPUINFO_AVX2 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq \
pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust \
bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save \
umip rdpid
"""
CPUINFO_AVX512_VNNI = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht \
syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes \
xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq \
rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves wbnoinvd \
ida arat avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq rdpid md_clear
"""
CPUINFO_CORTEX_A76 = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
CPUINFO_NEOVERSE_V1 = CPUINFO_CORTEX_A76.replace("asimddp", "asimddp sha512 sve asimdfhm i8mm bf16 dgh rng")


@pytest.mark.parametrize("text,arch,cls,has,lacks", [
    (CPUINFO_AVX2, "x86_64", "x86-64 AVX2", {"avx2", "fma"}, {"avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}),
    (CPUINFO_AVX512_VNNI, "x86_64", "x86-64 AVX-512 VNNI", {"avx2", "fma", "avx512f", "avx512_vnni"},
     {"avx512_bf16", "amx_tile", "avx_vnni"}),
    (CPUINFO_CORTEX_A76, "aarch64", "aarch64 NEON+dotprod", {"asimd", "asimddp", "fphp", "asimdhp"},
     {"i8mm", "sve", "sve2", "sme"}),
    (CPUINFO_NEOVERSE_V1, "aarch64", "aarch64 NEON+dotprod+i8mm+SVE", {"i8mm", "sve", "bf16"}, {"sve2", "sme"}),
    (CPUINFO_AVX512_VNNI.replace("md_clear", "md_clear amx_bf16 avx512_bf16 amx_tile amx_int8"), "x86_64",
     "x86-64 AVX-512 VNNI+AMX", {"amx_tile", "amx_int8", "amx_bf16", "avx512_bf16"}, set()),
    (CPUINFO_AVX2.replace("avx2", "avx2 avx_vnni"), "x86_64", "x86-64 AVX2 VNNI", {"avx_vnni"}, {"avx512f"}),
])
def test_cpu_features_from_cpuinfo_texts(text, arch, cls, has, lacks):
    from benchmarks.isa import cpu_features, int8_dot_product

    f = cpu_features(text)
    assert f["arch"] == arch and f["class"] == cls, f
    assert has <= set(f["features"]) and not lacks & set(f["features"]), f
    assert int8_dot_product(f["features"]) == (cls != "x86-64 AVX2")


def test_cpu_features_is_standard_library_only_and_labels_this_machine():
    """benchmarks/isa.py is copied to boards beside remote_runner.py: it must import with a bare Python."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import isa, json; "
            "print(json.dumps(isa.cpu_features())); print(sorted(sys.modules))")
    r = subprocess.run([sys.executable, "-S", "-I", "-c", code], cwd="/", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.splitlines()[0])
    assert f["arch"] and f["class"] and isinstance(f["features"], list)
    assert not {"numpy", "edge", "benchmarks"} & set(eval(r.stdout.splitlines()[1]))  # noqa: S307 - our own output
    from benchmarks.run import environment

    assert environment()["isa"]["class"] == f["class"]


# ----------------------------------------------------------------------------- the recommendation
def _rec(name, precision, median, agreement, size, fmt="tflite", threads=1, network="nasnet_mobile@35fcf8bec9fd"):
    r = {"name": name, "model": f"/a/{name}", "runtime": "litert" if fmt == "tflite" else "executorch",
         "delegate": "xnnpack", "threads": threads, "status": "ok", "device": "local", "precision": precision,
         "format": fmt, "size_bytes": size, "network": network, "latency_ms": {"median": median}}
    if agreement is not None:
        r["top1_agreement"] = agreement
    return r


AVX2_ENV = {"local": {"isa": {"class": "x86-64 AVX2"}}}


def test_recommendation_on_avx2_says_int8_buys_size_not_speed():
    from benchmarks.run import recommend

    records = [_rec("edge_fp32.tflite", "fp32", 25.8, 1.0, 20_000_000), _rec("edge_int8.tflite", "int8", 24.6, 0.997,
                                                                              5_000_000)]
    (item,) = recommend(records, 1.0, AVX2_ENV)
    assert item["choice"] == "edge_int8.tflite" and item["accuracy_loss_points"] == pytest.approx(0.3)
    assert item["line"] == ("recommendation for x86-64 AVX2, 1 thread: edge_int8.tflite (int8, 24.6 ms, 0.95x of "
                            "fp32; -0.3 points) — on this ISA int8 buys size (4.0x smaller), not speed")


def test_recommendation_keeps_fp32_when_int8_is_over_budget_or_slower():
    from benchmarks.run import recommend

    over = recommend([_rec("fp32.tflite", "fp32", 25.8, 1.0, 20e6), _rec("int8.tflite", "int8", 12.0, 0.975, 5e6)],
                     1.0, AVX2_ENV)[0]
    assert over["choice"] == "fp32.tflite" and "int8.tflite (int8, 0.47x of fp32) loses 2.5 points, over the budget" \
        in over["line"]
    assert recommend([_rec("fp32.tflite", "fp32", 25.8, 1.0, 20e6), _rec("int8.tflite", "int8", 12.0, 0.975, 5e6)],
                     3.0, AVX2_ENV)[0]["choice"] == "int8.tflite"  # a wider budget takes it
    slower = recommend([_rec("fp32.tflite", "fp32", 25.8, 1.0, 20e6), _rec("int8.tflite", "int8", 27.0, 0.995, 5e6)],
                       1.0, AVX2_ENV)[0]
    assert slower["choice"] == "fp32.tflite"
    assert "int8.tflite (int8) is within budget but 1.05x of fp32: on this ISA int8 buys size (4.0x smaller), " \
           "not speed" in slower["line"]


def test_recommendation_without_accuracy_figures_says_so_instead_of_guessing():
    from benchmarks.run import recommend

    (item,) = recommend([_rec("a.tflite", "int8", 20.0, None, 5e6), _rec("b.pte", "fp32", 30.0, None, 20e6, "pte")],
                        1.0, AVX2_ENV)
    assert item["choice"] is None and "no measured artifact's manifest has accuracy figures" in item["line"]
    (item,) = recommend([_rec("a.tflite", "int8", 20.0, None, 5e6), _rec("b.tflite", "fp32", 30.0, 1.0, 20e6)],
                        1.0, AVX2_ENV)
    assert item["choice"] == "b.tflite" and "no accuracy figures in the manifest of a.tflite" in item["line"]


def test_recommendation_is_per_thread_count_and_network():
    from benchmarks.run import recommend

    recs = [_rec("fp32.tflite", "fp32", 25.0, 1.0, 20e6, threads=t) for t in (1, 2)]
    recs += [_rec("int8.tflite", "int8", 10.0, 0.995, 5e6, threads=t) for t in (1, 2)]
    recs += [_rec("other_fp32.tflite", "fp32", 9.0, 1.0, 14e6, network="mobilenet_v2@abc")]
    items = recommend(recs, 1.0, AVX2_ENV)
    assert [(i["network"].split("@")[0], i["threads"], i["choice"]) for i in items] == [
        ("mobilenet_v2", 1, "other_fp32.tflite"), ("nasnet_mobile", 1, "int8.tflite"), ("nasnet_mobile", 2, "int8.tflite")]
    assert "2 threads [nasnet_mobile]: int8.tflite (int8, 10.0 ms, 0.40x of fp32; -0.5 points) — int8 is 2.50x " \
           "faster than fp32 here and 4.0x smaller" in items[2]["line"]


# ----------------------------------------------------------------------------- machine drift
def test_shared_drift_flags_what_every_case_saw_together_and_not_one_cases_own_noise():
    from benchmarks.stats import shared_drift

    rng = np.random.default_rng(0)
    base = {"a": 10.0, "b": 25.0, "c": 14.0}
    steady = {k: list(v * (1 + 0.01 * rng.standard_normal(60))) for k, v in base.items()}
    assert not shared_drift(steady, 10)["drifted"]
    one_case = dict(steady, a=steady["a"][:20] + [x * 1.5 for x in steady["a"][20:30]] + steady["a"][30:])
    assert not shared_drift(one_case, 10)["drifted"]  # one case's bad round: not the machine
    machine = {k: [x * (1.4 if i < 20 else 1.0) for i, x in enumerate(t)] for k, t in steady.items()}
    d = shared_drift(machine, 10)
    assert d["drifted"] and d["slow_rounds"] == [1, 2] and 1.3 < d["spread"] < 1.5, d
    assert shared_drift({"a": steady["a"]}, 10) is None and shared_drift(steady, 30) is None


def test_the_recorded_avx2_run_is_flagged_for_drift_at_two_threads_only():
    """results/benchmark_x86-64_avx2: the first four rounds of every 2-thread case were slow together (the machine's
    second core, docs/benchmarking.md); the file's own per-run times must show it, at 2 threads and not at 1."""
    from benchmarks.record import records_of
    from benchmarks.run import machine_drift, markdown

    res = json.loads((REPO / "results" / "benchmark_x86-64_avx2" / "results.json").read_text())
    drift = {d["threads"]: d for d in machine_drift(records_of(res), res["settings"]["runs"] // res["settings"]["rounds"])}
    assert drift[2]["drifted"] and drift[2]["slow_rounds"] == [1, 2, 3, 4] and not drift[1]["drifted"], drift
    assert res["drift"] == list(drift.values())  # the committed file carries the same analysis
    assert "**Machine drift**" in markdown(res) and "2 thread(s): up to 1.41x in rounds 1, 2, 3, 4" in markdown(res)
