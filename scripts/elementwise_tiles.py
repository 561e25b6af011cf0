"""How many pieces of work XNNPACK can hand to its threads for each elementwise op of a ``.tflite``.

    python scripts/elementwise_tiles.py artifacts/tfl/nasnet_mobile_edge_int8.tflite [--threads 2]

XNNPACK splits a binary elementwise op (ADD, MUL) and a copy (each input of a CONCATENATION is one copy operator,
``src/subgraph/concatenate.c``) into tiles of a fixed 16 KiB of output (``get_tile_size`` in
``src/operators/binary-elementwise-nd.c`` and ``unary-elementwise-nc.c``, XNNPACK 92a7ad50, the commit
ExecuTorch 1.5.1 pins), whatever the number of threads. An op of one tile runs on one thread while the others
wait at its end; with two threads, three tiles split 2:1. int8 tensors are a quarter of fp32's bytes, so the same
op has a quarter of the tiles: NASNet-Mobile's 14x14 and 7x7 cells' adds, count-map multiplies and concatenation
copies are one or two tiles in int8 and 3-25 in fp32. Prints, per op type, how many ops get how many tiles, and
the share of the op's elements that a ``--threads`` pool can at best run in parallel.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys

import numpy as np

TILE_BYTES = 16 * 1024  # XNNPACK get_tile_size: round_up(16 KiB, the microkernel's tile), per op, any thread count


def tiles_per_op(path: str) -> dict[str, list[tuple[int, int]]]:
    """op type -> [(output bytes, tiles)] for ADD, MUL and the copies of each CONCATENATION (a slice is split by rows,
    ``src/operators/slice-nd.c``, not by tiles: not counted)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def nbytes(i: int) -> int:
        t = tensors[i]
        return int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize

    out: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for op in it._get_ops_details():  # noqa: SLF001 (LiteRT's only per-op listing)
        name = op["op_name"]
        if name == "CONCATENATION":
            for i in op["inputs"]:
                out["copy (a CONCATENATION input)"].append((nbytes(i), math.ceil(nbytes(i) / TILE_BYTES)))
        elif name in ("ADD", "MUL"):
            b = nbytes(op["outputs"][0])
            out[name].append((b, math.ceil(b / TILE_BYTES)))
    return out


def best_speedup(nbytes: int, threads: int) -> float:
    """The most a pool of ``threads`` can speed up an op of ``nbytes``: its tiles (16 KiB, the last one smaller)
    each go to the least loaded thread; the op ends with its most loaded thread."""
    tiles = [TILE_BYTES] * (nbytes // TILE_BYTES) + ([nbytes % TILE_BYTES] if nbytes % TILE_BYTES else [])
    load = [0] * threads
    for t in tiles:
        load[load.index(min(load))] += t
    return nbytes / max(load) if nbytes else 1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a .tflite")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    try:
        ops = tiles_per_op(a.model)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {a.model}: cannot read it as a .tflite ({str(e).splitlines()[0]})", file=sys.stderr)
        return 2
    print(f"{a.model}: XNNPACK tiles of {TILE_BYTES // 1024} KiB, best case at {a.threads} threads")
    print(f"{'op':<30} {'ops':>4} {'1 tile':>7} {'2 tiles':>8} {'3+':>4}  best speed-up (element-weighted)")
    for name, items in sorted(ops.items()):
        n = collections.Counter(t for _, t in items)
        total = sum(b for b, _ in items)
        # time at t threads over time at 1, weighting each op by its bytes (elementwise ops are bandwidth-bound)
        par = sum(b / best_speedup(b, a.threads) for b, _ in items)
        print(f"{name:<30} {len(items):>4} {n[1]:>7} {n[2]:>8} {sum(v for k, v in n.items() if k >= 3):>4}  "
              f"{total / par:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
