"""How far apart this machine's CPUs are: the one-way latency of a cache line between two of them.

Why it is recorded with every benchmark (docs/benchmarking.md, "Two threads: the distance between the cores"): a
thread pool splits each of NASNet-Mobile's ~700 operators between its threads, so every operator's output is
written on one core and read on the other, and every operator ends at a barrier. Where the two CPUs share a die
(a cache line moves in 20-50 ns on AMD Zen and Intel cores) two threads reach 1.7-1.9x; a VM whose two vCPUs sit
on different dies or sockets of its host (measured here: 175 ns) gives the same model 1.1-1.2x at two threads, while
two independent one-thread inferences still run at full speed each (``benchmarks.run --scaling-ceiling``). The
guest sees the same CPU model and flags either way; only this figure tells the two apart.

The probe is ``benchmarks/native/core_latency.c``, compiled on first use with the system's C compiler into the
user's cache folder (no compiler: the figure is recorded as unavailable, with the reason). Linux only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "native" / "core_latency.c"
SAME_DIE_NS = 60.0  # above this, the pair does not share a die's cache (AMD Zen 2-4, Intel: 20-50 ns same-die)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nasnet-edge"


def probe_binary() -> Path:
    """The compiled probe, built once per source version (its sha256 names it); RuntimeError when it cannot be."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = _cache_dir() / f"core_latency-{digest}"
    if out.is_file():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) to build the probe")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run([cc, "-O2", "-pthread", str(SOURCE), "-o", tmp], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cc} could not build the probe: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def core_to_core(max_pairs: int = 7, round_trips: int = 50_000) -> dict:
    """``{"pairs_ns": {"0-1": 175.0, ...}, "median_ns", "max_ns", "same_die"}`` for the first CPU this process may
    run on against each of up to ``max_pairs`` others; ``{"unavailable": reason}`` where it cannot be measured
    (one CPU, no compiler, not Linux). About 0.1 s per pair."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return {"unavailable": "no CPU affinity on this platform"}
    if len(cpus) < 2:
        return {"unavailable": "one CPU: nothing to hand over"}
    try:
        binary = probe_binary()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return {"unavailable": str(e)}
    pairs = {}
    for other in cpus[1:max_pairs + 1]:
        try:
            r = subprocess.run([str(binary), str(cpus[0]), str(other), str(round_trips)], capture_output=True,
                               text=True, timeout=60)
            pairs[f"{cpus[0]}-{other}"] = round(float(r.stdout.strip()), 1)
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
    if not pairs:
        return {"unavailable": "the probe did not run (see benchmarks/topology.py)"}
    values = list(pairs.values())
    return {"pairs_ns": pairs, "median_ns": statistics.median(values), "max_ns": max(values),
            "same_die": max(values) <= SAME_DIE_NS, "method": "cache-line ping-pong, best of 5 batches"}


def core_latency_line(c2c: dict | None) -> str | None:
    """The line result tables carry under the ISA line."""
    if not c2c:
        return None
    if "unavailable" in c2c:
        return f"Core-to-core latency: not measured ({c2c['unavailable']})"
    pairs = ", ".join(f"cpu{k.replace('-', '-cpu')} {v:.0f} ns" for k, v in c2c["pairs_ns"].items())
    verdict = ("the CPUs share a die: threads hand work over cheaply" if c2c["same_die"] else
               "above a shared die's 20-50 ns: every hand-off between threads crosses dies, so multi-thread speed-ups "
               "are lower here than on a machine of the same ISA whose cores share a die")
    return f"Core-to-core latency (one way): {pairs}; {verdict}"


if __name__ == "__main__":  # python -m benchmarks.topology
    print(core_latency_line(core_to_core()))
