"""NASNet-aware lowering: the "edge form" of the network, the same function made of fast-kernel ops.

Profiled on the stock int8 LiteRT graph of NASNet-Mobile (``docs/lowering.md``): XNNPACK leaves these on
LiteRT's slow kernels, cutting the graph into 37 partitions:
- every AVERAGE_POOL_2D (40): the delegate has no int8 average pooling, and in fp32 it rejects the 1x1
  stride-2 "pools" of the factorized reduction;
- every standalone RELU (48) in int8;
- every 6-input CONCATENATION (12, the normal-cell outputs), in fp32 too.

The edge form computes the same float function with
- average pools as depthwise convolutions with constant 1/k^2 weights, times a constant per-position
  map ``k*k / count`` where 'same' pooling excludes padding (exact; the map is 1 inside);
- the factorized reduction (two strided 1x1 convs over offset subsamples, then concat) as ONE 2x2
  stride-2 convolution whose kernel holds path 1 at tap (0, 0) and path 2 at tap (1, 1): no pools,
  no pad/crop, no concat;
- standalone ReLUs as 1x1 depthwise convolutions with unit weights and a fused ReLU (int8 only needs
  this; the op costs H*W*C multiply-adds);
- 6-input concatenations as two 3-input ones joined by a 2-input one;
- stride-2 convolutions with 'same' padding instead of an explicit PAD (Keras' correct_pad equals TF
  'SAME' for stride 2);
- a block that adds the same average pool of the same state twice (NASNet-A normal block 4) as one
  pool with doubled weights;
- one ReLU per cell state: the separable, conv and factorized-reduction ops that read a state all start
  with a ReLU of it; the reference network computes it in each op (NASNet-A's normal cell reads each
  state in up to three such ops), the edge form once (44 fewer standalone clamps in NASNet-Mobile);
- depthwise kernels over 25 taps (the 7x7 separable convs of the reduction cells) as a sum of kernel
  groups of at most 25 taps (7x3 + 7x3 + 7x1 at stride 1, 2x7 + 5x2 + 5x5 at stride 2), each on the input
  through its own zero pad: XNNPACK's 7x7 depthwise kernel is 10-25x slower per tap than its 7x3 one, and
  it alone was a quarter of the int8 latency. XNNPACK folds each group's pad into its convolution; only
  groups that reach beyond the 'same' padding read a slice (:func:`tap_groups`).

The GPU target (:data:`GPU`) adds one rewrite for LiteRT's GPU accelerator, whose graph compiler merges a
zero PAD into a MAX_POOL_2D that is its only reader and then pools as if the padding were -inf
(``docs/gpu.md``; in the CPU edge form the reduction cells' average pools are depthwise convs, so the
padded state feeds only the max pool, which the converter deduplicates):
- Keras' stride-2 max pool (zero pad, then 'valid') as a 'same' max pool (padding left out of the max)
  followed by a MAXIMUM with a constant map that is 0 on the output positions whose window reaches into the
  padding and the lowest float elsewhere (:func:`max_pool_border_map`): the zeros take part exactly where
  they did.

Weights are unchanged except the factorized reduction, whose two kernels are packed by
:func:`lowered_keras_weights`; constant layers carry their values from construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.model.config import NASNetConfig, same_pad
from edge.model.weights import KerasWeights

FUSED_SUFFIX = "_fused"
MAX_CONCAT_INPUTS = 5  # XNNPACK's largest concatenate node (xnn_define_concatenate5)
# XNNPACK's fast depthwise microkernels cover up to 25 taps (5x5); beyond, a 7x7 depthwise conv ran 10x
# (fp32) to 25x (int8) slower than a 7x3 one on this CPU (docs/lowering.md, micro-benchmark).
MAX_DW_TAPS = 25


def column_groups(kh: int, kw: int, max_taps: int = MAX_DW_TAPS) -> list[tuple[int, int]]:
    """[(c0, c1)] column ranges of a kh x kw kernel, each at most ``max_taps`` taps (7x7 -> 3, 3, 1)."""
    width = max(1, max_taps // kh)
    return [(c, min(c + width, kw)) for c in range(0, kw, width)]


def tap_groups(kernel: int, stride: int = 1, max_taps: int = MAX_DW_TAPS) -> list[tuple[int, int, int, int]]:
    """Rectangles (r0, r1, c0, c1) that tile a square ``kernel``, each of at most ``max_taps`` taps.

    Each group reads the unpadded input through its own zero pad, which XNNPACK folds into the depthwise
    convolution, and a slice (a copy) only where the group starts or ends beyond the 'same' padding
    (:func:`group_window`). Measured per 7x7 separable conv, ExecuTorch + XNNPACK, 1 thread
    (``docs/lowering.md`` section 4):
    - stride 1 (padding 3 | 3): column groups 7x3 + 7x3 + 7x1 need two slices, as the 2x7 + 5x2 + 5x5
      rectangles do, and have fewer taps after XNNPACK rounds each kernel up to its 9- or 25-tap
      microkernel (59 against 75);
    - stride 2 (padding 2 | 3): column groups need three slices, the rectangles two (only the 5x5 square
      reads the input without a copy); they took 0.73-0.86x the time of one padded copy sliced per
      group in fp32, 0.82-1.02x in int8.
    """
    m = int(np.sqrt(max_taps))
    e = kernel - m
    if stride > 1 and 0 < e and e * kernel <= max_taps:
        return [(0, e, 0, kernel), (e, kernel, 0, e), (e, kernel, e, kernel)]
    return [(0, kernel, c0, c1) for c0, c1 in column_groups(kernel, kernel, max_taps)]


def separable_layers(config: NASNetConfig) -> dict[str, tuple[int, int]]:
    """{Keras SeparableConv2D name: (kernel, stride)} of every separable conv in the network."""
    out = {}
    for spec in config.cells():
        g = spec.genotype
        for i, op in enumerate(g.ops):
            if op.is_separable:
                name = f"{g.keras_names[i]}_{spec.block_id}"
                out[f"separable_conv_1_{name}"] = (op.kernel_size, g.stride(i))
                out[f"separable_conv_2_{name}"] = (op.kernel_size, 1)
    return out


def group_window(size: int, pad: tuple[int, int], kernel: int, start: int, taps: int,
                 stride: int) -> "Window | None":
    """Along one axis, how a kernel group (``taps`` taps from kernel offset ``start``) of a 'same'-padded
    convolution (``pad`` before/after, ``kernel`` taps in all) reads the input:
    (crop_before, crop_after, pad_before, pad_after), so that a 'valid' convolution of the group's kernel on
    the cropped and padded input gives the group's share of every output. None: the group reads only
    padding (small inputs), its share is zero."""
    n_out = (size + pad[0] + pad[1] - kernel) // stride + 1
    first = start - pad[0]  # first input position read (output 0, tap 0)
    last = stride * (n_out - 1) + start + taps - 1 - pad[0]
    if first > size - 1 or last < 0:
        return None
    before, after = -first, last - (size - 1)
    return max(0, -before), max(0, -after), max(0, before), max(0, after)


Window = tuple[int, int, int, int]  # (crop_before, crop_after, pad_before, pad_after) along one axis


def group_windows(hw: tuple[int, int], kernel: int, stride: int) -> list[tuple[Window, Window] | None]:
    """For each group of :func:`tap_groups` of a 'same'-padded ``kernel`` x ``kernel`` conv on an ``hw``
    input: its (rows, cols) windows (:func:`group_window`), or None where it reads only padding."""
    pad_h, pad_w = same_pad(hw[0], kernel, stride), same_pad(hw[1], kernel, stride)
    out = []
    for r0, r1, c0, c1 in tap_groups(kernel, stride):
        rows = group_window(hw[0], pad_h, kernel, r0, r1 - r0, stride)
        cols = group_window(hw[1], pad_w, kernel, c0, c1 - c0, stride)
        out.append(None if rows is None or cols is None else (rows, cols))
    return out


def needs_split(kernel: int) -> bool:
    return kernel * kernel > MAX_DW_TAPS


def split_separable_weights(name: str, arrays: list[np.ndarray], stride: int = 1) -> dict[str, list[np.ndarray]]:
    """SeparableConv2D weights -> depthwise kernel pieces ``{name}_dw{g}`` (:func:`tap_groups`) and the
    pointwise ``{name}_pw``."""
    dw, pw = arrays
    out = {f"{name}_dw{g}": [np.ascontiguousarray(dw[r0:r1, c0:c1])] for g, (r0, r1, c0, c1) in
           enumerate(tap_groups(dw.shape[0], stride))}
    out[f"{name}_pw"] = [pw]
    return out


def join_separable_weights(pieces: list[np.ndarray], kernel: int, stride: int) -> np.ndarray:
    """Inverse of the depthwise split of :func:`split_separable_weights`."""
    dw = np.zeros((kernel, kernel) + pieces[0].shape[2:], pieces[0].dtype)
    for (r0, r1, c0, c1), piece in zip(tap_groups(kernel, stride), pieces):
        dw[r0:r1, c0:c1] = piece
    return dw


@dataclass(frozen=True)
class Lowering:
    """Which rewrites the edge form applies (all exact in float). ``None`` means the reference network."""

    avgpool_as_dwconv: bool = True
    fuse_factorized: bool = True
    relu_as_dwconv: bool = True
    split_concat: bool = True
    same_padding: bool = True
    merge_twin_pools: bool = True  # avg(p) + avg(p) -> one pool with weights 2/k^2 (normal cell block 4)
    split_large_dwconv: bool = True  # k x k depthwise with k*k > 25 taps -> tap_groups of <= 25 taps each
    share_relu: bool = True  # one ReLU per cell state, read by every op that starts with one (XNNPACK has no CSE)
    # GPU target only: Keras' zero-padded stride-2 max pool as a 'same' max pool + MAXIMUM with a border map
    # (LiteRT's GPU fuses PAD into MAX_POOL_2D with -inf semantics; docs/gpu.md)
    max_pool_border_map: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


EDGE = Lowering()
EDGE_FLOAT = Lowering(relu_as_dwconv=False)  # float kernels delegate RELU; keep it one cheap op
# LiteRT GPU accelerator (float): the float edge form without PAD -> MAX_POOL_2D
GPU = Lowering(relu_as_dwconv=False, max_pool_border_map=True)


def max_pool_border_map(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
    """(out_h, out_w) float32: 0 where the 'same'-padded window of a ``kernel`` x ``kernel``, ``stride`` max
    pool on an ``h`` x ``w`` input reaches into the padding, the lowest float32 elsewhere.

    ``maximum(max_pool_same(x), map)`` is then Keras' zero pad + 'valid' max pool, exactly: a border window's
    max also sees the zeros, an interior window is unchanged."""
    (pt, pb), (pl, pr) = same_pad(h, kernel, stride), same_pad(w, kernel, stride)
    oh, ow = (h + pt + pb - kernel) // stride + 1, (w + pl + pr - kernel) // stride + 1
    out = np.full((oh, ow), np.finfo(np.float32).min, np.float32)
    rows = [i for i in range(oh) if i * stride - pt < 0 or i * stride - pt + kernel > h]
    cols = [j for j in range(ow) if j * stride - pl < 0 or j * stride - pl + kernel > w]
    out[rows, :] = 0.0
    out[:, cols] = 0.0
    return out


def split_for_concat(items: list, limit: int = MAX_CONCAT_INPUTS) -> list[list]:
    """Groups of at most ``limit`` (balanced) whose nested concatenation is the flat one."""
    if len(items) <= limit:
        return [items]
    n_groups = -(-len(items) // limit)
    size = -(-len(items) // n_groups)
    return [items[i:i + size] for i in range(0, len(items), size)]


def factorized_names(config: NASNetConfig) -> list[tuple[str, str, str]]:
    """(conv_1 name, conv_2 name, fused name) of every factorized reduction in the network."""
    out = []
    for spec in config.cells():
        if spec.adjust == "factorized":
            b = spec.block_id
            out.append((f"adjust_conv_1_{b}", f"adjust_conv_2_{b}", f"adjust_conv_{b}{FUSED_SUFFIX}"))
        g = spec.genotype
        for i, op in enumerate(g.ops):
            if op.value == "identity" and g.stride(i) > 1:
                n = f"{g.keras_names[i]}_{spec.block_id}"
                out.append((f"{n}_conv_1", f"{n}_conv_2", f"{n}_conv{FUSED_SUFFIX}"))
    return out


def pack_factorized(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Two 1x1 Keras kernels (1,1,C,F1), (1,1,C,F2) -> one 2x2 kernel (2,2,C,F1+F2).

    Path 1 reads p[2i, 2j] (tap (0,0)); path 2 reads p[2i+1, 2j+1] (tap (1,1)), zero past the border,
    which is what a 'same' 2x2 stride-2 convolution pads (bottom/right only).
    """
    c, f1, f2 = k1.shape[2], k1.shape[3], k2.shape[3]
    fused = np.zeros((2, 2, c, f1 + f2), dtype=np.float32)
    fused[0, 0, :, :f1] = k1[0, 0]
    fused[1, 1, :, f1:] = k2[0, 0]
    return fused


def lowered_keras_weights(weights: KerasWeights, config: NASNetConfig, lowering: "Lowering | None" = None
                          ) -> KerasWeights:
    """The Keras-layout weights of the edge form (``lowering``, default all rewrites), from the reference's."""
    lowering = lowering or Lowering()
    out = dict(weights)
    if lowering.fuse_factorized:
        for n1, n2, fused in factorized_names(config):
            if n1 in out:
                out[fused] = [pack_factorized(out.pop(n1)[0], out.pop(n2)[0])]
    if lowering.split_large_dwconv:
        strides = {n: s for n, (_, s) in separable_layers(config).items()}
        for name in [n for n, a in out.items() if n.startswith("separable_conv_") and len(a) == 2 and
                     a[0].ndim == 4 and needs_split(a[0].shape[0])]:
            out.update(split_separable_weights(name, out.pop(name), strides.get(name, 1)))
    return out


def reference_keras_weights(weights: KerasWeights, config: NASNetConfig) -> KerasWeights:
    """Inverse of :func:`lowered_keras_weights`."""
    out = dict(weights)
    layers = separable_layers(config)
    for pw in [n for n in out if n.endswith("_pw") and n.startswith("separable_conv_")]:
        name = pw[: -len("_pw")]
        pieces = sorted((n for n in out if n.startswith(name + "_dw")), key=lambda n: int(n.rsplit("_dw", 1)[1]))
        kernel, stride = layers[name]
        out[name] = [join_separable_weights([out.pop(n)[0] for n in pieces], kernel, stride), out.pop(pw)[0]]
    for n1, n2, fused in factorized_names(config):
        if fused in out:
            k = out.pop(fused)[0]
            f1 = k.shape[3] // 2  # FactorizedReduce: conv_1 has filters // 2 outputs
            out[n1] = [k[0:1, 0:1, :, :f1].copy()]
            out[n2] = [k[1:2, 1:2, :, f1:].copy()]
    return out


def avg_correction(h: int, w: int, k: int, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """k*k / (number of real pixels under each window) for zero padding ``pad`` = (l, r, t, b)."""
    ones = np.pad(np.ones((h, w), np.float64), ((pad[2], pad[3]), (pad[0], pad[1])))
    oh = (ones.shape[0] - k) // stride + 1
    ow = (ones.shape[1] - k) // stride + 1
    count = np.zeros((oh, ow))
    for dy in range(k):
        for dx in range(k):
            count += ones[dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
    return (k * k / count).astype(np.float32)


def is_twin_pool_block(genotype, block: int, lowering: Lowering | None) -> bool:
    """Both ops of ``block`` are the same average pool of the same state, added (exactly 2x one pool)."""
    i = 2 * block
    return (lowering is not None and lowering.merge_twin_pools and lowering.avgpool_as_dwconv
            and genotype.combine.value == "add" and genotype.ops[i] == genotype.ops[i + 1]
            and genotype.ops[i].value == "avg_pool_3x3" and genotype.inputs[i] == genotype.inputs[i + 1])
