"""Benchmark targets beyond this machine: Linux boards over SSH and Android phones over adb.

Both produce :class:`benchmarks.record.Record` rows, as local runs do (``benchmarks.run``), with the time of
every timed run, so one result file can hold a laptop, a Raspberry Pi and a phone side by side and their
medians, percentiles and ratios mean the same.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from benchmarks.record import Record, Status
from edge.errors import UserError
from edge.runtime.runners import Delegate

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

    def get(self, remote: str, local: Path) -> None:
        r = subprocess.run(["scp", "-q", *self.opts, "-P", str(self.t.port), f"{self.t.dest}:{remote}", str(local)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise DeviceError(f"copying {remote} back from {self.t.dest} failed: {r.stderr.strip()[:200]}")

    def close(self) -> None:
        subprocess.run(["ssh", *self.opts, "-O", "exit", "-p", str(self.t.port), self.t.dest], capture_output=True,
                       timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def runtime_requirements() -> list[str]:
    """What a board needs to run ``.tflite`` artifacts: this machine's LiteRT version (same kernels' source)."""
    from importlib import metadata

    try:
        return [f"ai-edge-litert=={metadata.version('ai-edge-litert')}", "numpy"]
    except metadata.PackageNotFoundError:
        return ["ai-edge-litert", "numpy"]


BOARD_VENV = "~/.nasnet-edge/venv"
EXECUTORCH_ON_ARM = ("ExecuTorch's aarch64 wheel on PyPI imports torch, and PyPI's only aarch64 torch pulls CUDA "
                     "libraries and fails to import without them; on a real board build ExecuTorch's runtime "
                     "(executor_runner or the pybindings) from source, see README 'Linux boards'")


def setup_board(session: "SSHSession", python: str) -> str:
    """``--setup``: a venv on the board with the runtime (:func:`runtime_requirements`); returns its Python."""
    home = session.run("sh", "-c", "echo $HOME", check=True).stdout.strip() or "/tmp"
    venv = BOARD_VENV.replace("~", home, 1)  # an absolute path: later commands quote every argument
    venv_python = f"{venv}/bin/python"
    r = session.run("sh", "-c", f"test -x {venv_python} && {venv_python} -c 'import ai_edge_litert, numpy'",
                    check=True, timeout=300)
    if r.returncode == 0:
        return venv_python
    log.info("--setup: making %s on the board and installing %s (minutes on a slow board)", BOARD_VENV,
             " ".join(runtime_requirements()))
    r = session.run("sh", "-c", f"mkdir -p {shlex.quote(str(Path(venv).parent))} && {shlex.quote(python)} -m venv "
                    f"{shlex.quote(venv)}",
                    check=True, timeout=900)
    if r.returncode:
        raise DeviceError(f"{session.t.dest}: `{python} -m venv` failed ({(r.stderr.strip().splitlines() or ['?'])[-1][:160]}); "
                          "on Debian/Raspberry Pi OS install python3-venv first (sudo apt-get install python3-venv)")
    pip = " ".join(shlex.quote(x) for x in runtime_requirements())
    r = session.run("sh", "-c", f"{venv_python} -m pip install --no-input --disable-pip-version-check {pip}",
                    check=True, timeout=1800)
    if r.returncode:
        raise DeviceError(f"{session.t.dest}: pip install {pip} failed "
                          f"({(r.stderr.strip().splitlines() or ['?'])[-1][:160]})")
    return venv_python


def expected_sha256(path: Path) -> str:
    """The sha256 a copy must have: the manifest's (which the local file was checked against), else the file's."""
    from edge.artifact.integrity import verify_against_manifest
    from edge.model.weights import sha256

    manifest = verify_against_manifest(path)
    return (manifest or {}).get("sha256") or sha256(path)


def validation_photos(images: int) -> list[Path]:
    """The first ``images`` shipped validation photos (0: all), in a fixed order: what outputs are compared on."""
    from converters.common import package_folder
    from edge.preprocessing import list_images

    photos = list_images(package_folder("validation"))
    return photos[:images] if images > 0 else photos


def verification_inputs(models: list[str], images: int) -> tuple[list[Path], dict[str, np.ndarray]]:
    """The shipped validation photos (the first ``images``, in a fixed order), preprocessed per model."""
    from edge.preprocessing import preprocess_batch
    from edge.runtime.runners import read_artifact_info

    photos = validation_photos(images)
    batches: dict[str, np.ndarray] = {}
    for m in models:
        pre = read_artifact_info(Path(m)).preprocessing
        key = json.dumps(pre.to_dict() if hasattr(pre, "to_dict") else vars(pre), sort_keys=True, default=str)
        if key not in batches:
            batches[key] = preprocess_batch(photos, pre).astype(np.float32)
        batches[m] = batches[key]
    return photos, {m: batches[m] for m in models}


def compare_outputs(remote_raw: np.ndarray, local_raw: np.ndarray, local_logits: np.ndarray, quant,
                    model: str) -> dict:
    """Remote vs local outputs of the same artifact on the same inputs: exact, or by how much they differ.

    Both sides come from :func:`benchmarks.remote_runner.classify`, so they differ only in the kernels.
    """
    if remote_raw.shape != local_raw.shape or remote_raw.dtype != local_raw.dtype:
        raise DeviceError(f"{model}: the board returned outputs of shape {remote_raw.shape} {remote_raw.dtype}, "
                          f"this machine {local_raw.shape} {local_raw.dtype}: not the same artifact")
    out = {"images": int(len(local_raw)), "bit_identical": bool(np.array_equal(remote_raw, local_raw))}
    if quant is not None:  # quantized outputs: differences in quantization steps, then in logits
        diff_q = np.abs(remote_raw.astype(np.int32) - local_raw.astype(np.int32))
        out["max_abs_diff_quantized_steps"] = int(diff_q.max()) if diff_q.size else 0
        scale, zp = quant
        remote_logits = (remote_raw.astype(np.float32) - zp) * scale
    else:
        remote_logits = remote_raw.astype(np.float32)
    d = np.abs(remote_logits - local_logits)
    out["max_abs_diff"] = float(d.max()) if d.size else 0.0
    out["max_rel_diff"] = float(d.max() / max(1e-12, float(np.abs(local_logits).max()))) if d.size else 0.0
    out["top1_agreement"] = float((remote_logits.argmax(1) == local_logits.argmax(1)).mean())
    out["model"] = model
    return out


def pte_input_shape(path: str | os.PathLike) -> list[int] | None:
    """The 1x3xHxW input sizes of a ``.pte`` from its manifest (the converter's configuration), sent to the
    board's runner with the case; None without a manifest (the runner then asks the program itself).

    A ``.pte`` takes float32 of sizes 1x3xHxW (NCHW or channels-last bytes: its manifest's ``io.layout``) at the
    configuration's input size, which is not always 224 (a NASNet-Large configuration is 331, the test networks 48).
    """
    from edge.model.config import NASNetConfig, Preprocessing
    from edge.runtime.runners import manifest_path

    mp = manifest_path(path)
    if not mp.is_file():
        return None
    try:
        m = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DeviceError(f"{mp}: the manifest of {Path(path).name} is not readable JSON; restore it from the "
                          "conversion's output, or delete it to let the board read the shape from the program") from None
    if isinstance(m.get("config"), dict):
        pre = NASNetConfig.from_dict(m["config"]).preprocessing
    elif isinstance(m.get("preprocessing"), dict):
        pre = Preprocessing.from_dict(m["preprocessing"])
    else:
        return None
    return [1, len(pre.channel_order), pre.size, pre.size]


def ssh_record(row: dict, env: dict, device: str) -> Record:
    """A row of the board's runner (``remote_runner.time_cases``: the case, its load, first run and every timed
    run) as a record, with the local artifact's facts."""
    local = Path(row["local"])
    base = {"device": device, "emulated": bool(env.get("emulated"))}
    runtime = "litert" if local.suffix == ".tflite" else "executorch"
    status = row.get("status", "ok")
    if status == "error":
        return Record.for_artifact(local, runtime, row["delegate"], row["threads"], status=Status.ERROR,
                                   reason=row.get("reason", "the runner failed"), **base)
    if status == "unavailable":
        reason = f"not usable on the board (install: {row['missing']})"
        if runtime == "executorch" and env.get("machine") in ("aarch64", "arm64"):
            reason += "; " + EXECUTORCH_ON_ARM
        return Record.for_artifact(local, runtime, row["delegate"], row["threads"], status=Status.UNAVAILABLE,
                                   reason=reason, **base)
    return Record.for_artifact(local, runtime, row["delegate"], row["threads"], load_ms=row["load_ms"],
                               first_ms=row["first_ms"], times_ms=row["times_ms"], **base)


def run_ssh(spec: str, models: list[str], threads: list[int], delegates: list[str], runs: int, rounds: int,
            warmup: int, key: str | None = None, python: str = "python3", known_hosts: str | None = None,
            verify: bool = True, verify_images: int = 50, setup: bool = False, progress: bool = False) -> dict:
    """Copy the artifacts and the standalone runner to a board, run it there, bring the records back.

    Every copy is checked against the artifact's sha256 on the board (a truncated transfer is named, not
    timed). With ``verify``, the board also classifies ``verify_images`` shipped validation photos with
    every ``.tflite``/``.pte``, and the same photos go through the same artifact here: the result says
    whether the board's kernels give bit-identical outputs, or by how much (and how often top-1) they differ.
    """
    import benchmarks.remote_runner as remote_runner

    target = SSHTarget.parse(spec, key, python)
    session = SSHSession(target, known_hosts)
    workdir = Path(tempfile.mkdtemp(prefix="nasnet-ssh-job-"))
    try:
        r = session.run("mkdir", "-p", REMOTE_DIR)
        if r.returncode:
            raise DeviceError(f"{target.dest}: cannot create {REMOTE_DIR}: {r.stderr.strip()[:200]}")
        if setup:
            target.python = setup_board(session, target.python)
        r = session.run(target.python, "-c", "import sys; print(sys.version_info[0])", check=True)
        if r.returncode or r.stdout.strip() != "3":
            raise DeviceError(f"{target.dest}: no '{target.python}' on the board; install Python 3 or pass "
                              "--remote-python")
        remote_models, expected = [], {}
        for i, m in enumerate(models):
            p = Path(m)
            if not p.is_file() or p.suffix not in (".tflite", ".pte"):
                raise DeviceError(f"{m}: only .tflite and .pte artifacts run on a board")
            dest = f"{REMOTE_DIR}/{i:02d}{p.suffix}"  # our own names on the board: no user text in paths
            expected[dest] = expected_sha256(p)
            session.put(p, dest)
            remote_models.append((m, dest))
        here = Path(__file__).parent
        session.put(here / "remote_runner.py", f"{REMOTE_DIR}/remote_runner.py")
        if (here / "isa.py").is_file():  # stdlib-only ISA detection, imported by the runner when present
            session.put(here / "isa.py", f"{REMOTE_DIR}/isa.py")
        # stdlib-only reader of a .pte's input dim order: the runner feeds NHWC bytes to channels-last programs
        session.put(here.parent / "edge" / "artifact" / "pte_inputs.py", f"{REMOTE_DIR}/pte_inputs.py")

        def remote_job(doc: dict, name: str, timeout: int = 3600) -> dict:
            jf = workdir / name
            jf.write_text(json.dumps(doc))
            session.put(jf, f"{REMOTE_DIR}/{name}")
            res = session.run(target.python, f"{REMOTE_DIR}/remote_runner.py", f"{REMOTE_DIR}/{name}", check=True,
                              timeout=timeout)
            try:
                return json.loads(res.stdout.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                raise DeviceError(f"{target.dest}: the runner failed: "
                                  f"{(res.stderr.strip().splitlines() or ['?'])[-1][:200]}") from None

        got = remote_job({"action": "sha256", "files": list(expected)}, "sha256.json", timeout=600)
        for (m, dest) in remote_models:
            if got.get(dest) != expected[dest]:
                raise DeviceError(f"{m}: the copy on {target.dest} has sha256 {str(got.get(dest))[:12]}..., not "
                                  f"{expected[dest][:12]}...: the transfer was truncated or damaged (is the board's "
                                  f"disk full?); run again")

        shapes = {m: pte_input_shape(m) for m, _ in remote_models if m.endswith(".pte")}
        # 'none' (LiteRT's reference kernels) does not apply to a .pte, as locally: no row that ran XNNPACK under
        # another name; GPU rows are not driven over SSH (below)
        job = {"cases": [{"model": dest, "local": m, "threads": t, "delegate": d,
                          **({"input_shape": shapes[m]} if shapes.get(m) else {})}
                         for m, dest in remote_models for d in delegates for t in threads
                         if d != "gpu" and not (d == "none" and m.endswith(".pte"))],
               "runs": runs, "rounds": rounds, "warmup": warmup,
               "litert_requirement": runtime_requirements()[0]}
        photos, inputs = ([], {})
        if verify:
            photos, inputs = verification_inputs(models, verify_images)
            items, sent = {}, {}
            for i, (m, dest) in enumerate(remote_models):
                key = id(inputs[m])
                if key not in sent:
                    f = workdir / f"inputs_{len(sent):02d}.npy"
                    np.save(f, inputs[m])
                    sent[key] = f"{REMOTE_DIR}/{f.name}"
                    session.put(f, sent[key])
                items[dest] = {"inputs": sent[key], "output": f"{REMOTE_DIR}/out_{i:02d}.npy"}
            job["verify"] = {"threads": threads[0], "delegate": "xnnpack", "items": items}
        doc = remote_job(job, "job.json")
        if "error" in doc:
            raise DeviceError(f"{target.dest}: {doc['error']}")
        missing = doc.get("missing") or {}
        if missing and not any(rec.get("status", "ok") == "ok" for rec in doc["results"]):
            raise DeviceError(f"{target.dest}: missing on the board: " + "; ".join(
                f"{k} (install: {v})" for k, v in missing.items()) + "; or pass --setup to install the runtime "
                f"into a venv on the board ({BOARD_VENV})")
        env = doc["environment"]
        records = [ssh_record(row, env, spec) for row in doc["results"]]
        if "gpu" in delegates:
            records += [Record.for_artifact(m, "litert" if m.endswith(".tflite") else "executorch", "gpu", t,
                                            device=spec, status=Status.UNAVAILABLE,
                                            reason="GPU delegate runs are not driven over SSH")
                        for m in models for t in threads]
        verification = []
        if verify:
            from tqdm import tqdm

            for m, dest in tqdm(remote_models, desc="verify (local reference)", disable=not progress):
                if dest not in (doc.get("verified") or {}):
                    verification.append({"model": m, "status": "unavailable",
                                         "reason": "the board could not run it (see its row)"})
                    continue
                out = workdir / f"out_{Path(dest).stem}.npy"
                session.get(doc["verified"][dest]["output"], out)
                remote_raw = np.load(out)
                from edge.quiet import captured_fds

                with captured_fds():  # LiteRT's native INFO line would break the progress bar
                    local_raw, local_logits, quant = remote_runner.classify(m, inputs[m], threads[0], "xnnpack")
                v = compare_outputs(remote_raw, local_raw, local_logits, quant, m)
                v.update({"status": "ok", "threads": threads[0], "photos": "edge/assets/validation",
                          "first_photo": photos[0].name if photos else None,
                          "remote_seconds": round(doc["verified"][dest]["seconds"], 1)})
                verification.append(v)
            env["verification"] = verification
        return {"device": spec, "environment": env, "results": records, "verification": verification}
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)


def verification_markdown(result: dict) -> list[str]:
    """Per remote device: what the board is, and its outputs against this machine's on the same photos."""
    lines = []
    for spec, env in (result.get("devices") or {}).items():
        if spec == "local" or not isinstance(env, dict):
            continue
        if "android" in env:
            a = env["android"]
            desc = (f"`{spec}`: {a.get('model')} ({a.get('soc')}, {a.get('abi')}), Android {a.get('android')}"
                    + (f", governor {a['cpu_governor']}" if a.get("cpu_governor") else ""))
        else:
            isa = (env.get("isa") or {}).get("class")
            desc = (f"`{spec}`: {env.get('cpu')} x{env.get('cores')}"
                    + (f" ({isa})" if isa else "") + f", {env.get('os')}, Python {env.get('versions', {}).get('python')}, "
                    + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if k != "python")
                    + (f", governor {env['cpu_governor']}" if env.get("cpu_governor") else ""))
        lines += ["", f"Device {desc}."]
        if env.get("emulated"):
            lines.append(f"**EMULATED** ({env.get('emulation')}; QEMU_CPU={env.get('qemu_cpu')}): its latencies "
                         "are functional checks, not this board class's speed.")
        ver = env.get("verification") or []
        if ver:
            lines += ["", f"Outputs on `{spec}` against this machine (same artifact, same photos):", "",
                      "| model | photos | bit-identical | max abs diff | max diff (quant. steps) | top-1 agreement |",
                      "|---|---|---|---|---|---|"]
            for v in ver:
                if v.get("status") != "ok":
                    lines.append(f"| {Path(v['model']).name} | | {v.get('status')}: {v.get('reason', '')} | | | |")
                    continue
                steps = v.get("max_abs_diff_quantized_steps")
                lines.append(f"| {Path(v['model']).name} | {v['images']} | {'yes' if v['bit_identical'] else 'no'} | "
                             f"{v['max_abs_diff']:.3g} | {'' if steps is None else steps} | "
                             f"{100 * v['top1_agreement']:.1f}% |")
    return lines


# ----------------------------------------------------------------------------- adb (Android)
# LiteRT's benchmark_model (tflite/tools/benchmark/benchmark_model.cc, BenchmarkLoggingListener) prints its
# statistics, never the runs: one "count=..." line per phase (warm-up, then the timed runs) from
# Stat::OutputToStream ("count=0"; "count=1 curr=T"; or "count=N first=.. curr=.. min=.. max=.. avg=.. std=.."),
# then the "Inference timings in us" summary. A process run with --num_runs=1 --min_secs=0 times exactly one run,
# so its regular "count=1 curr=T" line is that run's time: one process per run gives per-run times.
LITERT_AVG = re.compile(r"Inference timings in us: Init: ([-\w.+]+), First inference: ([-\w.+]+), "
                        r"Warmup \(avg\): ([-\w.+]+), Inference \(avg\): ([-\w.+]+)")
LITERT_COUNT = re.compile(r"^(?:INFO: )?count=(\d+)(.*)$", re.MULTILINE)  # newer tools prefix "INFO: "
LITERT_MEM = (re.compile(r"Peak memory footprint \(MB\): init=[\d.e+-]+ overall=([\d.e+-]+)"),  # older tools
              re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.e+-]+)"))
# ExecuTorch's executor_runner (examples/portable/executor_runner/executor_runner.cpp) prints each execution's
# time ("Iteration i of N: T ms", ExecuTorch 1.3 and later; this project pins 1.5.1) and always the total.
ET_RUN = re.compile(r"Model executed successfully (\d+) time\(s\) in ([\d.]+) ms")
ET_ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([\d.]+) ms")


def _us(text: str) -> float | None:
    """A microsecond figure of benchmark_model in ms; None for the 0 or nan an empty statistic prints."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v / 1000 if math.isfinite(v) and v > 0 else None


def parse_benchmark_model(text: str) -> dict:
    """One LiteRT ``benchmark_model`` output -> ``load_ms``, ``first_ms``, ``latency_ms`` (its summary of the timed
    runs as printed: mean, min, max, std, n; no median, the tool computes none), ``times_ms`` (the run's time when
    it timed exactly one, else empty) and ``peak_memory_mb``."""
    m = LITERT_AVG.search(text)
    if not m:
        raise DeviceError("could not parse benchmark_model output (no 'Inference timings in us' line)")
    init, first, _warm, avg = m.groups()
    out: dict = {"load_ms": _us(init), "first_ms": _us(first), "times_ms": []}
    phases = LITERT_COUNT.findall(text)
    if not phases:
        raise DeviceError("could not parse benchmark_model output (no 'count=' line of the timed runs)")
    count, rest = phases[-1]  # the last phase printed is the timed runs (warm-up comes first)
    kv = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.e+-]+)", rest)}
    n = int(count)
    if n == 1 and "curr" in kv:
        out["times_ms"] = [kv["curr"] / 1000]
    if n and "avg" in kv:
        out["latency_ms"] = {"mean": kv["avg"] / 1000, "min": kv["min"] / 1000, "max": kv["max"] / 1000,
                             "std": kv["std"] / 1000, "n": n}
    elif n and "curr" in kv:  # every run took the same time (or there was one)
        t = kv["curr"] / 1000
        out["latency_ms"] = {"mean": t, "min": t, "max": t, "std": 0.0, "n": n}
    else:
        out["latency_ms"] = {"mean": _us(avg), "n": n}
    for pattern in LITERT_MEM:
        mem = pattern.search(text)
        if mem:
            out["peak_memory_mb"] = float(mem.group(1))
            break
    return out


def parse_executor_runner(text: str) -> dict:
    """ExecuTorch ``executor_runner`` output -> ``latency_ms`` (its total over ``n`` executions as a mean: the only
    statistic it prints) and ``iterations_ms`` (each execution's time in order, when the runner prints them;
    the first ones are warm-up, the caller drops them)."""
    m = ET_RUN.search(text)
    if not m:
        raise DeviceError("could not parse executor_runner output (no 'Model executed successfully' line)")
    n, total = int(m.group(1)), float(m.group(2))
    its = ET_ITERATION.findall(text)
    iterations = [float(t) for _, _, t in sorted(its, key=lambda x: int(x[0]))]
    if its and len(iterations) != n:
        raise DeviceError(f"executor_runner printed {len(iterations)} iteration times for {n} executions: "
                          "its output was cut short")
    return {"latency_ms": {"mean": total / n, "n": n}, "total_ms": total, "iterations_ms": iterations}


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

    def pull(self, remote: str, local: Path) -> None:
        r = subprocess.run(self._base() + ["pull", remote, str(local)], capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise DeviceError(f"adb pull {remote} failed: {(r.stderr or r.stdout).strip()[:200]}")

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


def verify_adb(dev: "ADB", tool: str, pushed_models: list[tuple[str, str]], threads: int, images: int,
               progress: bool = False) -> list[dict]:
    """``--verify`` on a phone: each photo through LiteRT's ``benchmark_model`` there, outputs compared here.

    ``benchmark_model`` reads an input tensor from a raw file (``--input_layer_value_files``) and writes the
    output tensors' raw bytes after its runs (``--output_filepath``; both in LiteRT's
    tools/benchmark/benchmark_tflite_model.cc). The same input bytes go through the same artifact here with
    :func:`benchmarks.remote_runner.classify`.
    """
    import benchmarks.remote_runner as rr
    from edge.quiet import captured_fds
    from tqdm import tqdm

    tfl = [(m, dest) for m, dest in pushed_models if m.endswith(".tflite")]
    out = [{"model": m, "status": "unavailable", "reason": "verification over adb runs .tflite artifacts through "
            "benchmark_model; a .pte is timed only"} for m, dest in pushed_models if not m.endswith(".tflite")]
    if not tfl:
        return out
    photos, inputs = verification_inputs([m for m, _ in tfl], images)
    work = Path(tempfile.mkdtemp(prefix="nasnet-adb-verify-"))
    try:
        for m, dest in tfl:
            with captured_fds():
                it = rr.open_litert(m, threads, "xnnpack")
                local_raw, local_logits, quant = rr.classify(m, inputs[m], threads, "xnnpack")
            d_in = it.get_input_details()[0]
            name = d_in["name"].replace(":", "::")  # benchmark_model's escape for ':' in a layer name
            shape = ",".join(str(int(v)) for v in d_in["shape"])
            remote = []
            for x in tqdm(inputs[m], desc=f"verify {Path(m).name} on the phone", disable=not progress):
                f = work / "in.bin"
                f.write_bytes(rr.quantize_input(x[None], d_in).tobytes())
                dev.push(f, f"{ANDROID_DIR}/verify_in.bin")
                dev.shell(tool, f"--graph={dest}", f"--num_threads={threads}", "--num_runs=1", "--warmup_runs=0",
                          "--min_secs=0", "--warmup_min_secs=0", "--use_xnnpack=true", f"--input_layer={name}",
                          f"--input_layer_shape={shape}",
                          f"--input_layer_value_files={name}:{ANDROID_DIR}/verify_in.bin",
                          f"--output_filepath={ANDROID_DIR}/verify_out.bin")
                dev.pull(f"{ANDROID_DIR}/verify_out.bin", work / "out.bin")
                y = np.frombuffer((work / "out.bin").read_bytes(), dtype=local_raw.dtype)
                if y.size != local_raw.shape[1]:
                    raise DeviceError(f"{Path(m).name}: benchmark_model wrote {y.size} outputs, expected "
                                      f"{local_raw.shape[1]}: is it a LiteRT benchmark_model with --output_filepath?")
                remote.append(y.copy())
            v = compare_outputs(np.stack(remote), local_raw, local_logits, quant, m)
            v.update({"status": "ok", "threads": threads, "photos": "edge/assets/validation",
                      "first_photo": photos[0].name if photos else None})
            out.append(v)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


@dataclass
class AdbCase:
    """One case on the phone: its record, filled round after round by the device tool's processes."""

    record: Record
    tool: str  # the pushed benchmark_model or executor_runner
    graph: str  # the pushed artifact
    warmup: int
    summaries: list = field(default_factory=list)  # executor_runner without per-iteration lines: (total ms, n)

    @property
    def litert(self) -> bool:
        return self.graph.endswith(".tflite")

    def litert_argv(self) -> list[str]:
        r = self.record
        # --min_secs=0 / --warmup_min_secs=0: otherwise benchmark_model keeps running for 1 s (0.5 s) whatever
        # --num_runs says, and the process would time many runs, of which it prints only statistics
        argv = [self.tool, f"--graph={self.graph}", f"--num_threads={r.threads}", "--num_runs=1", "--min_secs=0",
                f"--warmup_runs={self.warmup}", "--warmup_min_secs=0",
                f"--use_xnnpack={'true' if r.delegate is Delegate.XNNPACK else 'false'}",
                "--report_peak_memory_footprint=true"]
        if r.delegate is Delegate.GPU:
            argv.append("--use_gpu=true")
        return argv

    def run(self, dev: "ADB", n: int) -> None:
        """``n`` more timed runs: ``n`` benchmark_model processes of one run each, or one executor_runner process
        of ``warmup + n`` executions."""
        r = self.record
        if self.litert:
            for _ in range(n):
                out = parse_benchmark_model(dev.shell(*self.litert_argv()))
                if len(out["times_ms"]) != 1:
                    raise DeviceError(f"benchmark_model timed {out['latency_ms'].get('n')} runs for --num_runs=1 "
                                      "--min_secs=0: is it LiteRT's benchmark_model?")
                if not r.times_ms:  # the first process: its load and first inference, as a local case's
                    r.load_ms = out["load_ms"]
                    r.first_ms = out["first_ms"] or out["times_ms"][0]  # no warm-up: the timed run was the first
                r.times_ms = r.times_ms + out["times_ms"]
                if out.get("peak_memory_mb") is not None:
                    r.peak_memory_mb = max(r.peak_memory_mb or 0.0, out["peak_memory_mb"])
            return
        out = parse_executor_runner(dev.shell(self.tool, f"--model_path={self.graph}",
                                              f"--num_executions={self.warmup + n}", f"--cpu_threads={r.threads}"))
        its = out["iterations_ms"]
        if its:
            if r.first_ms is None:
                r.first_ms = its[0]
            r.times_ms = r.times_ms + its[self.warmup:]
            return
        # an executor_runner that prints only its total: no per-run times to be had, and the record says so
        self.summaries.append((out["total_ms"], out["latency_ms"]["n"]))
        total, count = sum(t for t, _ in self.summaries), sum(k for _, k in self.summaries)
        r.summary_ms = {"mean": total / count, "n": count, "warmup_runs_included": self.warmup * len(self.summaries)}
        r.timing_method = ("executor_runner printed its total time only (no 'Iteration i of N' lines): the mean of "
                           "all its executions, warm-up included; no per-run times")


def run_adb(spec: str, models: list[str], threads: list[int], delegates: list[str], runs: int, warmup: int,
            litert_tool: str | None, executorch_tool: str | None, adb: str = "adb", verify: bool = True,
            verify_images: int = 50, progress: bool = False, rounds: int = 1) -> dict:
    """Push the artifacts and the device tools to a phone and time every case there, in interleaved rounds.

    Every record carries per-run times, as local and SSH records do: LiteRT's ``benchmark_model`` prints only
    statistics, so each timed run is its own ``benchmark_model --num_runs=1`` process (after ``warmup`` warm-up
    runs in that process); ``executor_runner`` prints each execution's time ("Iteration i of N"), of which the
    first ``warmup`` per process are dropped. An ``executor_runner`` too old to print them gives a record without
    per-run times that says so (``summary_ms``; ratios name it and why it is left out). Each round visits the
    cases in a rotated order for ``runs // rounds`` runs each, so that the phone's warming up hits all alike.
    """
    from tqdm import tqdm

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
    per_round = max(1, runs // max(1, rounds))
    records: list[Record] = []
    cases: list[AdbCase] = []
    for i, m in enumerate(models):
        p = Path(m)
        dest = f"{ANDROID_DIR}/{i:02d}{p.suffix}"
        dev.push(p, dest)
        for d in delegates:
            for t in threads:
                runtime = "litert" if p.suffix == ".tflite" else "executorch"
                if p.suffix == ".pte" and d != "xnnpack":
                    records.append(Record.for_artifact(
                        p, runtime, d, t, device=spec, status=Status.UNAVAILABLE,
                        reason=f"executor_runner runs the delegate compiled into the .pte ({d} n/a)"))
                    continue
                if p.suffix == ".tflite":
                    method = (f"benchmark_model --num_runs=1 --min_secs=0: one process per timed run, each after "
                              f"{warmup} warm-up run(s); load and first inference from the first process")
                    extra = {"memory_scope": "benchmark_model process (its peak footprint report)"}
                else:
                    method = (f"executor_runner --num_executions={warmup}+{per_round} per round: its per-iteration "
                              f"times, the first {warmup} of each process dropped as warm-up")
                    extra = {}
                rec = Record.for_artifact(p, runtime, d, t, device=spec, timing_method=method, **extra)
                records.append(rec)
                cases.append(AdbCase(rec, pushed[p.suffix], dest, warmup))
    live = list(cases)
    bar = tqdm(total=per_round * rounds * len(live), desc="timing on the phone", unit="run", disable=not progress)
    try:
        for r in range(rounds):
            k = r % len(live) if live else 0
            for case in live[k:] + live[:k]:  # rotate: no case always runs first after a pause
                try:
                    case.run(dev, per_round)
                except DeviceError as e:  # a tool that crashed or printed nothing usable: this case only
                    log.warning("%s on %s: %s", case.record.case, spec, e)
                    case.record.status, case.record.reason = Status.ERROR, str(e)
                    case.record.completed_runs = len(case.record.times_ms)
                    case.record.times_ms = []
                    live.remove(case)
                bar.update(per_round)
    finally:
        bar.close()
    temp_after = dev.battery_temperature_c()
    info.update({"battery_temp_before_c": temp_before, "battery_temp_after_c": temp_after,
                 "thermal_warning": bool(temp_before is not None and temp_after is not None
                                         and temp_after - temp_before >= 5)})
    env = {"android": info}
    if verify:
        pushed_models = [(m, f"{ANDROID_DIR}/{i:02d}{Path(m).suffix}") for i, m in enumerate(models)]
        if ".tflite" in pushed:
            env["verification"] = verify_adb(dev, pushed[".tflite"], pushed_models, threads[0], verify_images,
                                             progress)
    return {"device": spec, "environment": env, "results": records, "verification": env.get("verification", [])}
