"""The input tensors an ExecuTorch program declares (sizes and dim order), read from the ``.pte`` itself.

Why a reader of our own: ExecuTorch copies an input's bytes into the program's input buffer as they are
(``Method::set_input`` -> ``copy_tensor_data``, executorch 1.5.1 ``runtime/executor/method.cpp``: sizes and
dtype are checked, the dim order is not). A program exported with a channels-last example input (what the
toolkit's converter does, so that XNNPACK needs no NCHW->NHWC transpose of the image at every run) therefore
gives wrong answers, silently, when it is fed NCHW-ordered bytes. The Python bindings' ``TensorInfo`` has no
dim order, and ``executorch.exir``'s deserializer is not on a board; these few lines read it from the
flatbuffer with the standard library only (``executorch/schema/program.fbs``: Program.execution_plan ->
ExecutionPlan.values / inputs -> EValue.val (a Tensor) -> Tensor.sizes / dim_order).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

# field numbers in executorch/schema/program.fbs (a union takes two: its type, then its value)
_PROGRAM_EXECUTION_PLAN = 1
_PLAN_VALUES, _PLAN_INPUTS = 2, 3
_EVALUE_VAL_TYPE, _EVALUE_VAL = 0, 1
_KERNEL_TYPE_TENSOR = 5  # a union's type 0 is flatbuffers' NONE: Null = 1, Int, Bool, Double, Tensor = 5
_TENSOR_SIZES, _TENSOR_DIM_ORDER = 2, 3

CHANNELS_LAST = (0, 2, 3, 1)


class _Reader:
    def __init__(self, buf):
        self.b = buf

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.b, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, None when absent."""
        vtable = table - struct.unpack_from("<i", self.b, table)[0]
        vt_len = struct.unpack_from("<H", self.b, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_len:
            return None
        off = struct.unpack_from("<H", self.b, vtable + slot)[0]
        return table + off if off else None

    def ref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.ref(pos)
        return vec + 4, self.u32(vec)


def program_inputs(path: str | os.PathLike, plan: int = 0) -> list[tuple[tuple[int, ...], tuple[int, ...]] | None]:
    """(sizes, dim order) of each input of execution plan ``plan`` (``forward`` first); None for a non-tensor.

    Raises ValueError on a file that is not a readable ExecuTorch program."""
    with open(Path(path), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            r = _Reader(buf)
            root = r.u32(0)
            plans, n_plans = r.vector(root, _PROGRAM_EXECUTION_PLAN)
            if plan >= n_plans:
                raise ValueError(f"no execution plan {plan}")
            ep = r.ref(plans + 4 * plan)
            values, n_values = r.vector(ep, _PLAN_VALUES)
            inputs, n_inputs = r.vector(ep, _PLAN_INPUTS)
            out = []
            for i in range(n_inputs):
                idx = struct.unpack_from("<i", buf, inputs + 4 * i)[0]
                if not 0 <= idx < n_values:
                    raise ValueError(f"input {i} names value {idx} of {n_values}")
                ev = r.ref(values + 4 * idx)
                kind = r.field(ev, _EVALUE_VAL_TYPE)
                val = r.field(ev, _EVALUE_VAL)
                if kind is None or buf[kind] != _KERNEL_TYPE_TENSOR or val is None:
                    out.append(None)
                    continue
                t = r.ref(val)
                sp, sn = r.vector(t, _TENSOR_SIZES)
                dp, dn = r.vector(t, _TENSOR_DIM_ORDER)
                sizes = struct.unpack_from(f"<{sn}i", buf, sp) if sn else ()
                dim_order = tuple(buf[dp:dp + dn]) if dn else tuple(range(len(sizes)))
                out.append((tuple(sizes), dim_order))
            return out
        except (struct.error, IndexError) as e:
            raise ValueError(f"not a readable ExecuTorch program ({e})") from None


def channels_last_inputs(path: str | os.PathLike) -> list[bool]:
    """For each input of ``forward``: is it a 4-D tensor that wants its bytes in NHWC (channels-last) order?"""
    return [i is not None and len(i[0]) == 4 and i[1] == CHANNELS_LAST for i in program_inputs(path)]


def takes_channels_last(path: str | os.PathLike) -> bool:
    """Does the program's first input (an image, sizes 1x3xHxW) want its bytes in NHWC order?"""
    return channels_last_inputs(path)[:1] == [True]


def image_tensor(sample, channels_last: bool):
    """An HxWx3 float32 image (numpy) as the 1x3xHxW torch tensor a program takes: for a channels-last program a
    view of the image's own bytes (no copy, and XNNPACK transposes nothing), else a contiguous NCHW copy. The
    size-1 batch axis comes from ``unsqueeze``, not numpy's ``[None]``, whose stride 0 ExecuTorch rejects. numpy
    and torch are imported here, so that this module stays importable with the standard library alone."""
    import numpy as np
    import torch

    if channels_last:
        return torch.from_numpy(np.ascontiguousarray(sample)).unsqueeze(0).permute(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(sample.transpose(2, 0, 1))).unsqueeze(0)
