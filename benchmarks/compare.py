"""``python -m benchmarks.compare A.json B.json``: latency ratios between two benchmark results.

Matches cases by (device, model file name, runtime, delegate, threads) and prints median(B) / median(A)
with a bootstrap 95% interval from the timed runs stored in both files (the noise estimate); an interval
that contains 1.0 means no measurable difference. Both files are read through
:class:`benchmarks.record.Record`; a case without per-run times in either file (a device tool's summary) is
named with the reason instead of being compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.record import Record, Status, records_of
from benchmarks.stats import ratio_with_noise
from edge.errors import UserError


def key(r: Record) -> tuple:
    return (r.device, r.name, r.runtime.value, r.delegate.value, r.threads,
            r.gpu_precision.value if r.gpu_precision else None)


def compare(a: dict, b: dict) -> tuple[list[dict], list[dict]]:
    """Rows of B against the same cases in A; ``(rows, skipped)``, where ``skipped`` names the cases in both
    files that cannot be compared (no per-run times in one of them) and why."""
    base = {key(r): r for r in records_of(a, "A") if r.status is Status.OK}
    rows, skipped = [], []
    for r in records_of(b, "B"):
        k = key(r)
        if k not in base or r.status is not Status.OK:
            continue
        why = next((f"{side}: {w}" for side, w in (("A", base[k].ratio_skip_reason()), ("B", r.ratio_skip_reason()))
                    if w), None)
        case = " / ".join(str(x) for x in k if x is not None)
        if why:
            skipped.append({"case": case, "reason": why})
            continue
        q = ratio_with_noise(r.times_ms, base[k].times_ms)
        rows.append({"case": case, "a_median_ms": base[k].median_ms, "b_median_ms": r.median_ms, **q,
                     "verdict": "no measurable change" if q["ci95"][0] <= 1 <= q["ci95"][1]
                     else ("slower" if q["ratio"] > 1 else "faster")})
    return rows, skipped


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
        rows, skipped = compare(load(args.a), load(args.b))
        if not rows and not skipped:
            raise UserError("no case appears in both files (matched by device, model, runtime, delegate, threads)")
        print("| case | A median ms | B median ms | B/A | 95% interval | verdict |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['a_median_ms']:.2f} | {r['b_median_ms']:.2f} | {r['ratio']:.3f} | "
                  f"{r['ci95'][0]:.3f} - {r['ci95'][1]:.3f} | {r['verdict']} |")
        for q in skipped:
            print(f"not compared: {q['case']}: {q['reason']}")
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
