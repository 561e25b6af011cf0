"""PyTorch emitter: any plan (:mod:`edge.model.plan`) as an ``nn.Module``, one node kind at a time.

Every module that holds weights carries ``keras_name``, the Keras layer its node names, and converts its
tensors to and from Keras layout (``keras_weights`` / ``load_keras_weights``), so official weights load
by name and weights move between the two emitters through the Keras-layout dict of
:mod:`edge.model.weights`. The network is built for one input size: all padding is static and explicit,
which keeps ``torch.export`` graphs free of dynamic 'SAME' logic. There is no lowering here: the plan says
what to compute; this module only says how PyTorch computes each kind.

The module tree follows the plan's parts: ``stem``, ``cells[i]``, ``head``, each a :class:`PartModule` whose
``layers`` are the weighted nodes by Keras name (state-dict keys such as ``cells.3.layers.adjust_bn_1.weight``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.model.config import BN_EPSILON, BN_MOMENTUM_TORCH, NASNetConfig
from edge.model.plan import NO_PAD, Kind, Node, PadMode, Part, Plan, avg_count_map, constant
from edge.model.weights import WeightsError


# -------------------------------------------------------------------------------------------------- weighted layers
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

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, *, keras_name: str):
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

    def __init__(self, channels: int, kernel, stride=1, padding=0, *, keras_name: str):
        super().__init__(channels, channels, kernel, stride=stride, padding=padding, groups=channels, bias=False)
        self.keras_name = keras_name

    def keras_weights(self) -> list[np.ndarray]:
        return [self.weight.detach().permute(2, 3, 0, 1).cpu().numpy()]

    def load_keras_weights(self, arrays: list[np.ndarray]) -> None:
        _copy(self.weight, torch.from_numpy(np.asarray(arrays[0])).permute(2, 3, 0, 1), self.keras_name)


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


# -------------------------------------------------------------------------------------------------- one part
def _torch_pad(pad) -> tuple[int, int, int, int]:
    """Plan padding (top, bottom, left, right) -> ``F.pad``'s (left, right, top, bottom)."""
    return pad[2], pad[3], pad[0], pad[1]


def _symmetric(pad) -> bool:
    return pad[0] == pad[1] == pad[2] == pad[3]


def _pool_padding(pad, size: tuple[int, int], kernel: tuple[int, int],
                  stride: tuple[int, int]) -> tuple[tuple[int, int], bool] | None:
    """A max pool's excluded padding (top, bottom, left, right) on an input of ``size`` as ``F.max_pool2d``'s own
    ``(padding, ceil_mode)``, or None where no such pair gives the same windows. TF 'same' pads one more at the
    bottom/right than at the top/left when the total is odd; ``ceil_mode`` adds that last window. Why: ExecuTorch's
    XNNPACK lowering turns the pool's padding into XNNPACK's (padding is never read, as -inf would be), where an
    ``F.pad`` before the pool would run as a separate pad copy of the whole input (docs/lowering.md)."""
    axes = ((pad[0], pad[1]), (pad[2], pad[3]))
    for ceil in (False, True):
        ok = True
        for (lo, hi), n, k, s in zip(axes, size, kernel, stride):
            if not (hi - lo in (0, 1) and 2 * lo <= k):
                return None
            want = (n + lo + hi - k) // s + 1
            got = -(-(n + 2 * lo - k) // s) + 1 if ceil else (n + 2 * lo - k) // s + 1
            if ceil and (got - 1) * s >= n + lo:  # PyTorch: the last window must start inside input or left pad
                got -= 1
            ok &= got == want
        if ok:
            return (pad[0], pad[2]), ceil
    return None


class PartModule(nn.Module):
    """The nodes of one part of a plan, run in order. ``forward`` takes the part's inputs (a cell: ``x``, then
    ``p`` when it reads one) in NCHW and returns its output.

    ``taps``: ``{node name: fn(tensor) -> tensor}`` applied to a node's output when set (quantization-aware
    training and per-tensor analyses hook into the plan's nodes this way); empty for export."""

    def __init__(self, plan: Plan, part: Part):
        super().__init__()
        self.part_name = part.name
        self.inputs = part.inputs
        self.output = part.output
        self.nodes = tuple(n for n in part.nodes if n.kind is not Kind.INPUT)
        self.input_nodes = tuple(n.name for n in part.nodes if n.kind is Kind.INPUT)
        self.layers = nn.ModuleDict()
        self._const: dict[str, str] = {}
        self._pool_padding: dict[str, tuple[tuple[int, int], bool]] = {}  # node -> F.max_pool2d (padding, ceil_mode)
        self.taps: dict = {}
        for n in self.nodes:
            module = _weighted_module(plan, n)
            if module is not None:
                self.layers[n.weights] = module
            if n.kind is Kind.AVG_POOL and n.pad_mode is PadMode.EXCLUDED and n.pad != NO_PAD:
                # a zero-padded average counts the zeros: times k*k / (real pixels under the window)
                h, w, _ = plan.node(n.inputs[0]).shape
                self._register_const(n.name, torch.from_numpy(avg_count_map(h, w, n.kernel[0], n.stride[0],
                                                                            n.pad))[None, None])
            if n.kind is Kind.MAX_POOL and n.pad_mode is PadMode.EXCLUDED and n.pad != NO_PAD:
                own = _pool_padding(n.pad, plan.node(n.inputs[0]).shape[:2], n.kernel, n.stride)
                if own is not None:
                    self._pool_padding[n.name] = own
            if n.const:
                value = torch.from_numpy(constant(n))
                if n.kind is Kind.DEPTHWISE:  # (kh, kw, C) -> (C, 1, kh, kw)
                    value = value.permute(2, 0, 1).unsqueeze(1).contiguous()
                else:  # a per-position map, broadcast over batch and channels
                    value = value[None, None]
                    if n.kind in (Kind.SCALE, Kind.MAXIMUM) and n.shape[2] > 1:
                        # At full width and channels-last, so that ExecuTorch's XNNPACK lowering takes it as NHWC.
                        # A (1, 1, H, W) map is contiguous both ways, which executorch 1.5.1's channels-last
                        # pass reads as NCHW; and the partitioner leaves a MUL's constant operand outside the
                        # delegate (GenericNodePartitionerConfig.get_node_and_deps), so it was handed in at each
                        # call and transposed to NHWC by a StaticTranspose: 28 per inference in NASNet-Mobile (and 4
                        # for the max pools' border maps, tests/test_executorch.py).
                        value = value.expand(1, n.shape[2], *value.shape[2:]).contiguous(
                            memory_format=torch.channels_last)
                self._register_const(n.name, value)

    def _register_const(self, node: str, value: torch.Tensor) -> None:
        attr = f"const_{len(self._const)}"
        self.register_buffer(attr, value, persistent=False)
        self._const[node] = attr

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        env = dict(zip(self.inputs or self.input_nodes, xs))
        for n in self.nodes:
            y = self._run(n, [env[i] for i in n.inputs])
            if n.activation == "relu":  # a node's fused activation, whatever its kind
                y = F.relu(y)
            if self.taps and n.name in self.taps:
                y = self.taps[n.name](y)
            env[n.name] = y
        return env[self.output]

    def _run(self, n: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x = args[0] if args else None
        kind = n.kind
        if kind in (Kind.CONV, Kind.SEPARABLE, Kind.DEPTHWISE):
            if not _symmetric(n.pad):  # the layer pads symmetric amounts itself
                x = F.pad(x, _torch_pad(n.pad))
            if n.const:
                return F.conv2d(x, getattr(self, self._const[n.name]), None, n.stride,
                                n.pad[0] if _symmetric(n.pad) else 0, n.dilation, x.shape[1])
            return self.layers[n.weights](x)
        if kind is Kind.BATCH_NORM or kind is Kind.DENSE:
            return self.layers[n.weights](x)
        if kind is Kind.RELU:
            return F.relu(x)
        if kind is Kind.PAD:
            return F.pad(x, _torch_pad(n.pad))
        if kind is Kind.CROP:
            t, b, l, r = n.pad
            return x[:, :, t:x.shape[2] - b, l:x.shape[3] - r]
        if kind is Kind.SUBSAMPLE:
            return x[:, :, ::n.stride[0], ::n.stride[1]]
        if kind is Kind.MAX_POOL:
            if n.name in self._pool_padding:  # 'same' padding as the pool's own (decided once, in __init__)
                padding, ceil = self._pool_padding[n.name]
                return F.max_pool2d(x, n.kernel, n.stride, padding=padding, ceil_mode=ceil)
            if n.pad != NO_PAD:
                value = float("-inf") if n.pad_mode is PadMode.EXCLUDED else 0.0
                x = F.pad(x, _torch_pad(n.pad), value=value)
            return F.max_pool2d(x, n.kernel, n.stride)
        if kind is Kind.AVG_POOL:
            y = F.avg_pool2d(F.pad(x, _torch_pad(n.pad)) if n.pad != NO_PAD else x, n.kernel, n.stride)
            return y * getattr(self, self._const[n.name]) if n.name in self._const else y
        if kind is Kind.SCALE:
            return x * getattr(self, self._const[n.name])
        if kind is Kind.MAXIMUM:
            return torch.maximum(x, getattr(self, self._const[n.name]))
        if kind is Kind.ADD:
            y = args[0]
            for a in args[1:]:
                y = y + a
            return y
        if kind is Kind.CONCAT:
            return torch.cat(args, dim=1)
        if kind is Kind.GLOBAL_POOL:
            # keepdim=True: ExecuTorch's XNNPACK partitioner lowers mean.dim only as a 4-D global average pool
            return x.mean(dim=(2, 3), keepdim=True).flatten(1)
        raise NotImplementedError(f"the PyTorch emitter has no rule for {kind.value} ({n.name})")


def _weighted_module(plan: Plan, n: Node) -> nn.Module | None:
    if n.weights is None:
        return None
    cin = plan.node(n.inputs[0]).shape[2]
    pad = n.pad[0] if _symmetric(n.pad) else 0
    if n.kind is Kind.CONV:
        return KerasConv2d(cin, n.shape[2], n.kernel, n.stride, pad, n.dilation, keras_name=n.weights)
    if n.kind is Kind.SEPARABLE:
        return KerasSeparableConv2d(cin, n.shape[2], n.kernel, n.stride, pad, keras_name=n.weights)
    if n.kind is Kind.DEPTHWISE:
        return KerasDepthwiseConv2d(cin, n.kernel, n.stride, pad, keras_name=n.weights)
    if n.kind is Kind.BATCH_NORM:
        return KerasBatchNorm2d(n.shape[2], keras_name=n.weights)
    if n.kind is Kind.DENSE:
        return KerasDense(cin, n.shape[2], keras_name=n.weights)
    raise NotImplementedError(f"the PyTorch emitter has no weighted layer for {n.kind.value} ({n.name})")


# -------------------------------------------------------------------------------------------------- the network
class NASNet(nn.Module):
    """A plan as a PyTorch network. Input NCHW float in [-1, 1]; output logits (or features when headless)."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        self.config: NASNetConfig = plan.config
        self.input_size = plan.config.input_size
        self.specs = plan.config.cells()
        parts = plan.parts()
        self.stem = PartModule(plan, parts[0])
        self.cells = nn.ModuleList(PartModule(plan, p) for p in parts[1:-1])
        self.head = PartModule(plan, parts[-1])
        self.include_top = plan.include_top
        if len(self.cells) != len(self.specs):
            raise AssertionError(f"plan has {len(self.cells)} cell parts, the configuration {len(self.specs)}")

    @property
    def target(self) -> str:
        return self.plan.target

    @property
    def lowering(self) -> str | None:
        """The plan's target, or None for the reference network (the stock graph)."""
        return None if self.plan.target == "reference" else self.plan.target

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward_features(self, x: torch.Tensor, return_cells: bool = False):
        """The last cell's output, or [stem output, cell 0 output, ...] with ``return_cells``."""
        env = {self.stem.output: self.stem(x)}
        outs = [env[self.stem.output]]
        for cell in self.cells:
            env[cell.output] = cell(*(env[i] for i in cell.inputs))
            outs.append(env[cell.output])
        return outs if return_cells else outs[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

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
    """The network cut at cell boundaries: [(name, module)] for stem, every cell, head."""
    return ([("stem", model.stem)] + [(spec.name, cell) for spec, cell in zip(model.specs, model.cells)]
            + [("head", model.head)])


def part_feeds(model: NASNet, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The inputs each part of :func:`torch_parts` receives inside the whole network, for input ``x``."""
    env = {model.stem.output: model.stem(x)}
    feeds = [(x,)]
    for cell in model.cells:
        feeds.append(tuple(env[i] for i in cell.inputs))
        env[cell.output] = cell(*feeds[-1])
    feeds.append((env[model.cells[-1].output],))
    return feeds


def emit_torch(plan: Plan) -> NASNet:
    """The PyTorch network of ``plan`` in eval mode (random weights; load some with ``load_keras_weights``)."""
    return NASNet(plan).eval()


def count_parameters(model: nn.Module, include_bn_stats: bool = True) -> int:
    n = sum(p.numel() for p in model.parameters())
    if include_bn_stats:
        n += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return n


def build_torch_model(config: NASNetConfig, target="reference", include_top: bool = True,
                      input_size: int | None = None) -> NASNet:
    """The PyTorch NASNet of ``config`` lowered for ``target`` (a :class:`~edge.model.passes.Target` or its name:
    ``reference``, ``xnnpack_fp32``, ``xnnpack_int8``, ``gpu``), in eval mode with random weights. Load the
    reference network's weights with ``model.load_keras_weights(model.plan.lower_weights(weights))``."""
    from edge.model.passes import build_plan

    if input_size:
        config = config.with_(input_size=input_size)
    return emit_torch(build_plan(config, target, include_top=include_top))
