"""PyTorch NASNet, built from a genotype and a :class:`~edge.model.config.NASNetConfig`.

Every module that holds weights carries ``keras_name``, the name of the Keras layer it corresponds to,
and converts its tensors to and from Keras layout (``keras_weights`` / ``load_keras_weights``), so that
official weights load by name and a PyTorch model exports to Keras without a table of positions.
The network is built for one input size: all padding is static (explicit ``ZeroPad2d`` before stride-2
ops, like Keras ``correct_pad``), which keeps ``torch.export`` graphs free of dynamic 'SAME' logic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.model.config import BN_EPSILON, BN_MOMENTUM_TORCH, CellSpec, NASNetConfig, Pooling, same_pad, stem_output_size
from edge.model.genotypes import Combine, Op
from edge.model.lowering import (FUSED_SUFFIX, Lowering, avg_correction, group_windows, is_twin_pool_block, needs_split,
                           split_for_concat, tap_groups)
from edge.model.weights import WeightsError


# ----------------------------------------------------------------------------- weighted layers
class KerasConv2d(nn.Conv2d):
    """Conv2D without bias; Keras kernel (kh, kw, in, out) <-> PyTorch (out, in, kh, kw)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, dilation=1, *, keras_name: str):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.keras_name = keras_name

    def keras_weights(self) -> list[np.ndarray]:
        return [self.weight.detach().permute(2, 3, 1, 0).cpu().numpy()]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        _copy(self.weight, torch.from_numpy(np.asarray(arrays[0])).permute(3, 2, 0, 1), self.keras_name)


class KerasSeparableConv2d(nn.Module):
    """SeparableConv2D (depth multiplier 1, no bias): depthwise k x k, then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, *, keras_name: str):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride=stride, padding=padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.keras_name = keras_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

    def keras_weights(self) -> list[np.ndarray]:
        return [self.depthwise.weight.detach().permute(2, 3, 0, 1).cpu().numpy(),
                self.pointwise.weight.detach().permute(2, 3, 1, 0).cpu().numpy()]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        dw, pw = (torch.from_numpy(np.asarray(a)) for a in arrays)
        _copy(self.depthwise.weight, dw.permute(2, 3, 0, 1), self.keras_name + "/depthwise_kernel")
        _copy(self.pointwise.weight, pw.permute(3, 2, 0, 1), self.keras_name + "/pointwise_kernel")


class KerasDepthwiseConv2d(nn.Conv2d):
    """DepthwiseConv2D (multiplier 1, no bias): Keras kernel (kh, kw, C, 1) <-> PyTorch (C, 1, kh, kw)."""

    def __init__(self, channels: int, kernel, stride=1, *, keras_name: str):
        super().__init__(channels, channels, kernel, stride=stride, groups=channels, bias=False)
        self.keras_name = keras_name

    def keras_weights(self) -> list[np.ndarray]:
        return [self.weight.detach().permute(2, 3, 0, 1).cpu().numpy()]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        _copy(self.weight, torch.from_numpy(np.asarray(arrays[0])).permute(2, 3, 0, 1), self.keras_name)


class SplitSeparableConv2d(nn.Module):
    """Edge form of a large-kernel SeparableConv2D: depthwise kernel groups of at most 25 taps
    (:func:`~edge.model.lowering.tap_groups`), each on the input through its own zero pad (and crop where a
    group starts beyond the padding), summed, then the pointwise conv (see edge.model.lowering)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, hw: tuple[int, int], *, keras_name: str):
        super().__init__()
        self.groups = tap_groups(kernel, stride)
        self.windows = []  # per group: (row slice, col slice, F.pad tuple), None if it reads only padding
        for window in group_windows(hw, kernel, stride):
            if window is None:
                self.windows.append(None)
                continue
            (rc0, rc1, pt, pb), (cc0, cc1, pl, pr) = window
            self.windows.append(((rc0, hw[0] - rc1), (cc0, hw[1] - cc1), (pl, pr, pt, pb)))
        self.depthwise = nn.ModuleList(KerasDepthwiseConv2d(cin, (r1 - r0, c1 - c0), stride,
                                                            keras_name=f"{keras_name}_dw{g}")
                                       for g, (r0, r1, c0, c1) in enumerate(self.groups))
        self.pointwise = KerasConv2d(cin, cout, 1, keras_name=f"{keras_name}_pw")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        h, w = x.shape[2], x.shape[3]
        for conv, window in zip(self.depthwise, self.windows):
            if window is None:
                continue
            (a, b), (c, d), pad = window
            xi = x if (a, b, c, d) == (0, h, 0, w) else x[:, :, a:b, c:d]
            part = conv(F.pad(xi, pad) if any(pad) else xi)
            y = part if y is None else y + part
        return self.pointwise(y)


class KerasBatchNorm2d(nn.BatchNorm2d):
    """BatchNormalization with Keras' momentum and epsilon; weights gamma, beta, mean, variance."""

    def __init__(self, channels: int, *, keras_name: str):
        super().__init__(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM_TORCH)
        self.keras_name = keras_name

    def keras_weights(self) -> list[np.ndarray]:
        return [t.detach().cpu().numpy() for t in (self.weight, self.bias, self.running_mean, self.running_var)]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        for t, a, n in zip((self.weight, self.bias, self.running_mean, self.running_var), arrays,
                           ("gamma", "beta", "moving_mean", "moving_variance")):
            _copy(t, torch.from_numpy(np.asarray(a)), f"{self.keras_name}/{n}")


class KerasDense(nn.Linear):
    """Dense: Keras kernel (in, out) <-> PyTorch weight (out, in)."""

    def __init__(self, cin: int, cout: int, *, keras_name: str):
        super().__init__(cin, cout)
        self.keras_name = keras_name

    def keras_weights(self) -> list[np.ndarray]:
        return [self.weight.detach().t().cpu().numpy(), self.bias.detach().cpu().numpy()]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        _copy(self.weight, torch.from_numpy(np.asarray(arrays[0])).t(), self.keras_name + "/kernel")
        _copy(self.bias, torch.from_numpy(np.asarray(arrays[1])), self.keras_name + "/bias")


def _copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise WeightsError(f"weight {what}: file has shape {tuple(src.shape)}, model expects {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src.to(dst.dtype))


KERAS_LAYER_TYPES = (KerasConv2d, KerasSeparableConv2d, KerasBatchNorm2d, KerasDense, KerasDepthwiseConv2d)


# ----------------------------------------------------------------------------- cell operations
def _pad4(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: int = 1):
    """(left, right, top, bottom) TF-'SAME' padding, the order ``F.pad`` wants."""
    top, bottom = same_pad(hw[0], kernel[0], stride[0], dilation)
    left, right = same_pad(hw[1], kernel[1], stride[1], dilation)
    return left, right, top, bottom


class SeparableBlock(nn.Module):
    """ReLU -> SepConv(k, stride) -> BN -> ReLU -> SepConv(k) -> BN (NASNet's 'separable_kxk_2')."""

    def __init__(self, cin: int, filters: int, kernel: int, stride: int, hw: tuple[int, int], name: str,
                 lowering: Lowering | None = None):
        super().__init__()
        pad = _pad4(hw, (kernel, kernel), (stride, stride))
        if lowering is not None and lowering.split_large_dwconv and needs_split(kernel):
            out_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
            self.pad = nn.Identity()
            self.sep1 = SplitSeparableConv2d(cin, filters, kernel, stride, hw, keras_name=f"separable_conv_1_{name}")
            self.sep2 = SplitSeparableConv2d(filters, filters, kernel, 1, out_hw,
                                             keras_name=f"separable_conv_2_{name}")
        else:
            self.pad = nn.ZeroPad2d(pad) if stride > 1 else nn.Identity()
            self.sep1 = KerasSeparableConv2d(cin, filters, kernel, stride, 0 if stride > 1 else kernel // 2,
                                             keras_name=f"separable_conv_1_{name}")
            self.sep2 = KerasSeparableConv2d(filters, filters, kernel, 1, kernel // 2,
                                             keras_name=f"separable_conv_2_{name}")
        self.bn1 = KerasBatchNorm2d(filters, keras_name=f"separable_conv_1_bn_{name}")
        self.bn2 = KerasBatchNorm2d(filters, keras_name=f"separable_conv_2_bn_{name}")

    pre_relu = True  # False: the cell passes the ReLU of the state, shared (edge.model.lowering share_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.sep1(self.pad(F.relu(x) if self.pre_relu else x)))
        return self.bn2(self.sep2(F.relu(x)))


class ConvBlock(nn.Module):
    """ReLU -> conv(s) -> BN, for the plain convolutions of the search space."""

    def __init__(self, op: Op, cin: int, filters: int, stride: int, hw: tuple[int, int], name: str):
        super().__init__()
        shapes = {Op.CONV_1X1: [((1, 1), 1)], Op.CONV_3X3: [((3, 3), 1)], Op.DIL_CONV_3X3: [((3, 3), 2)],
                  Op.CONV_1X3_3X1: [((1, 3), 1), ((3, 1), 1)], Op.CONV_1X7_7X1: [((1, 7), 1), ((7, 1), 1)]}[op]
        layers: list[nn.Module] = []
        c = cin
        for i, (kernel, dil) in enumerate(shapes):
            # a factorized pair strides once per axis: the 1xk conv along W, the kx1 along H
            s = (stride, stride) if len(shapes) == 1 else ((1, stride) if i == 0 else (stride, 1))
            if dil > 1:
                s = (1, 1)  # Keras cannot stride a dilated conv: 'same' conv, then subsample (below)
            layers.append(nn.ZeroPad2d(_pad4(hw, kernel, s, dil)))
            layers.append(KerasConv2d(c, filters, kernel, s, 0, dil, keras_name=f"{name}_conv_{i + 1}"))
            hw = (-(-hw[0] // s[0]), -(-hw[1] // s[1]))
            c = filters
        self.convs = nn.Sequential(*layers)
        self.subsample = op is Op.DIL_CONV_3X3 and stride > 1
        self.bn = KerasBatchNorm2d(filters, keras_name=f"{name}_bn")

    pre_relu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(F.relu(x) if self.pre_relu else x)
        return self.bn(x[:, :, ::2, ::2] if self.subsample else x)


class Pool(nn.Module):
    """k x k max or average pool with NASNet's border semantics (see :class:`~edge.model.config.Pooling`)."""

    def __init__(self, op: Op, stride: int, hw: tuple[int, int], pooling: Pooling, channels: int = 0,
                 lowering: Lowering | None = None, scale: float = 1.0):
        super().__init__()
        k = op.kernel_size
        self.is_max = op is not Op.AVG_POOL_3X3
        self.kernel, self.stride = k, stride
        self.pad = _pad4(hw, (k, k), (stride, stride))
        # Zero padding + 'valid' pooling is Keras' stride-2 behaviour. Everything else ('same' at
        # stride 1 in both modes, TF-slim's stride 2) ignores the padding: -inf for max, and for
        # the average a constant per-position correction k*k / (number of real pixels in the window).
        self.zero_pad = stride > 1 and pooling is Pooling.KERAS
        # GPU target: -inf padding, then the zeros back on the border windows (edge.model.lowering.max_pool_border_map)
        if self.is_max and self.zero_pad and lowering is not None and lowering.max_pool_border_map:
            from edge.model.lowering import max_pool_border_map

            self.register_buffer("border", torch.from_numpy(max_pool_border_map(hw[0], hw[1], k, stride))[None, None],
                                 persistent=False)
        else:
            self.border = None
        if not self.is_max and not self.zero_pad:
            corr = torch.from_numpy(avg_correction(hw[0], hw[1], k, stride, self.pad))[None, None]
            self.register_buffer("correction", corr, persistent=False)
        else:
            self.correction = None
        # edge form: the average as a depthwise conv with constant 1/k^2 weights (XNNPACK has no int8
        # average pooling; ExecuTorch's partitioner takes avg_pool2d in fp32 only)
        self.as_dwconv = not self.is_max and lowering is not None and lowering.avgpool_as_dwconv
        if self.as_dwconv:
            self.register_buffer("dw_weight", torch.full((channels, 1, k, k), scale / (k * k)), persistent=False)
            self.symmetric = stride == 1 and self.pad == (k // 2,) * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_max:
            if self.border is not None:
                return torch.maximum(F.max_pool2d(F.pad(x, self.pad, value=float("-inf")), self.kernel, self.stride),
                                     self.border)
            x = F.pad(x, self.pad, value=0.0 if self.zero_pad else float("-inf"))
            return F.max_pool2d(x, self.kernel, self.stride)
        if self.as_dwconv:
            if self.symmetric:
                x = F.conv2d(x, self.dw_weight, None, 1, self.kernel // 2, 1, x.shape[1])
            else:
                x = F.conv2d(F.pad(x, self.pad), self.dw_weight, None, self.stride, 0, 1, x.shape[1])
        else:
            x = F.avg_pool2d(F.pad(x, self.pad), self.kernel, self.stride)
        return x if self.correction is None else x * self.correction


class FactorizedReduce(nn.Module):
    """Keras ``_adjust_block`` factorized reduction: two half-width 1x1 convs on offset 2x subsamples.

    Path 2 is p shifted one pixel down-right (Keras: pad bottom/right by 1, crop top/left by 1), then
    subsampled; that equals ``p[1::2, 1::2]`` zero-padded at the bottom/right to ceil(n / 2).
    """

    def __init__(self, cin: int, filters: int, hw: tuple[int, int], conv_names: tuple[str, str], bn_name: str,
                 lowering: Lowering | None = None):
        super().__init__()
        self.fused = lowering is not None and lowering.fuse_factorized
        if self.fused:
            # edge form: one 2x2 stride-2 conv, path 1 at tap (0,0), path 2 at tap (1,1); 'same' padding
            # adds a zero row/column at the bottom/right of odd inputs
            name = conv_names[0].replace("_conv_1", "_conv", 1) + FUSED_SUFFIX
            self.conv = KerasConv2d(cin, filters, 2, 2, keras_name=name)
            self.pad = _pad4(hw, (2, 2), (2, 2))
        else:
            self.conv_1 = KerasConv2d(cin, filters // 2, 1, keras_name=conv_names[0])
            self.conv_2 = KerasConv2d(cin, filters - filters // 2, 1, keras_name=conv_names[1])
        self.bn = KerasBatchNorm2d(filters, keras_name=bn_name)
        out = (-(-hw[0] // 2), -(-hw[1] // 2))
        self.shift_pad = (0, out[1] - hw[1] // 2, 0, out[0] - hw[0] // 2)

    pre_relu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_relu:
            x = F.relu(x)
        if self.fused:
            if any(self.pad):
                x = F.pad(x, self.pad)
            return self.bn(self.conv(x))
        p1 = self.conv_1(x[:, :, ::2, ::2])
        p2 = self.conv_2(F.pad(x[:, :, 1::2, 1::2], self.shift_pad))
        return self.bn(torch.cat([p1, p2], dim=1))


class Projection(nn.Module):
    """ReLU -> 1x1 conv -> BN: Keras' channel-only adjust and every cell's base."""

    def __init__(self, cin: int, filters: int, conv_name: str, bn_name: str):
        super().__init__()
        self.conv = KerasConv2d(cin, filters, 1, keras_name=conv_name)
        self.bn = KerasBatchNorm2d(filters, keras_name=bn_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


def make_op(op: Op, cin: int, filters: int, stride: int, hw: tuple[int, int], name: str,
            pooling: Pooling, lowering: Lowering | None = None) -> tuple[nn.Module, int]:
    """The module for one genotype operation and its output channel count."""
    if op.is_separable:
        return SeparableBlock(cin, filters, op.kernel_size, stride, hw, name, lowering), filters
    if op.is_pool:
        return Pool(op, stride, hw, pooling, cin, lowering), cin
    if op is Op.IDENTITY:
        if stride == 1:
            return nn.Identity(), cin
        return FactorizedReduce(cin, filters, hw, (f"{name}_conv_1", f"{name}_conv_2"), f"{name}_bn",
                                lowering), filters
    return ConvBlock(op, cin, filters, stride, hw, name), filters


# ----------------------------------------------------------------------------- cell and network
class Cell(nn.Module):
    """One NASNet cell driven by its genotype (TF-slim ``NasNetABaseCell`` / Keras ``_*_a_cell``)."""

    def __init__(self, spec: CellSpec, pooling: Pooling, lowering: Lowering | None = None):
        super().__init__()
        self.split_concat = lowering is not None and lowering.split_concat
        g, f, bid, kind = spec.genotype, spec.filters, spec.block_id, spec.kind.value
        self.spec = spec
        self.genotype = g
        x_hw, x_c = spec.x_shape[:2], spec.x_shape[2]
        p_shape = spec.p_shape or spec.x_shape
        adjust = spec.adjust
        if adjust == "factorized":
            self.adjust = FactorizedReduce(p_shape[2], f, p_shape[:2], (f"adjust_conv_1_{bid}", f"adjust_conv_2_{bid}"),
                                           f"adjust_bn_{bid}", lowering)
        elif adjust == "projection":
            self.adjust = Projection(p_shape[2], f, f"adjust_conv_projection_{bid}", f"adjust_bn_{bid}")
        else:
            self.adjust = nn.Identity()
        p_c = f if adjust != "none" else p_shape[2]
        self.base = Projection(x_c, f, f"{kind}_conv_1_{bid}", f"{kind}_bn_1_{bid}")

        out_hw = spec.out_shape[:2]
        channels = [f, p_c]
        hws = [x_hw, x_hw]
        ops = []
        self.twins = [is_twin_pool_block(g, b, lowering) for b in range(g.num_blocks)]
        for b in range(g.num_blocks):
            outs = []
            for i in (2 * b, 2 * b + 1):
                src = g.inputs[i]
                stride = g.stride(i)
                if self.twins[b]:  # edge form: avg(s) + avg(s) as one pool with doubled weights
                    ops.append(Pool(g.ops[i], stride, hws[src], pooling, channels[src], lowering, scale=2.0))
                    outs.append(channels[src])
                    continue
                module, c = make_op(g.ops[i], channels[src], f, stride, hws[src], f"{g.keras_names[i]}_{bid}", pooling,
                                    lowering)
                ops.append(module)
                outs.append(c)
            if g.combine is Combine.ADD and outs[0] != outs[1]:
                raise ValueError(f"cell {bid} block {b + 1}: cannot add {outs[0]} and {outs[1]} channels "
                                 f"({g.ops[2 * b].value} + {g.ops[2 * b + 1].value})")
            channels.append(outs[0] if g.combine is Combine.ADD else sum(outs))
            hws.append(out_hw if g.reduces and any(g.inputs[i] < 2 for i in (2 * b, 2 * b + 1)) else
                       hws[g.inputs[2 * b]])
        self.ops = nn.ModuleList(ops)
        self.share_relu = lowering is not None and lowering.share_relu
        if self.share_relu:  # edge form: the cell computes each state's ReLU once (see forward)
            for op in ops:
                if hasattr(op, "pre_relu"):
                    op.pre_relu = False
        self.out_channels = sum(channels[i] for i in g.concat)

    def forward(self, x: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        p = self.adjust(x if p is None else p)
        states = [self.base(x), p]
        g = self.genotype
        relus: dict[int, torch.Tensor] = {}

        def apply(i: int) -> torch.Tensor:
            op, s = self.ops[i], g.inputs[i]
            if getattr(op, "pre_relu", True):
                return op(states[s])
            if s not in relus:
                relus[s] = F.relu(states[s])
            return op(relus[s])

        for b in range(g.num_blocks):
            if self.twins[b]:
                states.append(apply(2 * b))
                continue
            left, right = apply(2 * b), apply(2 * b + 1)
            states.append(left + right if g.combine is Combine.ADD else torch.cat([left, right], dim=1))
        outs = [states[i] for i in g.concat]
        groups = split_for_concat(outs) if self.split_concat else [outs]
        if len(groups) > 1:  # edge form: XNNPACK concatenates at most 5 inputs per node
            outs = [grp[0] if len(grp) == 1 else torch.cat(grp, dim=1) for grp in groups]
        return torch.cat(outs, dim=1)


class Stem(nn.Module):
    def __init__(self, config: NASNetConfig):
        super().__init__()
        self.conv = KerasConv2d(3, config.stem_filters, 3, 2, keras_name="stem_conv1")
        self.bn = KerasBatchNorm2d(config.stem_filters, keras_name="stem_bn1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Head(nn.Module):
    """ReLU -> global average pool -> Dense (logits; softmax is the caller's)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = KerasDense(channels, num_classes, keras_name="predictions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # keepdim=True: ExecuTorch's XNNPACK partitioner lowers mean.dim only as a 4-D global average pool
        return self.fc(F.relu(x).mean(dim=(2, 3), keepdim=True).flatten(1))


class NASNet(nn.Module):
    """NASNet from a configuration. Input NCHW float in [-1, 1]; output logits (or features when headless)."""

    def __init__(self, config: NASNetConfig, include_top: bool = True, input_size: int | None = None,
                 lowered: Lowering | bool | None = None):
        super().__init__()
        from edge.model.lowering import EDGE

        self.lowering = EDGE if lowered is True else (lowered or None)
        self.config = config
        self.input_size = input_size or config.input_size
        self.specs = config.cells(self.input_size)
        self.stem = Stem(config)
        self.cells = nn.ModuleList(Cell(s, config.pooling, self.lowering) for s in self.specs)
        for cell, spec in zip(self.cells, self.specs):
            assert cell.out_channels == spec.out_shape[2], (cell.out_channels, spec)
        self.include_top = include_top
        self.head = Head(self.specs[-1].out_shape[2], config.num_classes) if include_top else None
        # the p each cell reads: index into [stem, cell0, cell1, ...] outputs, None = raw x
        self._p_source = _p_sources(config, len(self.specs))

    def forward_features(self, x: torch.Tensor, return_cells: bool = False):
        outs = [self.stem(x)]
        for i, cell in enumerate(self.cells):
            src = self._p_source[i]
            outs.append(cell(outs[-1], None if src is None else outs[src]))
        return outs if return_cells else outs[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        # headless like Keras include_top=False: the final ReLU is part of the features
        return self.head(x) if self.head is not None else F.relu(x)

    # Keras-layout weights ----------------------------------------------------------------------
    def keras_layers(self) -> dict[str, nn.Module]:
        return {m.keras_name: m for m in self.modules() if isinstance(m, KERAS_LAYER_TYPES)}

    def keras_weights(self) -> dict[str, list[np.ndarray]]:
        return {name: m.keras_weights() for name, m in self.keras_layers().items()}

    def load_keras_weights(self, weights: dict[str, list[np.ndarray]], strict: bool = True) -> list[str]:
        """Load ``{keras layer name: [arrays in Keras order]}``; returns the names not found in it."""
        missing = []
        for name, module in self.keras_layers().items():
            if name in weights:
                module.load_keras_weights(weights[name])
            else:
                missing.append(name)
        if strict and missing:
            raise WeightsError(f"{len(missing)} layers missing from the weights, e.g. {missing[:3]}")
        return missing


def torch_parts(model: NASNet) -> list[tuple[str, nn.Module]]:
    """The network cut at cell boundaries: [(name, module)] for stem, every cell, head (names as Keras')."""
    return ([("stem", model.stem)] + [(spec.name, cell) for spec, cell in zip(model.specs, model.cells)]
            + [("head", model.head)])


def part_feeds(model: NASNet, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The inputs each part of :func:`torch_parts` receives inside the whole network, for input ``x``."""
    outs = model.forward_features(x, return_cells=True)
    feeds = [(x,)]
    for i, src in enumerate(model._p_source):
        feeds.append((outs[i],) if src is None else (outs[i], outs[src]))
    feeds.append((outs[-1],))
    return feeds


def _p_sources(config: NASNetConfig, n_cells: int) -> list[int | None]:
    """Index (0 = stem output, i+1 = cell i output) of the p each cell reads, as Keras wires it."""
    sources: list[int | None] = []
    p: int | None = None
    specs = config.cells()
    for i in range(n_cells):
        sources.append(p)
        if not (config.skip_reduction and specs[i].block_id.startswith("reduce_")):
            p = i  # the cell's own input: stem output for cell 0, cell i-1 output otherwise
    return sources


def build_torch_model(config: NASNetConfig, include_top: bool = True, input_size: int | None = None,
                      lowered: Lowering | bool | None = None) -> NASNet:
    """The PyTorch NASNet for ``config`` (random weights; see :mod:`edge.model.weights` to load some).

    ``lowered``: the edge form of :mod:`edge.model.lowering`; load it with ``lowered_keras_weights``.
    """
    model = NASNet(config, include_top=include_top, input_size=input_size, lowered=lowered)
    model.eval()
    return model


def count_parameters(model: nn.Module, include_bn_stats: bool = True) -> int:
    n = sum(p.numel() for p in model.parameters())
    if include_bn_stats:
        n += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return n


__all__ = ["NASNet", "build_torch_model", "count_parameters", "Cell", "stem_output_size"]
