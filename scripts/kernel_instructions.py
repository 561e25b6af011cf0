"""Instructions per inference, per XNNPACK microkernel, of one artifact on LiteRT or ExecuTorch (callgrind).

Times on a shared VM drift by several percent; instruction counts do not. This runs the artifact under
``valgrind --tool=callgrind`` twice, with 1 and with N inferences, collecting only inside the runtime's inference
call (LiteRT's ``InterpreterWrapper::Invoke``, ExecuTorch's ``Method::execute``), and prints the steady-state
difference per inference: the total and the functions that cost the most, by self instructions and calls.
It is how docs/benchmarking.md compares the two runtimes' XNNPACK builds on the same graph (issue 20).

    python scripts/kernel_instructions.py artifacts/nasnet_mobile_edge_int8.tflite \
        artifacts/pte/nasnet_mobile_edge_xnnpack_int8.pte --inferences 4 --top 12 --json out.json

One thread (the kernels, not the thread pool). Needs Debian's valgrind. Slow: about a minute per run of NASNet.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# exact for ExecuTorch: "*Method::execute*" also matches Method::execute_instruction, which would toggle
# collection off inside every instruction (callgrind toggles on entry and exit of each matching function)
TOGGLE = {"tflite": "*InterpreterWrapper::Invoke*", "pte": "executorch::runtime::Method::execute()"}


def _child(path: str, n: int) -> None:
    """Load the artifact with the toolkit's runner (one thread) and run ``n`` inferences on a fixed input."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from edge.runtime.runners import open_model

    runner = open_model(path, threads=1)
    size = runner.preprocessing.size
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("f")
    for _ in range(n):
        runner.predict(x)


def _callgrind(path: Path, n: int, workdir: Path) -> Path:
    out = workdir / f"{path.name}.{n}.callgrind"
    cmd = ["valgrind", "--tool=callgrind", f"--toggle-collect={TOGGLE[path.suffix.lstrip('.')]}",
           f"--callgrind-out-file={out}", sys.executable, __file__, "--child", str(path), str(n)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0 or not out.exists():
        sys.exit(f"error: callgrind run of {path} failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return out


_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:\d+\s+)?(.*?)\s*$")


def _self_costs(out: Path) -> tuple[int, dict[str, int]]:
    """(total, {function: self instructions}) from callgrind_annotate."""
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
                       capture_output=True, text=True, check=True)
    total, costs = 0, {}
    for line in r.stdout.splitlines():
        if line.rstrip().endswith("PROGRAM TOTALS"):
            total = int(line.split()[0].replace(",", ""))
            continue
        m = _LINE.match(line)
        if m and ":" in m.group(2):
            name = m.group(2).split(" [")[0]
            name = name.split(":", 1)[1] if name.startswith("???:") or "/" in name.split(":", 1)[0] else name
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return total, costs


def _short(name: str) -> str:
    return re.sub(r"^xnn_", "", name)[:90]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", nargs="+", type=Path, help=".tflite and/or .pte files")
    p.add_argument("--inferences", type=int, default=4, help="inferences in the long run (default 4)")
    p.add_argument("--top", type=int, default=12, help="functions listed per artifact (default 12)")
    p.add_argument("--json", type=Path, help="write the counts here")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("error: valgrind is not installed: apt-get install valgrind")
    for a in args.artifacts:
        if a.suffix not in (".tflite", ".pte") or not a.is_file():
            sys.exit(f"error: {a}: not a .tflite or .pte file")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for a in args.artifacts:
            print(f"{a.name}: callgrind, 1 and {args.inferences} inferences ...", file=sys.stderr, flush=True)
            t1, c1 = _self_costs(_callgrind(a, 1, Path(tmp)))
            tn, cn = _self_costs(_callgrind(a, args.inferences, Path(tmp)))
            k = args.inferences - 1
            per = {f: (cn.get(f, 0) - c1.get(f, 0)) / k for f in cn}
            results[str(a)] = {"per_inference": (tn - t1) / k,
                               "functions": dict(sorted(per.items(), key=lambda kv: -kv[1])[:args.top])}
    for a, r in results.items():
        print(f"\n{a}: {r['per_inference'] / 1e6:.1f} M instructions per inference")
        for f, v in r["functions"].items():
            print(f"  {v / 1e6:8.2f} M  {_short(f)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
