"""What one op costs inside an XNNPACK program, fp32 against int8 (ExecuTorch, 1 thread).

    python scripts/executorch_op_costs.py

Each program is ten 56x56x44 1x1 convolutions (the size of NASNet-Mobile's second stem cell) with the op
under test after each; the op's cost is the program's time minus the convolution-only program's, over ten.
Used in docs/lowering.md section 4: the early NASNet cells are mostly adds, concats and slices, which
int8 does not make faster.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from converters.common import Precision
from converters.executorch import export_program, write_program
from edge.runtime.runners import ExecuTorchRunner

C, H, N = 44, 56, 10


class Chain(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.convs = nn.ModuleList([nn.Conv2d(C, C, 1) for _ in range(N + 1)])

    def forward(self, x):
        for conv in self.convs[:N]:
            y = conv(x)
            if self.kind == "relu":
                x = F.relu(y)
            elif self.kind == "add":
                x = y + x
            elif self.kind == "slice+cat":
                x = torch.cat([y[:, :C // 2], x[:, C // 2:]], 1)
            else:
                x = y
        return self.convs[N](x)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, C, H, H)
    calibration = [(torch.randn(1, C, H, H),) for _ in range(4)]
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in (Precision.FP32, Precision.INT8):
            for kind in ("conv only", "relu", "add", "slice+cat"):
                edge = export_program(Chain(kind).eval(), (x,), precision, calibration, "xnnpack", progress=False)
                path = Path(tmp) / f"{precision.value}_{kind.replace('+', '_').replace(' ', '_')}.pte"
                write_program(edge, path)
                runners[(precision.value, kind)] = ExecuTorchRunner(path, threads=1)
        times = {k: [] for k in runners}
        for _ in range(30):  # interleaved rounds
            for k, runner in runners.items():
                t = time.perf_counter()
                for _ in range(10):
                    runner.execute(x)
                times[k].append((time.perf_counter() - t) / 10 * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print("| precision | op | program ms | op cost us |\n|---|---|---:|---:|")
    for (prec, kind), ms in med.items():
        print(f"| {prec} | {kind} | {ms:.3f} | {(ms - med[(prec, 'conv only')]) / N * 1e3:.1f} |")


if __name__ == "__main__":
    main()
