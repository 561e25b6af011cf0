"""An int8 model's input on the pixel grid: the quantized input is the pixel itself (uint8) or pixel - 128 (int8).

The toolkit scales pixels as ``x = p / 127.5 - 1`` (NASNet's [-1, 1]). An 8-bit input with step 1/127.5 cannot
hold those values: its levels are ``(q - zero_point) / 127.5`` with an integer zero point, so every ``x`` falls
exactly halfway between two levels. The calibrated int8 input had zero point -1 (uint8: 127): each pixel was
rounded half to even, up or down by half a step depending on its parity, and a client that feeds the raw
pixels to a uint8 input (MediaPipe Tasks, ML Model Binding) got a model computing on ``x + 1/255``.

So an int8 artifact takes ``x' = (p - 128) / 127.5 = x - 1/255`` instead: its input range is pinned to
``[-128, 127] / 127.5`` (scale 1/127.5, zero point 0, uint8 128), its declared preprocessing is mean 128, std
127.5, and the half step is folded into the stem: the stem convolution is 'valid' (every output sees a full
3x3 window), so ``conv(x + d) = conv(x) + d * sum(W)`` exactly, and the BatchNorm after it takes
``moving_mean + d * sum(W)``. The network then computes on the pixels what the float model computes on x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from edge.model.config import Preprocessing

STEM_CONV, STEM_BN = "stem_conv1", "stem_bn1"  # the first layers in both Keras builders (edge/model/plan.py: compile)


@dataclass(frozen=True)
class InputGrid:
    preprocessing: Preprocessing  # what the artifact declares: x' = p * scale + offset'
    delta: float  # x' - x, folded into the stem
    zero_point_uint8: int
    range: tuple[float, float]  # pinned input range (real values of q = 0 .. 255 as uint8)


def input_grid(pre: Preprocessing) -> InputGrid:
    """The 8-bit input grid nearest to ``pre``'s scaling with one level per pixel value."""
    zp = int(math.floor(-pre.offset / pre.scale + 0.5))  # NASNet: 127.5 -> 128
    zp = min(255, max(0, zp))
    offset = -zp * pre.scale
    return InputGrid(replace(pre, offset=offset), offset - pre.offset, zp,
                     (offset, offset + 255 * pre.scale))


def shift_stem_input(weights: dict, delta: float) -> dict:
    """Keras weights of a network that computes on ``x + delta`` what ``weights`` computes on ``x``.

    Exact for the NASNet stem: a 'valid' 3x3 convolution without bias followed by BatchNorm.
    """
    if STEM_CONV not in weights or STEM_BN not in weights:
        raise KeyError(f"weights have no {STEM_CONV}/{STEM_BN} layers to fold the input shift into")
    (kernel,) = weights[STEM_CONV]
    gamma, beta, mean, var = weights[STEM_BN]
    out = dict(weights)
    shift = np.float64(delta) * np.asarray(kernel, np.float64).sum(axis=(0, 1, 2))
    out[STEM_BN] = [gamma, beta, (np.asarray(mean, np.float64) + shift).astype(mean.dtype), var]
    return out


def pin_input_range(calibrated: bytes, lo: float, hi: float) -> bytes:
    """A calibrate-only TFLite model with its (single) input's min/max replaced by ``[lo, hi]``."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    for i in graph.inputs:
        q = graph.tensors[i].quantization
        if q is None or q.min is None:
            raise ValueError("the model carries no calibration statistics for its input")
        q.min, q.max = [np.float32(lo)], [np.float32(hi)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
