"""Where an artifact's inference time goes, per machine-code function (XNNPACK microkernel), on LiteRT or
ExecuTorch: ``perf`` samples of the steady state, one thread, on any x86 ISA (AVX-512 included).

``scripts/kernel_instructions.py`` counts instructions deterministically, but under valgrind, which emulates no
AVX-512: XNNPACK then picks its AVX2 kernels. This samples the real run instead. Each artifact runs in a worker
process (the toolkit's runner, one thread, a fixed input) that warms up, then infers back to back while
``perf record -e cpu-clock`` samples it; a function's time per inference is its share of the samples times the
worker's own median. LiteRT's library keeps its symbols; ExecuTorch's wheel strips them, so its functions are
found from the library's unwind table (``.eh_frame``) and matched to a named function of the other artifact by
their instruction mix (the same microkernel compiled by another compiler keeps its multiplies and widenings).
Each function's code is described as instructions and vector registers spilled to the stack (a store or reload
of an xmm/ymm/zmm register at ``(%rsp)``), what tells a compiler's register allocation apart.

    python scripts/kernel_profile.py artifacts/nasnet_mobile_edge_int8.tflite \
        artifacts/pte/nasnet_mobile_edge_xnnpack_int8.pte --seconds 8 --top 8 --json results/kernels.json

Needs Debian's ``linux-perf`` and ``binutils`` (objdump, readelf), and perf events allowed for the user
(``/proc/sys/kernel/perf_event_paranoid`` <= 1, or root). How docs/benchmarking.md compares the two runtimes'
XNNPACK builds (issue 20).
"""
from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# instructions that identify a microkernel's arithmetic, whichever compiler built it
SIGNATURE = ("vpdpbusd", "vpmulld", "vpmovsxbd", "vpmovsxbw", "vpmaddwd", "vfmadd", "vcvtdq2ps", "vpmaxsd", "vmaxps",
             "vaddps", "vpaddd")


def _worker(path: str, ready: str, threads: int) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from edge.runtime.runners import open_model

    runner = open_model(path, threads=threads)
    size = runner.preprocessing.size
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("f")
    for _ in range(30):
        runner.predict(x)
    Path(ready).write_text("ready")
    times = []
    t_end = time.perf_counter() + float(os.environ["KP_SECONDS"])
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        runner.predict(x)
        times.append(time.perf_counter() - t)
    print(json.dumps({"median_ms": 1e3 * sorted(times)[len(times) // 2], "runs": len(times)}))


def _sample(path: Path, seconds: float, workdir: Path, threads: int) -> tuple[dict, Path]:
    ready = workdir / f"{path.name}.ready"
    data = workdir / f"{path.name}.perf"
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(path), str(ready), str(threads)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "KP_SECONDS": str(seconds + 2), "OMP_NUM_THREADS": "1"})
    while not ready.exists():
        if proc.poll() is not None:
            sys.exit(f"error: {path}: the worker exited ({proc.returncode}) before its first inference")
        time.sleep(0.1)
    time.sleep(0.5)
    maps = {}  # library name -> path (perf report names a library by its file name only)
    for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("/"):
            maps[Path(fields[5]).name] = fields[5]
    r = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "5000", "-p", str(proc.pid), "-o", str(data),
                        "--", "sleep", str(seconds)], capture_output=True, text=True)
    out, _ = proc.communicate()
    if r.returncode != 0 or not data.exists():
        sys.exit(f"error: perf record failed: {r.stderr.strip()[-300:]} (perf_event_paranoid <= 1 or root is needed)")
    return {**json.loads(out.strip().splitlines()[-1]), "maps": maps}, data


def _samples(data: Path, maps: dict) -> list[tuple[float, str, str]]:
    """(percent, library path, symbol or 0xaddress) per line of perf report."""
    r = subprocess.run(["perf", "report", "-q", "-i", str(data), "-F", "overhead,dso,sym", "--percent-limit", "0"],
                       capture_output=True, text=True, check=True)
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", line)
        if m:
            rows.append((float(m.group(1)), maps.get(m.group(2), m.group(2)), m.group(3)))
    return rows


def _fdes(dso: str) -> list[tuple[int, int]]:
    r = subprocess.run(["readelf", "--debug-dump=frames", dso], capture_output=True, text=True)
    return sorted((int(a, 16), int(b, 16)) for a, b in re.findall(r"FDE .*pc=([0-9a-f]+)\.\.([0-9a-f]+)", r.stdout))


def _code(dso: str, start: int | None = None, stop: int | None = None, symbol: str | None = None) -> dict:
    what = [f"--disassemble={symbol}"] if symbol else [f"--start-address={start:#x}", f"--stop-address={stop:#x}"]
    r = subprocess.run(["objdump", "-d", "--no-show-raw-insn", *what, dso], capture_output=True, text=True)
    insns = [line.split("\t", 1)[1] for line in r.stdout.splitlines() if re.match(r"\s+[0-9a-f]+:\t", line)]
    mnem = collections.Counter(i.split()[0] for i in insns if i.strip())
    spill_st = sum(bool(re.search(r"^vmov\S*\s+%[xyz]mm\d+,.*\(%rsp\)", i)) for i in insns)
    spill_ld = sum(bool(re.search(r"^vmov\S*\s+\S*\(%rsp\),%[xyz]mm\d+", i)) for i in insns)
    sig = {k: sum(v for m, v in mnem.items() if m.startswith(k)) for k in SIGNATURE}
    return {"instructions": len(insns), "vector_spill_stores": spill_st, "vector_spill_loads": spill_ld,
            "signature": {k: v for k, v in sig.items() if v}}


def profile(path: Path, seconds: float, top: int, workdir: Path, threads: int = 1) -> dict:
    """Samples are summed over the worker's threads: at ``threads`` > 1 a function's ms are CPU time per
    inference (the pool's spin-waiting shows as its own functions)."""
    timing, data = _sample(path, seconds, workdir, threads)
    maps = timing.pop("maps")
    functions: dict[tuple[str, str], float] = collections.defaultdict(float)
    fde_cache: dict[str, list] = {}
    for pct, dso, sym in _samples(data, maps):
        if sym.startswith("0x") and os.path.isfile(dso):  # stripped: the enclosing function from .eh_frame
            if dso not in fde_cache:  # once per library (setdefault would run readelf for every sample line)
                fde_cache[dso] = _fdes(dso)
            fdes = fde_cache[dso]
            addr = int(sym, 16)
            i = bisect.bisect_right(fdes, (addr, float("inf"))) - 1
            if i >= 0 and fdes[i][0] <= addr < fdes[i][1]:
                sym = f"{fdes[i][0]:#x}-{fdes[i][1]:#x}"
        functions[(dso, sym)] += pct
    rows = []
    for (dso, sym), pct in sorted(functions.items(), key=lambda kv: -kv[1])[:top]:
        row = {"function": sym, "library": Path(dso).name, "share": pct / 100,
               "ms_per_inference": timing["median_ms"] * threads * pct / 100}
        if os.path.isfile(dso):
            if re.fullmatch(r"0x[0-9a-f]+-0x[0-9a-f]+", sym):
                a, b = (int(v, 16) for v in sym.split("-"))
                row.update(_code(dso, a, b), stripped=True)
            elif not sym.startswith("0x"):
                row.update(_code(dso, symbol=sym), stripped=False)
        rows.append(row)
    return {"artifact": str(path), **timing, "functions": rows}


def _match(results: list[dict]) -> None:
    """Name a stripped function after a named one of another artifact with the same instruction mix."""
    named = [f for r in results for f in r["functions"] if f.get("stripped") is False and f.get("signature")]
    for r in results:
        for f in r["functions"]:
            if f.get("stripped") and f.get("signature"):
                same = sorted({g["function"] for g in named if g["signature"] == f["signature"]})
                if same:  # a GEMM and its indirect twin (igemm) share one mix: both are named
                    f["same_instruction_mix_as"] = " or ".join(same)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", nargs="+", type=Path, help=".tflite and/or .pte files")
    p.add_argument("--seconds", type=float, default=8, help="seconds sampled per artifact (default 8)")
    p.add_argument("--top", type=int, default=8, help="functions listed per artifact (default 8)")
    p.add_argument("--threads", type=int, default=1, help="the runtime's threads (default 1)")
    p.add_argument("--json", type=Path, help="write the profile here")
    args = p.parse_args(argv)
    for a in args.artifacts:
        if a.suffix not in (".tflite", ".pte") or not a.is_file():
            sys.exit(f"error: {a}: not a .tflite or .pte file")
    for tool in ("perf", "objdump", "readelf"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} is not installed: apt-get install linux-perf binutils")
    sys.path.insert(0, str(REPO))
    from benchmarks.isa import cpu_features

    isa = cpu_features()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for a in args.artifacts:
            print(f"{a.name}: sampling {args.seconds:g} s ...", file=sys.stderr, flush=True)
            results.append(profile(a, args.seconds, args.top, Path(tmp), args.threads))
    _match(results)
    print(f"CPU ISA: {isa['class']} ({', '.join(isa.get('features', []))}); {args.threads} thread(s)"
          + ("; ms are CPU time summed over threads" if args.threads > 1 else ""))
    for r in results:
        print(f"\n{r['artifact']}: median {r['median_ms']:.2f} ms over {r['runs']} runs")
        print("| ms/inference | share | function | instructions | vector spills (store/load) |")
        print("|---:|---:|---|---:|---|")
        for f in r["functions"]:
            name = f["function"] + (f" (= {f['same_instruction_mix_as']})" if "same_instruction_mix_as" in f else "")
            code = (f"{f['instructions']} | {f['vector_spill_stores']}/{f['vector_spill_loads']}"
                    if "instructions" in f else " | ")
            print(f"| {f['ms_per_inference']:.2f} | {100 * f['share']:.1f}% | {name} [{f['library']}] | {code} |")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"isa": isa, "results": results}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
