"""Benchmark targets beyond this machine: Linux boards over SSH and Android phones over adb.

Both produce records in the same schema as local runs (``benchmarks.run``), so one result file can hold
a laptop, a Raspberry Pi and a phone side by side.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.stats import summarize
from edge.errors import UserError

log = logging.getLogger(__name__)

REMOTE_DIR = "/tmp/nasnet-edge-bench"
ANDROID_DIR = "/data/local/tmp/nasnet_edge"


class DeviceError(UserError):
    """A device that cannot be used; the message says what to do."""


# ----------------------------------------------------------------------------- SSH (Linux boards)
@dataclass
class SSHTarget:
    user: str | None
    host: str
    port: int
    key: str | None = None
    python: str = "python3"

    @classmethod
    def parse(cls, spec: str, key: str | None = None, python: str = "python3") -> "SSHTarget":
        u = urlparse(spec)
        if u.scheme != "ssh" or not u.hostname:
            raise DeviceError(f"bad device '{spec}': use ssh://user@host[:port]")
        return cls(u.username, u.hostname, u.port or 22, key, python)

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _opts(self, control: str) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", f"ControlPath={control}",
                "-o", "ControlMaster=auto", "-o", "ControlPersist=60", "-o", "StrictHostKeyChecking=accept-new"]
        if self.key:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return opts


class SSHSession:
    """One multiplexed SSH connection (ControlMaster) reused for every copy and command."""

    def __init__(self, target: SSHTarget, known_hosts: str | None = None):
        if not shutil.which("ssh") or not shutil.which("scp"):
            raise DeviceError("ssh/scp not found: install openssh-client")
        self.t = target
        self.tmp = tempfile.mkdtemp(prefix="nasnet-ssh-")
        self.control = os.path.join(self.tmp, "cm")
        self.opts = target._opts(self.control)
        if known_hosts:
            self.opts += ["-o", f"UserKnownHostsFile={known_hosts}"]

    def run(self, *remote_argv: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        # the remote shell sees one string: every argument is quoted, so file names cannot inject commands
        cmd = " ".join(shlex.quote(a) for a in remote_argv)
        r = subprocess.run(["ssh", *self.opts, "-p", str(self.t.port), self.t.dest, cmd], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode == 255:
            msg = (r.stderr.strip().splitlines() or ["no answer"])[-1]
            raise DeviceError(f"cannot reach {self.t.dest}:{self.t.port} over SSH ({msg})")
        return r

    def put(self, local: Path, remote: str) -> None:
        r = subprocess.run(["scp", "-q", *self.opts, "-P", str(self.t.port), str(local), f"{self.t.dest}:{remote}"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise DeviceError(f"copying {local.name} to {self.t.dest} failed: {r.stderr.strip()[:200]}")

    def close(self) -> None:
        subprocess.run(["ssh", *self.opts, "-O", "exit", "-p", str(self.t.port), self.t.dest], capture_output=True,
                       timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_ssh(spec: str, models: list[str], threads: list[int], delegates: list[str], runs: int, rounds: int,
            warmup: int, key: str | None = None, python: str = "python3", known_hosts: str | None = None) -> dict:
    """Copy the artifacts and the standalone runner to a board, run it there, bring the records back."""
    target = SSHTarget.parse(spec, key, python)
    session = SSHSession(target, known_hosts)
    try:
        r = session.run("mkdir", "-p", REMOTE_DIR)
        if r.returncode:
            raise DeviceError(f"{target.dest}: cannot create {REMOTE_DIR}: {r.stderr.strip()[:200]}")
        r = session.run(target.python, "-c", "import sys; print(sys.version_info[0])", check=True)
        if r.returncode or r.stdout.strip() != "3":
            raise DeviceError(f"{target.dest}: no '{target.python}' on the board; install Python 3 or pass --remote-python")
        remote_models = []
        for i, m in enumerate(models):
            p = Path(m)
            if not p.is_file() or p.suffix not in (".tflite", ".pte"):
                raise DeviceError(f"{m}: only .tflite and .pte artifacts run on a board")
            dest = f"{REMOTE_DIR}/{i:02d}{p.suffix}"  # our own names on the board: no user text in paths
            session.put(p, dest)
            remote_models.append((m, dest))
        runner = Path(__file__).with_name("remote_runner.py")
        session.put(runner, f"{REMOTE_DIR}/remote_runner.py")
        cases = [{"model": dest, "local": m, "threads": t, "delegate": d}
                 for m, dest in remote_models for d in delegates for t in threads if d != "gpu"]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"cases": cases, "runs": runs, "rounds": rounds, "warmup": warmup}, f)
        session.put(Path(f.name), f"{REMOTE_DIR}/job.json")
        os.unlink(f.name)
        r = session.run(target.python, f"{REMOTE_DIR}/remote_runner.py", f"{REMOTE_DIR}/job.json", check=True)
        try:
            doc = json.loads(r.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise DeviceError(f"{target.dest}: the runner failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}") from None
        if "error" in doc:
            raise DeviceError(f"{target.dest}: {doc['error']}")
        records = []
        for rec in doc["results"]:
            local = Path(rec["local"])
            records.append({"model": str(local), "name": local.name, "runtime": "litert" if local.suffix == ".tflite"
                            else "executorch", "delegate": rec["delegate"], "threads": rec["threads"], "status": "ok",
                            "size_bytes": local.stat().st_size, "load_ms": rec["load_ms"], "first_ms": rec["first_ms"],
                            "latency_ms": summarize(rec["times_ms"]), "times_ms": rec["times_ms"]})
        for d in delegates:
            if d == "gpu":
                records += [{"model": m, "name": Path(m).name, "runtime": "litert", "delegate": "gpu", "threads": t,
                             "status": "unavailable", "reason": "GPU delegate runs are not driven over SSH"}
                            for m in models for t in threads]
        return {"device": spec, "environment": doc["environment"], "results": records}
    finally:
        session.close()


# ----------------------------------------------------------------------------- adb (Android)
LITERT_AVG = re.compile(r"Inference timings in us: Init: ([\d.]+), First inference: ([\d.]+), "
                        r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)")
LITERT_STDDEV = re.compile(r"count=(\d+) first=(\d+) curr=(\d+) min=(\d+) max=(\d+) avg=([\d.e+]+) std=(\d+)")
LITERT_MEM = re.compile(r"Peak memory footprint \(MB\): init=([\d.e+-]+) overall=([\d.e+-]+)")
ET_RUN = re.compile(r"Model executed successfully (\d+) time\(s\) in ([\d.]+) ms")


def parse_benchmark_model(text: str) -> dict:
    """LiteRT ``benchmark_model`` output -> latency fields (microseconds in, milliseconds out)."""
    m = LITERT_AVG.search(text)
    if not m:
        raise DeviceError("could not parse benchmark_model output (no 'Inference timings in us' line)")
    init, first, warm, avg = map(float, m.groups())
    out = {"load_ms": init / 1000, "first_ms": first / 1000, "warmup_avg_ms": warm / 1000}
    runs = LITERT_STDDEV.findall(text)
    if runs:
        count, _, _, mn, mx, mean, std = runs[-1]
        out["latency_ms"] = {"mean": float(mean) / 1000, "min": float(mn) / 1000, "max": float(mx) / 1000,
                             "std": float(std) / 1000, "n": int(count), "median": float(avg) / 1000}
    else:
        out["latency_ms"] = {"mean": avg / 1000, "median": avg / 1000}
    mem = LITERT_MEM.search(text)
    if mem:
        out["peak_memory_mb"] = float(mem.group(2))
    return out


def parse_executor_runner(text: str) -> dict:
    m = ET_RUN.search(text)
    if not m:
        raise DeviceError("could not parse executor_runner output (no 'Model executed successfully' line)")
    n, total = int(m.group(1)), float(m.group(2))
    return {"latency_ms": {"mean": total / n, "median": total / n, "n": n}}


class ADB:
    def __init__(self, serial: str | None = None, adb: str = "adb"):
        self.adb = shutil.which(adb)
        if not self.adb:
            raise DeviceError("adb not found: install Android platform-tools (Debian: apt-get install adb)")
        self.serial = serial

    def _base(self) -> list[str]:
        return [self.adb] + (["-s", self.serial] if self.serial else [])

    def check_device(self) -> str:
        r = subprocess.run([self.adb, "devices"], capture_output=True, text=True, timeout=60)
        rows = [ln.split() for ln in r.stdout.splitlines()[1:] if ln.strip()]
        if self.serial:
            rows = [row for row in rows if row[0] == self.serial]
        if not rows:
            raise DeviceError("no Android device attached" + (f" with serial {self.serial}" if self.serial else "")
                              + ": connect one with USB debugging on, then check `adb devices`")
        if len(rows) > 1 and not self.serial:
            raise DeviceError("several devices attached: pick one with --device adb:SERIAL")
        serial, state = rows[0][0], rows[0][1]
        if state == "unauthorized":
            raise DeviceError(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        if state != "device":
            raise DeviceError(f"device {serial} is {state}, not ready")
        self.serial = serial
        return serial

    def shell(self, *argv: str, timeout: int = 900) -> str:
        cmd = " ".join(shlex.quote(a) for a in argv)
        r = subprocess.run(self._base() + ["shell", cmd], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise DeviceError(f"adb shell {argv[0]} failed: {(r.stderr or r.stdout).strip()[:200]}")
        return r.stdout

    def push(self, local: Path, remote: str) -> None:
        r = subprocess.run(self._base() + ["push", str(local), remote], capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise DeviceError(f"adb push {local.name} failed: {(r.stderr or r.stdout).strip()[:200]}")

    def info(self) -> dict:
        def prop(name):
            try:
                return self.shell("getprop", name).strip()
            except DeviceError:
                return ""
        governor = ""
        try:
            governor = self.shell("cat", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
        except DeviceError:
            pass
        return {"model": prop("ro.product.model"), "soc": prop("ro.soc.model") or prop("ro.board.platform"),
                "android": prop("ro.build.version.release"), "abi": prop("ro.product.cpu.abi"),
                "cpu_governor": governor, "serial": self.serial}

    def battery_temperature_c(self) -> float | None:
        try:
            out = self.shell("dumpsys", "battery")
        except DeviceError:
            return None
        m = re.search(r"temperature:\s*(\d+)", out)
        return int(m.group(1)) / 10 if m else None


def run_adb(spec: str, models: list[str], threads: list[int], delegates: list[str], runs: int, warmup: int,
            litert_tool: str | None, executorch_tool: str | None, adb: str = "adb") -> dict:
    serial = spec.split(":", 1)[1] if ":" in spec else None
    dev = ADB(serial, adb)
    dev.check_device()
    tools = {".tflite": litert_tool, ".pte": executorch_tool}
    names = {".tflite": "benchmark_model", ".pte": "executor_runner"}
    for m in models:
        suffix = Path(m).suffix
        if suffix not in tools:
            raise DeviceError(f"{m}: only .tflite and .pte artifacts run on a phone")
        if not tools[suffix]:
            flag = "--litert-benchmark" if suffix == ".tflite" else "--executorch-runner"
            raise DeviceError(f"{m}: pass {flag} PATH to the Android {names[suffix]} binary to push")
        if not Path(tools[suffix]).is_file():
            raise DeviceError(f"{tools[suffix]}: no such file ({names[suffix]} for Android)")
    info = dev.info()
    temp_before = dev.battery_temperature_c()
    dev.shell("mkdir", "-p", ANDROID_DIR)
    pushed = {}
    for suffix, tool in tools.items():
        if tool and any(m.endswith(suffix) for m in models):
            dest = f"{ANDROID_DIR}/{names[suffix]}"
            dev.push(Path(tool), dest)
            dev.shell("chmod", "755", dest)
            pushed[suffix] = dest
    records = []
    for i, m in enumerate(models):
        p = Path(m)
        dest = f"{ANDROID_DIR}/{i:02d}{p.suffix}"
        dev.push(p, dest)
        for d in delegates:
            for t in threads:
                base = {"model": str(p), "name": p.name, "runtime": "litert" if p.suffix == ".tflite" else "executorch",
                        "delegate": d, "threads": t, "size_bytes": p.stat().st_size}
                if p.suffix == ".tflite":
                    argv = [pushed[".tflite"], f"--graph={dest}", f"--num_threads={t}", f"--num_runs={runs}",
                            f"--warmup_runs={warmup}", f"--use_xnnpack={'true' if d == 'xnnpack' else 'false'}",
                            "--report_peak_memory_footprint=true"]
                    if d == "gpu":
                        argv.append("--use_gpu=true")
                    elif d == "nnapi":
                        argv.append("--use_nnapi=true")
                    rec = parse_benchmark_model(dev.shell(*argv))
                else:
                    if d not in ("xnnpack",):
                        records.append({**base, "status": "unavailable",
                                        "reason": f"executor_runner runs the delegate compiled into the .pte ({d} n/a)"})
                        continue
                    rec = parse_executor_runner(dev.shell(pushed[".pte"], f"--model_path={dest}",
                                                          f"--num_executions={runs}", f"--cpu_threads={t}"))
                records.append({**base, "status": "ok", **rec})
    temp_after = dev.battery_temperature_c()
    info.update({"battery_temp_before_c": temp_before, "battery_temp_after_c": temp_after,
                 "thermal_warning": bool(temp_before is not None and temp_after is not None
                                         and temp_after - temp_before >= 5)})
    return {"device": spec, "environment": {"android": info}, "results": records}
