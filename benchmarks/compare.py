"""``python -m benchmarks.compare A.json B.json``: latency ratios between two benchmark results.

Matches cases by (device, model file name, runtime, delegate, threads) and prints median(B) / median(A)
with a bootstrap 95% interval from the timed runs stored in both files (the noise estimate); an interval
that contains 1.0 means no measurable difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.stats import ratio_with_noise
from edge.errors import UserError


def key(r: dict) -> tuple:
    return (r.get("device", "local"), r["name"], r["runtime"], r["delegate"], r["threads"], r.get("gpu_precision"))


def compare(a: dict, b: dict) -> list[dict]:
    base = {key(r): r for r in a["results"] if r["status"] == "ok" and r.get("times_ms")}
    rows = []
    for r in b["results"]:
        k = key(r)
        if k in base and r["status"] == "ok" and r.get("times_ms"):
            q = ratio_with_noise(r["times_ms"], base[k]["times_ms"])
            rows.append({"case": " / ".join(str(x) for x in k if x is not None), "a_median_ms": base[k]["latency_ms"]["median"],
                         "b_median_ms": r["latency_ms"]["median"], **q,
                         "verdict": "no measurable change" if q["ci95"][0] <= 1 <= q["ci95"][1]
                         else ("slower" if q["ratio"] > 1 else "faster")})
    return rows


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such result file") from None
    except json.JSONDecodeError:
        raise UserError(f"{path}: not a JSON result file") from None
    if doc.get("schema", "").split("/")[0] != "nasnet-edge-benchmark":
        raise UserError(f"{path}: not a benchmarks.run result (schema {doc.get('schema')!r})")
    return doc


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="baseline results.json")
    p.add_argument("b", type=Path, help="results.json to compare")
    args = p.parse_args(argv)

    def go() -> int:
        rows = compare(load(args.a), load(args.b))
        if not rows:
            raise UserError("no case appears in both files (matched by device, model, runtime, delegate, threads)")
        print("| case | A median ms | B median ms | B/A | 95% interval | verdict |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['a_median_ms']:.2f} | {r['b_median_ms']:.2f} | {r['ratio']:.3f} | "
                  f"{r['ci95'][0]:.3f} - {r['ci95'][1]:.3f} | {r['verdict']} |")
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
