"""The network as one compiled plan: genotypes + configuration -> a frozen graph of nodes.

:func:`compile` turns a :class:`~edge.model.config.NASNetConfig` into the *reference* plan: every node
with its operation kind, kernel, stride, explicit padding, inputs, output shape and the Keras layer whose
weights it holds. Which earlier output a cell reads as ``p``, how it is adjusted, every channel count and
every layer name are decided here and nowhere else. The lowering (:mod:`edge.model.passes`) rewrites
plans into plans; the emitters (:mod:`edge.model.torch_emit`, :mod:`edge.model.keras_emit`) turn any plan
into layers, one node kind at a time, with no lowering logic of their own.

The reference plan is Keras' ``keras.applications.nasnet`` layer for layer (names included, since names
are how the official weights load): the stride-2 separable convs and Keras-mode reduction pools read an
explicit zero ``PAD`` node, the factorized reduction is two subsampled 1x1 convs (one through a pad and a
crop), every op that starts with a ReLU has its own.

Shapes are (H, W, C) and padding is (top, bottom, left, right) everywhere in a plan; the PyTorch emitter
converts to NCHW.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from edge.model.config import CellSpec, NASNetConfig, Pooling, same_pad
from edge.model.genotypes import Combine, Op

Shape = tuple[int, int, int]
Pad = tuple[int, int, int, int]  # (top, bottom, left, right)
NO_PAD: Pad = (0, 0, 0, 0)


class Kind(str, enum.Enum):
    """What a node computes. Every emitter maps each kind to one layer (or a fixed short sequence)."""

    INPUT = "input"
    CONV = "conv"  # dense convolution, no bias (kernel, stride, dilation, pad; ``filters`` outputs)
    DEPTHWISE = "depthwise"  # depthwise convolution, multiplier 1, no bias; weights or a constant fill
    SEPARABLE = "separable"  # depthwise then pointwise in one weighted layer (Keras SeparableConv2D)
    BATCH_NORM = "batch_norm"
    RELU = "relu"
    PAD = "pad"  # zero padding
    CROP = "crop"
    SUBSAMPLE = "subsample"  # x[::s, ::s] (Keras: a 1x1 average pool with stride s)
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    SCALE = "scale"  # x times a constant per-position map
    MAXIMUM = "maximum"  # max(x, a constant per-position map)
    ADD = "add"
    CONCAT = "concat"
    GLOBAL_POOL = "global_pool"  # mean over H and W
    DENSE = "dense"  # the classifier (logits; a softmax is the caller's)


class PadMode(str, enum.Enum):
    """What the padding of a pool means. Convolutions always pad with zeros."""

    ZERO = "zero"  # zeros take part (the max sees them, the average divides by k*k)
    EXCLUDED = "excluded"  # TF 'SAME' pooling: left out of the max, and out of the average's count


CONV_KINDS = (Kind.CONV, Kind.DEPTHWISE, Kind.SEPARABLE)
POOL_KINDS = (Kind.MAX_POOL, Kind.AVG_POOL)


@dataclass(frozen=True)
class Node:
    """One operation of a plan. ``inputs`` name earlier nodes; ``shape`` is the output (H, W, C).

    ``weights``: the Keras layer name whose arrays the node holds (weights load by it). ``const``: the recipe
    of a constant the node carries instead (:func:`constant`): ``("fill", v)`` for a depthwise kernel of v
    everywhere, ``("count_map", h, w, k, s, pad)``, ``("border_map", h, w, k, s)`` and ``("border_mask", h, w, k,
    s)`` for per-position maps.
    ``part``: stem, ``cell_NN_...`` or head, where a per-cell export cuts the network.
    """

    name: str
    kind: Kind
    inputs: tuple[str, ...] = ()
    shape: Shape = (0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: int = 1
    pad: Pad = NO_PAD
    pad_mode: PadMode = PadMode.ZERO
    activation: str | None = None  # "relu": fused into the node
    weights: str | None = None
    const: tuple = ()
    part: str = ""

    def to_dict(self) -> dict:
        d = {"name": self.name, "kind": self.kind.value, "inputs": list(self.inputs), "shape": list(self.shape)}
        for key, default in (("kernel", (1, 1)), ("stride", (1, 1)), ("dilation", 1), ("pad", NO_PAD),
                             ("pad_mode", PadMode.ZERO), ("activation", None), ("weights", None), ("const", ())):
            value = getattr(self, key)
            if value != default:
                d[key] = value.value if isinstance(value, enum.Enum) else (list(value) if isinstance(value, tuple)
                                                                          else value)
        d["part"] = self.part
        return d


@dataclass(frozen=True)
class Part:
    """A piece of the plan that a per-cell export makes into its own model: its nodes in order, the nodes of
    earlier parts it reads (``inputs``: a cell's ``x`` then ``p``) and its output node."""

    name: str
    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    output: str


@dataclass(frozen=True)
class Plan:
    """A compiled network: nodes in topological order, the passes that made it, the weight transforms they
    imply (:mod:`edge.model.passes`: applied to Keras-layout weights by :meth:`lower_weights`)."""

    config: NASNetConfig
    nodes: tuple[Node, ...]
    output: str
    include_top: bool = True
    target: str = "reference"
    passes: tuple[str, ...] = ()
    weight_ops: tuple = ()

    # ---------------------------------------------------------------------------------------- lookups
    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def position(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.nodes)}

    def node(self, name: str) -> Node:
        return self.by_name[name]

    @cached_property
    def readers(self) -> dict[str, list[str]]:
        """{node name: names of the nodes that read it, in order}."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def kinds(self) -> dict[str, int]:
        """How many nodes of each kind (a quick structural summary)."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.kind.value] = counts.get(n.kind.value, 0) + 1
        return dict(sorted(counts.items()))

    def weighted(self) -> list[Node]:
        return [n for n in self.nodes if n.weights is not None]

    def parts(self) -> list[Part]:
        """Stem, every cell and head, each with the nodes of earlier parts it reads."""
        order = list(dict.fromkeys(n.part for n in self.nodes))
        out = []
        for name in order:
            nodes = tuple(n for n in self.nodes if n.part == name)
            own = {n.name for n in nodes}
            # x (the latest earlier output), then p: the order a cell's inputs have in both emitters
            external = tuple(sorted(dict.fromkeys(i for n in nodes for i in n.inputs if i not in own),
                                    key=self.position.__getitem__, reverse=True))
            later = [n for n in self.nodes if n.part != name and any(i in own for i in n.inputs)]
            outputs = [n.name for n in nodes if n.name == self.output or any(n.name in r.inputs for r in later)]
            if len(outputs) != 1:
                raise AssertionError(f"part {name} has outputs {outputs}: a part must have exactly one")
            out.append(Part(name, external, nodes, outputs[0]))
        return out

    # ---------------------------------------------------------------------------------------- identity
    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "include_top": self.include_top, "target": self.target,
                "passes": list(self.passes), "weight_ops": [w.to_dict() for w in self.weight_ops],
                "nodes": [n.to_dict() for n in self.nodes], "output": self.output}

    def digest(self) -> str:
        """sha256 of the plan (configuration, nodes, passes): two artifacts with the same digest were made from
        the same graph; recorded in every manifest."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> dict:
        """What a manifest records of the plan."""
        return {"target": self.target, "passes": list(self.passes), "sha256": self.digest(),
                "nodes": len(self.nodes), "kinds": self.kinds()}

    # ---------------------------------------------------------------------------------------- weights
    def lower_weights(self, weights: dict) -> dict:
        """The Keras-layout weights this plan loads, from the reference network's (the passes' transforms)."""
        out = dict(weights)
        for op in self.weight_ops:
            op.apply(out)
        return out

    def raise_weights(self, weights: dict) -> dict:
        """Inverse of :meth:`lower_weights`: the reference network's weights from this plan's."""
        out = dict(weights)
        for op in reversed(self.weight_ops):
            op.invert(out)
        return out

    # ---------------------------------------------------------------------------------------- costs
    def macs(self) -> dict[str, int]:
        """{part: multiply-adds}, counted from the nodes (weighted layers and constant convolutions)."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.part] = out.get(n.part, 0) + node_macs(self, n)
        return out

    def params(self) -> dict[str, int]:
        """{part: trainable parameters}, counted from the nodes (BatchNorm: gamma and beta)."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.part] = out.get(n.part, 0) + node_params(self, n)
        return out


# -------------------------------------------------------------------------------------------------- helpers
def conv_out(size: int, kernel: int, stride: int, before: int, after: int, dilation: int = 1) -> int:
    """Output length of a convolution or pool along one axis."""
    return (size + before + after - ((kernel - 1) * dilation + 1)) // stride + 1


def same_pad4(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: int = 1) -> Pad:
    """TF 'SAME' padding as (top, bottom, left, right)."""
    return same_pad(hw[0], kernel[0], stride[0], dilation) + same_pad(hw[1], kernel[1], stride[1], dilation)


def is_same_pad(node: Node, in_shape: Shape) -> bool:
    """The node's padding is exactly what TF 'SAME' pads for its input (Keras ``padding='same'``)."""
    return node.pad == same_pad4(in_shape[:2], node.kernel, node.stride, node.dilation)


def avg_count_map(h: int, w: int, k: int, stride: int, pad: Pad) -> np.ndarray:
    """k*k / (number of real pixels under each window): an average pool that leaves the padding out of its
    count, computed as a zero-padded average times this map (exactly 1 inside)."""
    top, bottom, left, right = pad
    ones = np.pad(np.ones((h, w), np.float64), ((top, bottom), (left, right)))
    oh = (ones.shape[0] - k) // stride + 1
    ow = (ones.shape[1] - k) // stride + 1
    count = np.zeros((oh, ow))
    for dy in range(k):
        for dx in range(k):
            count += ones[dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
    return (k * k / count).astype(np.float32)


def border_map(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
    """(out_h, out_w) float32: 0 where the 'same'-padded window of a ``kernel`` x ``kernel``, ``stride`` max pool
    on an ``h`` x ``w`` input reaches into the padding, the lowest float32 elsewhere.

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


def border_mask(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
    """(out_h, out_w) float32: -1 where the window reaches into the padding (:func:`border_map`), 0 elsewhere.

    ``m + relu(m * mask)``, ``m`` the 'same' max pool, is then the zero-padded max pool, exactly: a border
    window gives ``m + relu(-m) = max(m, 0)``, an interior one ``m``."""
    return np.where(border_map(h, w, kernel, stride) == 0.0, -1.0, 0.0).astype(np.float32)


def constant(node: Node) -> np.ndarray:
    """The constant a node carries, from its recipe: a depthwise kernel (kh, kw, C) or an (H, W) map."""
    kind = node.const[0]
    if kind == "fill":
        return np.full(node.kernel + (node.shape[2],), node.const[1], np.float32)
    if kind == "count_map":
        _, h, w, k, s, pad = node.const
        return avg_count_map(h, w, k, s, tuple(pad))
    if kind == "border_map":
        _, h, w, k, s = node.const
        return border_map(h, w, k, s)
    if kind == "border_mask":
        _, h, w, k, s = node.const
        return border_mask(h, w, k, s)
    raise ValueError(f"node {node.name}: unknown constant {node.const!r}")


def node_macs(plan: Plan, n: Node) -> int:
    h, w, c = n.shape
    if n.kind is Kind.CONV:
        cin = plan.node(n.inputs[0]).shape[2]
        return h * w * c * cin * n.kernel[0] * n.kernel[1]
    if n.kind is Kind.DEPTHWISE:
        return h * w * c * n.kernel[0] * n.kernel[1]
    if n.kind is Kind.SEPARABLE:
        cin = plan.node(n.inputs[0]).shape[2]
        return h * w * cin * n.kernel[0] * n.kernel[1] + h * w * cin * c
    if n.kind is Kind.DENSE:
        return plan.node(n.inputs[0]).shape[2] * c
    return 0


def node_params(plan: Plan, n: Node) -> int:
    c = n.shape[2]
    if n.weights is None:
        return 0
    cin = plan.node(n.inputs[0]).shape[2]
    if n.kind is Kind.CONV:
        return c * cin * n.kernel[0] * n.kernel[1]
    if n.kind is Kind.DEPTHWISE:
        return c * n.kernel[0] * n.kernel[1]
    if n.kind is Kind.SEPARABLE:
        return cin * n.kernel[0] * n.kernel[1] + cin * c
    if n.kind is Kind.BATCH_NORM:
        return 2 * c
    if n.kind is Kind.DENSE:
        return cin * c + c
    return 0


# -------------------------------------------------------------------------------------------------- compile
class _Builder:
    """Appends nodes with their output shapes computed; the part of every node is the current ``part``."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.shapes: dict[str, Shape] = {}
        self.part = "stem"
        self.count: dict[str, int] = {}

    def add(self, node: Node) -> str:
        if node.name in self.shapes:
            raise AssertionError(f"duplicate node name {node.name}")
        node = replace(node, part=self.part)
        self.nodes.append(node)
        self.shapes[node.name] = node.shape
        return node.name

    def auto(self, base: str) -> str:
        """A unique name for a node Keras leaves unnamed: ``{part}_{base}_{n}``."""
        key = f"{self.part}_{base}"
        self.count[key] = self.count.get(key, 0) + 1
        return f"{key}_{self.count[key]}"

    def shape(self, name: str) -> Shape:
        return self.shapes[name]

    # ---- one method per node kind
    def input(self, name: str, shape: Shape) -> str:
        return self.add(Node(name, Kind.INPUT, shape=shape))

    def conv(self, x: str, filters: int, kernel, stride=1, pad: Pad = NO_PAD, dilation: int = 1, *, name: str,
             kind: Kind = Kind.CONV) -> str:
        k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
        s = stride if isinstance(stride, tuple) else (stride, stride)
        h, w, c = self.shape(x)
        out = (conv_out(h, k[0], s[0], pad[0], pad[1], dilation), conv_out(w, k[1], s[1], pad[2], pad[3], dilation),
               c if kind is Kind.DEPTHWISE else filters)
        return self.add(Node(name, kind, (x,), out, k, s, dilation, pad, weights=name))

    def separable(self, x: str, filters: int, kernel: int, stride: int, pad: Pad, *, name: str) -> str:
        return self.conv(x, filters, kernel, stride, pad, name=name, kind=Kind.SEPARABLE)

    def bn(self, x: str, *, name: str) -> str:
        return self.add(Node(name, Kind.BATCH_NORM, (x,), self.shape(x), weights=name))

    def relu(self, x: str, *, name: str | None = None) -> str:
        return self.add(Node(name or self.auto("relu"), Kind.RELU, (x,), self.shape(x)))

    def zero_pad(self, x: str, pad: Pad, *, name: str | None = None) -> str:
        if pad == NO_PAD:
            return x
        h, w, c = self.shape(x)
        return self.add(Node(name or self.auto("pad"), Kind.PAD, (x,), (h + pad[0] + pad[1], w + pad[2] + pad[3], c),
                             pad=pad))

    def crop(self, x: str, crop: Pad, *, name: str | None = None) -> str:
        h, w, c = self.shape(x)
        return self.add(Node(name or self.auto("crop"), Kind.CROP, (x,),
                             (h - crop[0] - crop[1], w - crop[2] - crop[3], c), pad=crop))

    def subsample(self, x: str, stride: int, *, name: str | None = None) -> str:
        h, w, c = self.shape(x)
        return self.add(Node(name or self.auto("subsample"), Kind.SUBSAMPLE, (x,),
                             (math.ceil(h / stride), math.ceil(w / stride), c), stride=(stride, stride)))

    def pool(self, x: str, kind: Kind, k: int, stride: int, pad: Pad, mode: PadMode, *, name: str) -> str:
        h, w, c = self.shape(x)
        out = (conv_out(h, k, stride, pad[0], pad[1]), conv_out(w, k, stride, pad[2], pad[3]), c)
        return self.add(Node(name, kind, (x,), out, (k, k), (stride, stride), pad=pad, pad_mode=mode))

    def add_(self, xs: list[str], *, name: str) -> str:
        return self.add(Node(name, Kind.ADD, tuple(xs), self.shape(xs[0])))

    def concat(self, xs: list[str], *, name: str) -> str:
        h, w, _ = self.shape(xs[0])
        return self.add(Node(name, Kind.CONCAT, tuple(xs), (h, w, sum(self.shape(x)[2] for x in xs))))


def compile(config: NASNetConfig, include_top: bool = True) -> Plan:  # noqa: A001 (the verb of the design)
    """The reference plan of ``config``: Keras' NASNet, layer for layer (see the module docstring)."""
    b = _Builder()
    size = config.input_size
    x = b.input("input_layer", (size, size, 3))
    x = b.conv(x, config.stem_filters, 3, 2, name="stem_conv1")
    outs = [b.bn(x, name="stem_bn1")]
    p_index: int | None = None
    for spec in config.cells():
        b.part = spec.name
        outs.append(_cell(b, spec, outs[-1], None if p_index is None else outs[p_index], config.pooling))
        # Keras: every cell returns (x, ip); with skip_reduction a reduction cell passes its p through
        if not (config.skip_reduction and spec.block_id.startswith("reduce_")):
            p_index = len(outs) - 2
    b.part = "head"
    if include_top:
        h = b.relu(outs[-1], name="head_relu")
        h = b.add(Node("head_pool", Kind.GLOBAL_POOL, (h,), (1, 1, b.shape(h)[2])))
        out = b.add(Node("predictions", Kind.DENSE, (h,), (1, 1, config.num_classes), weights="predictions"))
    else:  # headless like Keras include_top=False: the final ReLU is part of the features
        out = b.relu(outs[-1], name="head_relu")
    return Plan(config, tuple(b.nodes), out, include_top=include_top)


def _cell(b: _Builder, spec: CellSpec, x: str, p: str | None, pooling: Pooling) -> str:
    """One NASNet cell, driven by its genotype (TF-slim ``NasNetABaseCell``, Keras ``_*_a_cell``)."""
    g, f, bid, kind = spec.genotype, spec.filters, spec.block_id, spec.kind.value
    p = x if p is None else p
    if spec.adjust == "factorized":
        p = _factorized(b, p, f, f"adjust_conv_1_{bid}", f"adjust_conv_2_{bid}", f"adjust_bn_{bid}",
                        relu=f"adjust_relu_1_{bid}", pools=(f"adjust_avg_pool_1_{bid}", f"adjust_avg_pool_2_{bid}"))
    elif spec.adjust == "projection":
        p = b.relu(p, name=f"adjust_relu_1_{bid}")
        p = b.conv(p, f, 1, name=f"adjust_conv_projection_{bid}")
        p = b.bn(p, name=f"adjust_bn_{bid}")
    h = b.relu(x, name=f"{kind}_relu_1_{bid}")
    h = b.conv(h, f, 1, name=f"{kind}_conv_1_{bid}")
    states = [b.bn(h, name=f"{kind}_bn_1_{bid}"), p]
    padded: dict[tuple[str, int], str] = {}  # Keras zero-pads a state once per kernel size for its pools
    for block in range(g.num_blocks):
        outs = []
        for i in (2 * block, 2 * block + 1):
            outs.append(_op(b, g.ops[i], states[g.inputs[i]], f, g.stride(i), f"{g.keras_names[i]}_{bid}", pooling,
                            padded, pad_name=f"{kind}_pad_1_{bid}"))
        if g.combine is Combine.ADD:
            if b.shape(outs[0]) != b.shape(outs[1]):
                raise ValueError(f"cell {bid} block {block + 1}: cannot add {b.shape(outs[0])} and "
                                 f"{b.shape(outs[1])} ({g.ops[2 * block].value} + {g.ops[2 * block + 1].value})")
            states.append(b.add_(outs, name=f"{kind}_add_{block + 1}_{bid}"))
        else:
            states.append(b.concat(outs, name=f"{kind}_comb_{block + 1}_{bid}"))
    return b.concat([states[i] for i in g.concat], name=f"{kind}_concat_{bid}")


def _op(b: _Builder, op: Op, x: str, filters: int, stride: int, name: str, pooling: Pooling, padded: dict,
        pad_name: str) -> str:
    """The nodes of one genotype operation reading state ``x``; returns its output."""
    hw = b.shape(x)[:2]
    if op.is_separable:  # ReLU -> SepConv(k, stride) -> BN -> ReLU -> SepConv(k) -> BN
        k = op.kernel_size
        y = b.relu(x, name=f"{name}_relu")
        if stride > 1:  # Keras: correct_pad, then 'valid'
            y = b.zero_pad(y, same_pad4(hw, (k, k), (stride, stride)), name=f"separable_conv_1_pad_{name}")
            y = b.separable(y, filters, k, stride, NO_PAD, name=f"separable_conv_1_{name}")
        else:
            y = b.separable(y, filters, k, 1, same_pad4(hw, (k, k), (1, 1)), name=f"separable_conv_1_{name}")
        y = b.bn(y, name=f"separable_conv_1_bn_{name}")
        y = b.relu(y, name=f"{name}_relu_2")
        y = b.separable(y, filters, k, 1, same_pad4(b.shape(y)[:2], (k, k), (1, 1)), name=f"separable_conv_2_{name}")
        return b.bn(y, name=f"separable_conv_2_bn_{name}")
    if op.is_pool:
        k = op.kernel_size
        kind = Kind.AVG_POOL if op is Op.AVG_POOL_3X3 else Kind.MAX_POOL
        if stride > 1 and pooling is Pooling.KERAS:  # Keras: zero pad once per state and kernel, pool 'valid'
            key = (x, k)
            if key not in padded:
                padded[key] = b.zero_pad(x, same_pad4(hw, (k, k), (stride, stride)),
                                         name=pad_name if k == 3 else None)
            return b.pool(padded[key], kind, k, stride, NO_PAD, PadMode.ZERO, name=name)
        # 'same' pooling: the padding is left out of the max and of the average's count
        return b.pool(x, kind, k, stride, same_pad4(hw, (k, k), (stride, stride)), PadMode.EXCLUDED, name=name)
    if op is Op.IDENTITY:
        if stride == 1:
            return x
        return _factorized(b, x, filters, f"{name}_conv_1", f"{name}_conv_2", f"{name}_bn", relu=f"{name}_relu",
                           pools=(None, None))
    # plain convolutions: ReLU -> conv(s) -> BN; a factorized pair strides once per axis
    shapes = {Op.CONV_1X1: [((1, 1), 1)], Op.CONV_3X3: [((3, 3), 1)], Op.DIL_CONV_3X3: [((3, 3), 2)],
              Op.CONV_1X3_3X1: [((1, 3), 1), ((3, 1), 1)], Op.CONV_1X7_7X1: [((1, 7), 1), ((7, 1), 1)]}[op]
    y = b.relu(x, name=f"{name}_relu")
    for i, (kernel, dil) in enumerate(shapes):
        s = (stride, stride) if len(shapes) == 1 else ((1, stride) if i == 0 else (stride, 1))
        if dil > 1:
            s = (1, 1)  # Keras cannot stride a dilated conv: 'same' conv, then subsample (below)
        y = b.zero_pad(y, same_pad4(b.shape(y)[:2], kernel, s, dil))
        y = b.conv(y, filters, kernel, s, dilation=dil, name=f"{name}_conv_{i + 1}")
    if op is Op.DIL_CONV_3X3 and stride > 1:
        y = b.subsample(y, stride)
    return b.bn(y, name=f"{name}_bn")


def _factorized(b: _Builder, p: str, filters: int, conv_1: str, conv_2: str, bn: str, relu: str,
                pools: tuple[str | None, str | None]) -> str:
    """Keras ``_adjust_block``'s factorized reduction: two half-width 1x1 convs on 2x subsamples, the second
    shifted one pixel down-right (pad bottom/right by 1, crop top/left by 1), concatenated, then BN."""
    p = b.relu(p, name=relu)
    p1 = b.subsample(p, 2, name=pools[0])
    p1 = b.conv(p1, filters // 2, 1, name=conv_1)
    p2 = b.zero_pad(p, (0, 1, 0, 1))
    p2 = b.crop(p2, (1, 0, 1, 0))
    p2 = b.subsample(p2, 2, name=pools[1])
    p2 = b.conv(p2, filters - filters // 2, 1, name=conv_2)
    return b.bn(b.concat([p1, p2], name=b.auto("concat")), name=bn)
