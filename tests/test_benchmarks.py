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
"""STAND-IN for {tool} on the phone: prints the documented output format, records its arguments.

With --output_filepath (benchmark_model's flag, used by --verify), it does what the real tool does with it:
runs the model once on the raw input file of --input_layer_value_files and writes the output tensor's bytes.
"""
import sys, pathlib
with open(sys.argv[0] + ".args", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
if "output_filepath" in flags:
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
                   "--runs", "10", "--verify-images", "3", "--output", out, "--quiet")
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
