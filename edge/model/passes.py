"""The NASNet-aware lowering: passes that rewrite a plan into its edge form, and the targets that order them.

Each pass is a pure ``Plan -> Plan`` function that computes the same float function with ops the target's
kernels run fast (exact in float; unit tests on plans in ``tests/test_passes.py``). A pass that changes
what a weighted node holds records a weight transform (:class:`PackFactorized`, :class:`SplitSeparable`),
which :meth:`Plan.lower_weights` applies to the reference network's Keras-layout weights.

Why each rewrite (profiled on the stock int8 LiteRT graph of NASNet-Mobile, ``docs/lowering.md``): XNNPACK
left every AVERAGE_POOL_2D (40), every standalone int8 RELU (48) and every 6-input CONCATENATION (12) on
LiteRT's slow kernels, cutting the graph into 37 partitions; its 7x7 depthwise kernel is 10-25x slower per
tap than its 7x3 one. The passes, in the order the targets run them:

- :func:`fuse_factorized`: the factorized reduction (two strided 1x1 convs over offset subsamples, concat)
  as ONE 2x2 stride-2 convolution, path 1 at tap (0, 0), path 2 at tap (1, 1): no pools, pad, crop or concat.
- :func:`avgpool_as_dwconv`: average pools as depthwise convolutions with constant 1/k^2 weights, times a
  constant per-position map ``k*k / count`` where 'same' pooling leaves the padding out (1 inside).
- :func:`same_padding`: a zero PAD read by a convolution that pads exactly like TF 'SAME' becomes the
  convolution's own padding (no PAD op; Keras' correct_pad equals 'SAME' at stride 2).
- :func:`merge_twin_pools`: a block that adds the same average pool of the same state twice (NASNet-A normal
  block 4) as one pool with doubled weights.
- :func:`share_max_pools`: the two equal max pools of every reduction cell's padded ``h`` as one (TFLite's
  converter merges them; ``torch.export`` does not, and ExecuTorch ran both).
- :func:`split_large_dwconv`: depthwise kernels over 25 taps (the 7x7 separable convs of the reduction
  cells) as a sum of kernel groups of at most 25 taps (7x3 + 7x3 + 7x1 at stride 1, 2x7 + 5x2 + 5x5 at
  stride 2), each on the input through its own zero pad (:func:`tap_groups`).
- :func:`relu_before_concat` (int8 only): a concat read only through ReLUs (every NASNet-A cell output) as a
  concat of rectified inputs, the ReLU fused into the ADD or constant MUL that makes each input.
- :func:`relu_as_dwconv` (int8 only): a ReLU the converter cannot fuse into its producer as a 1x1 depthwise
  convolution with unit weights and a fused ReLU (int8 RELU stays on LiteRT's reference kernels).
- :func:`share_relu`: one ReLU per tensor within a part: NASNet-A reads a cell state in up to three ops that
  each start with its ReLU, and XNNPACK does not merge equal ops (44 fewer clamps in NASNet-Mobile).
- :func:`split_concat`: concatenations of more than 5 inputs (XNNPACK's largest concatenate node) as
  a concatenation of at most 5 whose first inputs are grouped (:func:`split_for_concat`).
- :func:`distinct_pads` (last): equal zero PADs of one tensor, which TFLite's converter would merge into one PAD
  with two readers (the 7x7 stride-2 separables of every reduction cell read one input twice), made to differ by
  a row or column of padding no window reads, so that XNNPACK folds each into its convolution.
- :func:`max_pool_border_map` (GPU target only): Keras' zero pad + stride-2 'valid' max pool as a 'same' max
  pool followed by a MAXIMUM with a constant map that is 0 where the window reaches into the padding and the
  lowest float elsewhere. LiteRT's GPU graph compiler merges a zero PAD into a MAX_POOL_2D that is its only
  reader and then pools as if the padding were -inf (``docs/gpu.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edge.model.config import NASNetConfig, same_pad
from edge.model.plan import (CONV_KINDS, NO_PAD, Kind, Node, Pad, PadMode, Plan, avg_count_map, compile, conv_out,
                             same_pad4)

FUSED_SUFFIX = "_fused"
MAX_CONCAT_INPUTS = 5  # XNNPACK's largest concatenate node (xnn_define_concatenate5)
# XNNPACK's fast depthwise microkernels cover up to 25 taps (5x5); beyond, a 7x7 depthwise conv ran 10x
# (fp32) to 25x (int8) slower than a 7x3 one on this CPU (docs/lowering.md, micro-benchmark).
MAX_DW_TAPS = 25


# -------------------------------------------------------------------------------------------------- editing
class Editor:
    """A mutable copy of a plan's node list for one pass: replace a node by new ones, rewire its readers,
    drop what nobody reads; :meth:`plan` freezes the result with the pass recorded."""

    def __init__(self, plan: Plan):
        self.source = plan
        self.nodes: list[Node] = list(plan.nodes)
        self.output = plan.output
        self.weight_ops: list = []

    def index(self, name: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        raise KeyError(name)

    def get(self, name: str) -> Node:
        return self.nodes[self.index(name)]

    def readers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def replace(self, name: str, new: list[Node], output: str | None = None) -> None:
        """Put ``new`` where node ``name`` was (same part) and make its readers read ``output`` (default: the
        last new node)."""
        part = self.get(name).part
        self.rewire(name, output or (new[-1].name if new else None))  # before the new nodes exist
        i = self.index(name)
        self.nodes[i:i + 1] = [replace(n, part=part) for n in new]

    def rewire(self, old: str, new: str | None) -> None:
        if new is None or new == old:
            return
        self.nodes = [replace(n, inputs=tuple(new if i == old else i for i in n.inputs)) if old in n.inputs else n
                      for n in self.nodes]
        if self.output == old:
            self.output = new

    def drop_unread(self) -> None:
        """Remove nodes nothing reads (inputs and the output stay), until none is left."""
        while True:
            read = {i for n in self.nodes for i in n.inputs} | {self.output}
            keep = [n for n in self.nodes if n.name in read or n.kind is Kind.INPUT]
            if len(keep) == len(self.nodes):
                return
            self.nodes = keep

    def plan(self, pass_name: str) -> Plan:
        self.drop_unread()
        src = self.source
        return Plan(src.config, tuple(self.nodes), self.output, src.include_top, src.target,
                    src.passes + (pass_name,), src.weight_ops + tuple(self.weight_ops))


# -------------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class PackFactorized:
    """Two 1x1 Keras kernels ``sources`` (1,1,C,F1), (1,1,C,F2) -> one 2x2 kernel ``target`` (2,2,C,F1+F2):
    path 1 at tap (0, 0), path 2 at tap (1, 1) (zero elsewhere)."""

    target: str
    sources: tuple[str, str]

    def apply(self, w: dict) -> None:
        if self.sources[0] in w:
            w[self.target] = [pack_factorized(w.pop(self.sources[0])[0], w.pop(self.sources[1])[0])]

    def invert(self, w: dict) -> None:
        if self.target in w:
            k = w.pop(self.target)[0]
            f1 = k.shape[3] // 2  # the first path has filters // 2 outputs
            w[self.sources[0]] = [k[0:1, 0:1, :, :f1].copy()]
            w[self.sources[1]] = [k[1:2, 1:2, :, f1:].copy()]

    def to_dict(self) -> dict:
        return {"op": "pack_factorized", "target": self.target, "sources": list(self.sources)}


@dataclass(frozen=True)
class SplitSeparable:
    """SeparableConv2D weights ``source`` -> depthwise kernel pieces ``{source}_dw{g}`` (:func:`tap_groups`) and
    the pointwise ``{source}_pw``."""

    source: str
    kernel: int
    stride: int

    def apply(self, w: dict) -> None:
        if self.source in w:
            dw, pw = w.pop(self.source)
            for g, (r0, r1, c0, c1) in enumerate(tap_groups(self.kernel, self.stride)):
                w[f"{self.source}_dw{g}"] = [np.ascontiguousarray(dw[r0:r1, c0:c1])]
            w[f"{self.source}_pw"] = [pw]

    def invert(self, w: dict) -> None:
        names = [f"{self.source}_dw{g}" for g in range(len(tap_groups(self.kernel, self.stride)))]
        if names[0] in w:
            pieces = [w.pop(n)[0] for n in names]
            dw = np.zeros((self.kernel, self.kernel) + pieces[0].shape[2:], pieces[0].dtype)
            for (r0, r1, c0, c1), piece in zip(tap_groups(self.kernel, self.stride), pieces):
                dw[r0:r1, c0:c1] = piece
            w[self.source] = [dw, w.pop(f"{self.source}_pw")[0]]

    def to_dict(self) -> dict:
        return {"op": "split_separable", "source": self.source, "kernel": self.kernel, "stride": self.stride}


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


# -------------------------------------------------------------------------------------------------- kernel groups
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


Window = tuple[int, int, int, int]  # (crop_before, crop_after, pad_before, pad_after) along one axis


def group_window(size: int, pad: tuple[int, int], kernel: int, start: int, taps: int, stride: int) -> Window | None:
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


def split_for_concat(items: list, limit: int = MAX_CONCAT_INPUTS) -> list[list]:
    """Runs of at most ``limit`` whose nested concatenation is the flat one, as few values copied twice as can be.

    XNNPACK runs a concatenation of n inputs as n copy operators (src/subgraph/concatenate.c), each its own
    parallel region, and a grouped input is copied twice: the top level takes as many inputs as it can and only
    the first few are grouped (6 -> [2 grouped] + 4 singles: 7 copies, a third of the values twice, where 3 + 3
    made 8 copies of every value twice)."""
    if len(items) <= limit:
        return [items]
    if len(items) > limit * limit:
        raise ValueError(f"a concatenation of {len(items)} inputs needs more than two levels of at most {limit}")
    groups: list[list] = []
    i = 0
    while len(groups) + len(items) - i > limit:
        size = min(limit, len(groups) + len(items) - i - limit + 1)
        groups.append(items[i:i + size])
        i += size
    return groups + [[x] for x in items[i:]]


# -------------------------------------------------------------------------------------------------- the passes
def fuse_factorized(plan: Plan) -> Plan:
    """CONCAT(CONV1x1(SUBSAMPLE(r)), CONV1x1(SUBSAMPLE(CROP(PAD(r))))) -> one CONV 2x2, stride 2, 'same' on r."""
    ed = Editor(plan)
    for cat in [n for n in plan.nodes if n.kind is Kind.CONCAT and len(n.inputs) == 2]:
        a, b = (plan.node(i) for i in cat.inputs)
        if not all(c.kind is Kind.CONV and c.kernel == (1, 1) and c.stride == (1, 1) and c.pad == NO_PAD
                   for c in (a, b)):
            continue
        s1, s2 = plan.node(a.inputs[0]), plan.node(b.inputs[0])
        if s1.kind is not Kind.SUBSAMPLE or s2.kind is not Kind.SUBSAMPLE or (2, 2) != s1.stride or (2, 2) != s2.stride:
            continue
        crop = plan.node(s2.inputs[0])
        pad = plan.node(crop.inputs[0]) if crop.kind is Kind.CROP else None
        if pad is None or pad.kind is not Kind.PAD or pad.pad != (0, 1, 0, 1) or crop.pad != (1, 0, 1, 0):
            continue
        r = s1.inputs[0]
        if pad.inputs[0] != r:
            continue
        hw = plan.node(r).shape[:2]
        name = a.weights.replace("_conv_1", "_conv", 1) + FUSED_SUFFIX
        ed.replace(cat.name, [Node(name, Kind.CONV, (r,), cat.shape, (2, 2), (2, 2),
                                   pad=same_pad4(hw, (2, 2), (2, 2)), weights=name)])
        ed.weight_ops.append(PackFactorized(name, (a.weights, b.weights)))
    return ed.plan("fuse_factorized")


def avgpool_as_dwconv(plan: Plan) -> Plan:
    """AVG_POOL -> DEPTHWISE with constant 1/k^2 weights, times the count map where the padding is excluded."""
    ed = Editor(plan)
    for n in [n for n in plan.nodes if n.kind is Kind.AVG_POOL]:
        k = n.kernel[0]
        dw = Node(n.name + "_dw", Kind.DEPTHWISE, n.inputs, n.shape, n.kernel, n.stride, pad=n.pad,
                  const=("fill", 1.0 / (k * k)))
        new = [dw]
        if n.pad_mode is PadMode.EXCLUDED and n.pad != NO_PAD:
            h, w, _ = plan.node(n.inputs[0]).shape
            if not np.allclose(avg_count_map(h, w, k, n.stride[0], n.pad), 1.0):
                new.append(Node(n.name + "_count", Kind.SCALE, (dw.name,), n.shape,
                                const=("count_map", h, w, k, n.stride[0], n.pad)))
        ed.replace(n.name, new)
    return ed.plan("avgpool_as_dwconv")


def same_padding(plan: Plan) -> Plan:
    """PAD (zeros) -> conv without padding, where the PAD is exactly TF 'SAME' for that conv: the conv pads."""
    ed = Editor(plan)
    for pad in [n for n in plan.nodes if n.kind is Kind.PAD]:
        src = plan.node(pad.inputs[0])
        for reader in [r for r in ed.readers(pad.name) if r.kind in CONV_KINDS and r.pad == NO_PAD]:
            if same_pad4(src.shape[:2], reader.kernel, reader.stride, reader.dilation) == pad.pad:
                i = ed.index(reader.name)
                ed.nodes[i] = replace(reader, inputs=(src.name,), pad=pad.pad)
    return ed.plan("same_padding")


def merge_twin_pools(plan: Plan) -> Plan:
    """ADD of two equal constant depthwise convs (each with its equal count map) of one input -> one, doubled."""
    ed = Editor(plan)

    def chain(name: str) -> list[Node]:  # [dw] or [dw, scale]
        n = plan.node(name)
        if n.kind is Kind.SCALE:
            return [plan.node(n.inputs[0]), n]
        return [n]

    def same(a: Node, b: Node) -> bool:
        return replace(a, name="", inputs=()) == replace(b, name="", inputs=())

    for add in [n for n in plan.nodes if n.kind is Kind.ADD and len(n.inputs) == 2]:
        left, right = chain(add.inputs[0]), chain(add.inputs[1])
        if len(left) != len(right) or left[0].kind is not Kind.DEPTHWISE or left[0].const[:1] != ("fill",):
            continue
        if left[0].inputs != right[0].inputs or not all(same(a, b) for a, b in zip(left, right)):
            continue
        if any(len(plan.readers[n.name]) != 1 for n in left + right):
            continue
        dw = replace(left[0], const=("fill", 2 * left[0].const[1]))
        i = ed.index(left[0].name)
        ed.nodes[i] = dw
        ed.rewire(add.name, left[-1].name)
        ed.nodes = [n for n in ed.nodes if n.name != add.name]
    return ed.plan("merge_twin_pools")


def share_max_pools(plan: Plan) -> Plan:
    """MAX_POOLs of one tensor with equal windows -> the first one.

    Why: every NASNet-A reduction cell pools its zero-padded ``h`` twice, the same way (``reduction_left2`` and
    ``reduction_right5``). TFLite's converter merges the two (equal ops); ``torch.export`` does not, so
    ExecuTorch ran both pools, each behind a PAD copy XNNPACK cannot fold (8 pools instead of 4)."""
    ed = Editor(plan)
    first: dict[tuple, str] = {}
    for n in [n for n in plan.nodes if n.kind is Kind.MAX_POOL]:
        key = (n.inputs, n.kernel, n.stride, n.dilation, n.pad, n.pad_mode, n.activation, n.part)
        if key in first:
            ed.rewire(n.name, first[key])
        else:
            first[key] = n.name
    return ed.plan("share_max_pools")


def split_large_dwconv(plan: Plan) -> Plan:
    """SEPARABLE with a k x k kernel over 25 taps -> kernel groups (CROP/PAD -> DEPTHWISE), their ADD, then the
    pointwise CONV. Weights: :class:`SplitSeparable`."""
    ed = Editor(plan)
    for n in [n for n in plan.nodes if n.kind is Kind.SEPARABLE and n.kernel[0] * n.kernel[1] > MAX_DW_TAPS]:
        k, s = n.kernel[0], n.stride[0]
        x = plan.node(n.inputs[0])
        hw = x.shape[:2]
        if n.kernel[0] != n.kernel[1] or n.pad != same_pad4(hw, n.kernel, n.stride):
            raise AssertionError(f"{n.name}: split_large_dwconv takes square 'same'-padded kernels (run "
                                 "same_padding first)")
        new, parts = [], []
        for g, ((r0, r1, c0, c1), window) in enumerate(zip(tap_groups(k, s), group_windows(hw, k, s))):
            if window is None:  # reads only padding (tiny inputs): contributes zero
                continue
            (rc0, rc1, pt, pb), (cc0, cc1, pl, pr) = window
            src, shape = x.name, x.shape
            if rc0 or rc1 or cc0 or cc1:
                shape = (shape[0] - rc0 - rc1, shape[1] - cc0 - cc1, shape[2])
                new.append(Node(f"{n.name}_dw{g}_crop", Kind.CROP, (src,), shape, pad=(rc0, rc1, cc0, cc1)))
                src = new[-1].name
            if pt or pb or pl or pr:
                shape = (shape[0] + pt + pb, shape[1] + pl + pr, shape[2])
                new.append(Node(f"{n.name}_dw{g}_pad", Kind.PAD, (src,), shape, pad=(pt, pb, pl, pr)))
                src = new[-1].name
            kh, kw = r1 - r0, c1 - c0
            out = (conv_out(shape[0], kh, s, 0, 0), conv_out(shape[1], kw, s, 0, 0), x.shape[2])
            new.append(Node(f"{n.name}_dw{g}", Kind.DEPTHWISE, (src,), out, (kh, kw), (s, s),
                            weights=f"{n.name}_dw{g}"))
            parts.append(new[-1].name)
        y = parts[0]
        if len(parts) > 1:
            new.append(Node(f"{n.name}_dw", Kind.ADD, tuple(parts), new[-1].shape))
            y = new[-1].name
        new.append(Node(f"{n.name}_pw", Kind.CONV, (y,), n.shape, weights=f"{n.name}_pw"))
        ed.replace(n.name, new)
        ed.weight_ops.append(SplitSeparable(n.weights, k, s))
    return ed.plan("split_large_dwconv")


def _pad_variants(pad: Pad) -> list[Pad]:
    """The same padding with one row or column more or less after the input, in the order tried."""
    t, b, l, r = pad
    return [(t, b + 1, l, r), (t, b, l, r + 1), (t, b - 1, l, r), (t, b, l, r - 1), (t, b + 1, l, r + 1)]


def distinct_pads(plan: Plan) -> Plan:
    """Equal zero PADs of one tensor, read only by 'valid' convolutions -> PADs that differ by a row or column of
    padding no window reads (exact: every reader's output keeps its shape and values).

    Why: TFLite's converter merges equal ops, so the two 7x7 stride-2 separable convs of every reduction cell,
    which read one input through the same kernel-group pads (:func:`split_large_dwconv`), share each PAD; XNNPACK
    folds a zero pad into a convolution only where the convolution is the pad's single reader
    (``xnn_subgraph_fusion`` in src/subgraph.c), so the 12 shared PADs ran as copies. A pad copy moves one
    pixel's channels per call (``xnn_compute_pad_5d``): 11% of the int8 form's time at one thread, and more at
    two, where pthreadpool hands the calls out one pixel row at a time (``perf``, docs/benchmarking.md)."""
    def source(name: str) -> tuple:
        """What a tensor is up to equal crops (the converter merges equal CROPs of one tensor too)."""
        n = plan.node(name)
        return ("crop", source(n.inputs[0]), n.pad) if n.kind is Kind.CROP else (name,)

    ed = Editor(plan)
    taken: set[tuple[tuple, Pad]] = set()
    for pad in [n for n in plan.nodes if n.kind is Kind.PAD and n.pad_mode is PadMode.ZERO]:
        src = source(pad.inputs[0])
        if (src, pad.pad) not in taken:
            taken.add((src, pad.pad))
            continue
        readers = ed.readers(pad.name)
        if not readers or any(r.kind not in (Kind.CONV, Kind.DEPTHWISE) or r.pad != NO_PAD for r in readers):
            continue
        h, w, c = plan.node(pad.inputs[0]).shape
        for t, b, l, r in _pad_variants(pad.pad):
            shape = (h + t + b, w + l + r, c)
            if min(t, b, l, r) < 0 or (src, (t, b, l, r)) in taken:
                continue
            if all((conv_out(shape[0], x.kernel[0], x.stride[0], 0, 0, x.dilation),
                    conv_out(shape[1], x.kernel[1], x.stride[1], 0, 0, x.dilation)) == x.shape[:2] for x in readers):
                ed.nodes[ed.index(pad.name)] = replace(pad, pad=(t, b, l, r), shape=shape)
                taken.add((src, (t, b, l, r)))
                break
    return ed.plan("distinct_pads")


# ReLU as a fused activation: TFLite's ADD, MUL and convolutions carry one (XNNPACK's output clamp); a
# multi-input ADD becomes ADD_N, which carries none.
def _takes_relu(n: Node) -> bool:
    return n.activation is None and (n.kind in CONV_KINDS or n.kind is Kind.SCALE
                                     or (n.kind is Kind.ADD and len(n.inputs) == 2))


def relu_before_concat(plan: Plan) -> Plan:
    """A CONCAT read only through ReLUs -> a CONCAT of rectified inputs, its ReLUs gone (relu(concat(a, b)) ==
    concat(relu(a), relu(b))).

    NASNet-A's cell output is such a concat: the next cell reads it through one ReLU as its x and the cell after
    through another as its p, and the head through a third; each is a full-width clamp (a barrier of its own at
    N threads, 2 per cell). Pushed into the concat's inputs, the ReLU becomes the fused activation of the ADD,
    MUL or convolution that makes an input read by nothing else, and a ReLU of the input otherwise (which
    :func:`share_relu` merges with the one its cell already takes of it: NASNet-A's identity branch reads p,
    whose ReLU the separable convolutions also read). The cell's output is then rectified; every reader gets
    what it got before."""
    ed = Editor(plan)
    for c in [n for n in plan.nodes if n.kind is Kind.CONCAT]:
        readers = [plan.node(r) for r in plan.readers[c.name]]
        if (not readers or any(r.kind is not Kind.RELU for r in readers)
                or plan.output in [c.name] + [r.name for r in readers]):  # the output keeps its name and value
            continue
        inputs = []
        for j, i in enumerate(c.inputs):
            src = plan.node(i)
            if _takes_relu(src) and plan.readers[i] == [c.name]:
                ed.nodes[ed.index(i)] = replace(ed.get(i), activation="relu")
                inputs.append(i)
            else:
                relu = Node(f"{c.name}_in{j}_relu", Kind.RELU, (i,), src.shape, part=c.part)
                ed.nodes.insert(ed.index(c.name), relu)
                inputs.append(relu.name)
        ed.nodes[ed.index(c.name)] = replace(ed.get(c.name), inputs=tuple(inputs))
        for r in readers:
            ed.rewire(r.name, c.name)
    return ed.plan("relu_before_concat")


def _fusable_producer(plan: Plan, name: str) -> bool:
    """The converter fuses a ReLU into this node: a convolution or its BatchNorm, read by nothing else."""
    n = plan.node(name)
    return n.kind in CONV_KINDS + (Kind.BATCH_NORM,) and n.activation is None and len(plan.readers[name]) == 1


def relu_as_dwconv(plan: Plan) -> Plan:
    """A ReLU the converter cannot fuse into its producer -> 1x1 DEPTHWISE, unit weights, fused ReLU.

    Run it before :func:`share_relu`: a cell state that several ops read through their own ReLU has as many
    readers, so each of its ReLUs is standalone (then merged into one)."""
    ed = Editor(plan)
    for n in [n for n in plan.nodes if n.kind is Kind.RELU and not _fusable_producer(plan, n.inputs[0])]:
        ed.replace(n.name, [Node(n.name + "_dw", Kind.DEPTHWISE, n.inputs, n.shape, activation="relu",
                                 const=("fill", 1.0))])
    return ed.plan("relu_as_dwconv")


def _is_relu(n: Node) -> bool:
    return n.kind is Kind.RELU or (n.kind is Kind.DEPTHWISE and n.activation == "relu" and n.kernel == (1, 1)
                                   and n.const == ("fill", 1.0))


def share_relu(plan: Plan) -> Plan:
    """ReLUs (or their depthwise form) of the same tensor in the same part -> the first one."""
    ed = Editor(plan)
    first: dict[tuple, str] = {}
    for n in plan.nodes:
        if not _is_relu(n):
            continue
        key = (n.part, n.kind, n.inputs)
        if key in first:
            ed.rewire(n.name, first[key])
        else:
            first[key] = n.name
    return ed.plan("share_relu")


def split_concat(plan: Plan) -> Plan:
    """CONCAT of more than :data:`MAX_CONCAT_INPUTS` inputs -> a CONCAT of at most that many, some inputs grouped."""
    ed = Editor(plan)
    for n in [n for n in plan.nodes if n.kind is Kind.CONCAT and len(n.inputs) > MAX_CONCAT_INPUTS]:
        groups = split_for_concat(list(n.inputs))
        new, joined = [], []
        for g, group in enumerate(groups):
            if len(group) == 1:
                joined.append(group[0])
                continue
            h, w, _ = n.shape
            new.append(Node(f"{n.name}_{g}", Kind.CONCAT, tuple(group),
                            (h, w, sum(plan.node(i).shape[2] for i in group))))
            joined.append(new[-1].name)
        new.append(replace(n, inputs=tuple(joined)))
        i = ed.index(n.name)
        ed.nodes[i:i + 1] = [replace(m, part=n.part) for m in new]
    return ed.plan("split_concat")


def _zero_padded_max_pools(plan: Plan):
    """(pool, its unpadded input, the padding) of each 'valid' MAX_POOL that reads a zero PAD which is exactly TF
    'SAME' for it (Keras' zero pad + 'valid' max pool): what the two max-pool rewrites replace."""
    for n in [n for n in plan.nodes if n.kind is Kind.MAX_POOL and n.pad_mode is PadMode.ZERO and n.pad == NO_PAD]:
        pad = plan.node(n.inputs[0])
        if pad.kind is not Kind.PAD:
            continue
        src = plan.node(pad.inputs[0])
        if same_pad4(src.shape[:2], n.kernel, n.stride) == pad.pad:
            yield n, src, pad.pad


def max_pool_border_map(plan: Plan) -> Plan:
    """PAD (zeros) -> 'valid' MAX_POOL -> a 'same' MAX_POOL (padding excluded) and MAXIMUM with the border map."""
    ed = Editor(plan)
    for n, src, pad in _zero_padded_max_pools(plan):
        h, w, _ = src.shape
        pool = replace(n, inputs=(src.name,), pad=pad, pad_mode=PadMode.EXCLUDED)
        border = Node(n.name + "_border", Kind.MAXIMUM, (n.name,), n.shape,
                      const=("border_map", h, w, n.kernel[0], n.stride[0]))
        ed.replace(n.name, [pool, border])
    return ed.plan("max_pool_border_map")


def max_pool_border_relu(plan: Plan) -> Plan:
    """PAD (zeros) -> 'valid' MAX_POOL -> a 'same' MAX_POOL m (padding excluded), then ``m + relu(m * mask)``
    with the constant border mask (-1 where a window reaches into the padding, 0 elsewhere): exact in float.

    Why (LiteRT int8): XNNPACK folds a zero pad into a convolution, not into a max pool, so each reduction
    cell's max pool ran behind a PAD copy of its full-size input that moves one pixel's channels per call; the
    mask's MUL (its ReLU fused) and the ADD run on the pooled quarter-size output. Not
    :func:`max_pool_border_map`: LiteRT's XNNPACK delegate leaves an int8 MAXIMUM to LiteRT's kernels."""
    ed = Editor(plan)
    for n, src, pad in _zero_padded_max_pools(plan):
        h, w, _ = src.shape
        pool = replace(n, name=n.name + "_same", inputs=(src.name,), pad=pad, pad_mode=PadMode.EXCLUDED)
        mask = Node(n.name + "_border", Kind.SCALE, (pool.name,), n.shape, activation="relu",
                    const=("border_mask", h, w, n.kernel[0], n.stride[0]))
        ed.replace(n.name, [pool, mask, Node(n.name, Kind.ADD, (pool.name, mask.name), n.shape)])
    return ed.plan("max_pool_border_relu")


# -------------------------------------------------------------------------------------------------- targets
PASSES: dict[str, Callable[[Plan], Plan]] = {f.__name__: f for f in (
    fuse_factorized, avgpool_as_dwconv, same_padding, merge_twin_pools, share_max_pools, split_large_dwconv,
    distinct_pads, relu_before_concat, relu_as_dwconv, share_relu, split_concat, max_pool_border_map,
    max_pool_border_relu)}


@dataclass(frozen=True)
class Target:
    """A named, ordered list of passes: what one runtime's kernels need."""

    name: str
    passes: tuple[str, ...]
    description: str = ""

    def without(self, *names: str) -> "Target":
        """The same target with some passes left out (to measure or test one rewrite)."""
        unknown = set(names) - set(self.passes)
        if unknown:
            raise ValueError(f"target {self.name} has no pass {sorted(unknown)}")
        return Target(f"{self.name}-{'-'.join(names)}", tuple(p for p in self.passes if p not in names),
                      self.description)


_XNNPACK = ("fuse_factorized", "avgpool_as_dwconv", "same_padding", "merge_twin_pools", "share_max_pools",
            "split_large_dwconv")
REFERENCE = Target("reference", (), "Keras' NASNet layer for layer: the stock graph")
# max_pool_border_map in the float form: XNNPACK folds no zero pad into a max pool, so each reduction cell's pool read
# a PAD copy of its full-size input (the four: 0.16 ms of fp32's 11.2 at one thread, 1.04x at two:
# scripts/operator_profile.py); a 'same' pool and one MAXIMUM on its quarter-size output instead. Not in ExecuTorch's
# int8 form: its XNNPACK partitioner takes MAXIMUM in fp32 only (MaximumConfig), so it would run as fp32 islands.
XNNPACK_FP32 = Target("xnnpack_fp32", _XNNPACK + ("share_relu", "split_concat", "distinct_pads", "max_pool_border_map"),
                      "XNNPACK in float (LiteRT fp32/fp16/dynamic; ExecuTorch fp32)")
XNNPACK_PT2E = Target("xnnpack_pt2e", XNNPACK_FP32.without("max_pool_border_map").passes,
                      "XNNPACK int8 through ExecuTorch: the float form PT2E's XNNPACK quantizer quantizes whole "
                      "(it takes ReLU as it is, MAXIMUM not at all)")
# relu_before_concat in LiteRT's int8 form only: the fp32 form is also ExecuTorch's, whose PT2E XNNPACK quantizer
# left the ReLUs the pass makes (after an ADD or a constant MUL, and on a concat input) as 36 fp32 islands: 38
# clamps and 38 converts in the int8 program's XNNPACK graph instead of 2 converts (tests/test_executorch.py).
XNNPACK_INT8 = Target("xnnpack_int8",
                      _XNNPACK + ("relu_before_concat", "relu_as_dwconv", "share_relu", "split_concat",
                                  "distinct_pads", "max_pool_border_relu"),
                      "XNNPACK full int8 through LiteRT (standalone int8 RELU stays on LiteRT's kernels)")
# The GPU needs max_pool_border_map for correctness (LiteRT's GPU merges a PAD into its pool with -inf semantics,
# docs/gpu.md), XNNPACK for speed: today the two targets have the same passes, kept apart so that either can change.
GPU = Target("gpu", XNNPACK_FP32.passes,
             "LiteRT's GPU accelerator (float): no zero PAD feeding a max pool alone")
TARGETS: dict[str, Target] = {t.name: t for t in (REFERENCE, XNNPACK_FP32, XNNPACK_PT2E, XNNPACK_INT8, GPU)}


def lower(plan: Plan, target: Target) -> Plan:
    """Run ``target``'s passes over ``plan`` in order."""
    for name in target.passes:
        plan = PASSES[name](plan)
    return replace(plan, target=target.name)


def build_plan(config: NASNetConfig, target: Target | str = REFERENCE, include_top: bool = True) -> Plan:
    """``compile`` then ``lower``: the plan of ``config`` for ``target``."""
    target = TARGETS[target] if isinstance(target, str) else target
    return lower(compile(config, include_top=include_top), target)

