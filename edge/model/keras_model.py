"""Keras NASNet, built from the same genotype and configuration as :mod:`edge.model.torch_model`.

Layer names follow ``keras.applications.nasnet`` exactly (the 389 weighted layers of NASNet-Mobile
match by name and shape), so official files load by name, and weights move between the two builders
through the Keras-layout dict of :mod:`edge.model.weights`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from edge.model.config import BN_EPSILON, BN_MOMENTUM_KERAS, CellSpec, NASNetConfig, Pooling, same_pad
from edge.model.genotypes import Combine, Op
from edge.model.lowering import (Lowering, avg_correction, group_windows, is_twin_pool_block, needs_split,
                           split_for_concat, tap_groups)
from edge.model.weights import KerasWeights, WeightsError

# Lowering in force while a model is being built (None: the reference network). Module state keeps the
# many small builder functions' signatures equal to Keras' own; build_keras_model sets and resets it.
_LOWERING: Lowering | None = None


def _constant(layer):
    """Mark a layer whose weights are constants of the edge form (not loaded from weight files)."""
    layer._edge_constant = True
    return layer


def _const_layers():
    import keras

    @keras.saving.register_keras_serializable(package="nasnet_edge")
    class ConstantScale(keras.layers.Layer):
        """x * map[None, :, :, None]: the per-position correction of count-excluding average pools."""

        def __init__(self, scale=None, **kw):
            super().__init__(**kw)
            self.scale = np.asarray(scale, np.float32)

        def call(self, x):
            return x * keras.ops.convert_to_tensor(self.scale[None, :, :, None])

        def get_config(self):
            return {**super().get_config(), "scale": self.scale.tolist()}

    return ConstantScale


def _const_maximum_layer():
    import keras

    @keras.saving.register_keras_serializable(package="nasnet_edge")
    class ConstantMaximum(keras.layers.Layer):
        """maximum(x, map[None, :, :, None]): the border zeros of a zero-padded max pool (GPU target)."""

        def __init__(self, value=None, **kw):
            super().__init__(**kw)
            self.value = np.asarray(value, np.float32)

        def call(self, x):
            return keras.ops.maximum(x, keras.ops.convert_to_tensor(self.value[None, :, :, None]))

        def get_config(self):
            return {**super().get_config(), "value": self.value.tolist()}

    return ConstantMaximum


def _layers():
    from edge.quiet import import_tensorflow

    return import_tensorflow().layers


def _bn(x, name):
    return _layers().BatchNormalization(axis=-1, momentum=BN_MOMENTUM_KERAS, epsilon=BN_EPSILON, name=name)(x)


_RELU_CACHE: dict = {}


def _relu(x, name=None):
    """ReLU of a tensor that other ops also read raw (a cell state): the converter cannot fuse it."""
    as_dwconv = _LOWERING is not None and _LOWERING.relu_as_dwconv
    share = _LOWERING is not None and (as_dwconv or _LOWERING.share_relu)  # edge form: one per tensor
    key = id(x)
    if share and key in _RELU_CACHE:
        return _RELU_CACHE[key][1]
    if as_dwconv:
        # int8 RELU stays on LiteRT's reference kernels (see edge.model.lowering); a 1x1 depthwise conv with unit
        # weights and a fused ReLU is the same function and runs in XNNPACK.
        import keras

        layer = keras.layers.DepthwiseConv2D(1, use_bias=False, activation="relu", name=name and name + "_dw",
                                             depthwise_initializer="ones")
        y = _constant(layer)(x)
    else:
        y = _layers().Activation("relu", name=name)(x)
    if share:
        _RELU_CACHE[key] = (x, y)  # keep x alive so its id is not reused
    return y


def _concat(tensors, name=None):
    layers = _layers()
    if _LOWERING is not None and _LOWERING.split_concat:
        groups = split_for_concat(list(tensors))
        if len(groups) > 1:
            tensors = [g[0] if len(g) == 1 else layers.concatenate(g, axis=-1) for g in groups]
    return layers.concatenate(list(tensors), axis=-1, name=name)


def _avg_pool_dw(x, k: int, stride: int, padding: str, exclude_pad: bool, name: str, scale: float = 1.0):
    """Average pool as a depthwise conv with weights scale/k^2 (+ a constant map where padding is excluded)."""
    import keras

    h, w = int(x.shape[1]), int(x.shape[2])
    y = _constant(keras.layers.DepthwiseConv2D(k, strides=stride, padding=padding, use_bias=False, name=name + "_dw",
                                               depthwise_initializer=keras.initializers.Constant(scale / (k * k))))(x)
    if exclude_pad:
        pt, pb = same_pad(h, k, stride)
        pl, pr = same_pad(w, k, stride)
        corr = avg_correction(h, w, k, stride, (pl, pr, pt, pb))
        if not np.allclose(corr, 1.0):
            y = _const_layers()(corr, name=name + "_count")(y)
    return y


def _pad2d(x, kernel, stride, dilation=1, name=None):
    """Explicit TF-'SAME' zero padding (Keras ``correct_pad`` for stride 2)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    pad = (same_pad(h, k[0], s[0], dilation), same_pad(w, k[1], s[1], dilation))
    if pad == ((0, 0), (0, 0)):
        return x
    return _layers().ZeroPadding2D(padding=pad, name=name)(x)


def _split_separable(x, filters: int, kernel: int, stride: int, name: str):
    """Edge form of a SeparableConv2D with a large kernel: depthwise kernel groups of at most 25 taps, each
    on the input through its own zero pad (and crop where needed), summed, then the pointwise conv. Same
    function as the 'same'-padded separable conv (see edge.model.lowering.tap_groups)."""
    layers = _layers()
    hw = (int(x.shape[1]), int(x.shape[2]))
    parts = []
    for g, ((r0, r1, c0, c1), window) in enumerate(zip(tap_groups(kernel, stride), group_windows(hw, kernel, stride))):
        if window is None:  # reads only padding (tiny inputs): contributes zero
            continue
        (rc0, rc1, pt, pb), (cc0, cc1, pl, pr) = window
        xi = layers.Cropping2D(((rc0, rc1), (cc0, cc1)))(x) if (rc0 or rc1 or cc0 or cc1) else x
        xi = layers.ZeroPadding2D(((pt, pb), (pl, pr)))(xi) if (pt or pb or pl or pr) else xi
        parts.append(layers.DepthwiseConv2D((r1 - r0, c1 - c0), strides=stride, padding="valid", use_bias=False,
                                            name=f"{name}_dw{g}")(xi))
    y = layers.add(parts) if len(parts) > 1 else parts[0]
    return layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)


def _separable(x, filters: int, kernel: int, stride: int, pad: str, name: str):
    if _LOWERING is not None and _LOWERING.split_large_dwconv and needs_split(kernel):
        return _split_separable(x, filters, kernel, stride, name)
    return _layers().SeparableConv2D(filters, kernel, strides=stride, padding=pad, use_bias=False, name=name)(x)


def separable_block(x, filters: int, kernel: int, stride: int, name: str):
    layers = _layers()
    x = _relu(x)
    if stride > 1 and not (_LOWERING is not None and _LOWERING.same_padding):
        x = _pad2d(x, kernel, stride, name=f"separable_conv_1_pad_{name}")
        pad = "valid"
    else:
        pad = "same"  # TF 'SAME' at stride 2 pads exactly like Keras correct_pad
    x = _separable(x, filters, kernel, stride, pad, f"separable_conv_1_{name}")
    x = _bn(x, f"separable_conv_1_bn_{name}")
    x = layers.Activation("relu")(x)  # conv + BN + ReLU: the converter fuses it, in every precision
    x = _separable(x, filters, kernel, 1, "same", f"separable_conv_2_{name}")
    return _bn(x, f"separable_conv_2_bn_{name}")


def conv_block(x, op: Op, filters: int, stride: int, name: str):
    layers = _layers()
    shapes = {Op.CONV_1X1: [((1, 1), 1)], Op.CONV_3X3: [((3, 3), 1)], Op.DIL_CONV_3X3: [((3, 3), 2)],
              Op.CONV_1X3_3X1: [((1, 3), 1), ((3, 1), 1)], Op.CONV_1X7_7X1: [((1, 7), 1), ((7, 1), 1)]}[op]
    x = _relu(x)
    for i, (kernel, dil) in enumerate(shapes):
        s = (stride, stride) if len(shapes) == 1 else ((1, stride) if i == 0 else (stride, 1))
        if dil > 1:
            s = (1, 1)  # Keras rejects strides > 1 with dilation: 'same' conv, then subsample
        x = _pad2d(x, kernel, s, dil)
        x = layers.Conv2D(filters, kernel, strides=s, dilation_rate=dil, padding="valid", use_bias=False,
                          name=f"{name}_conv_{i + 1}")(x)
    if op is Op.DIL_CONV_3X3 and stride > 1:
        x = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid")(x)
    return _bn(x, f"{name}_bn")


def factorized_reduce(p, filters: int, conv_names: tuple[str, str], bn_name: str, relu_name: str | None = None,
                      pool_names: tuple[str | None, str | None] = (None, None)):
    """Keras ``_adjust_block``'s factorized reduction, layer for layer (one 2x2 conv in the edge form)."""
    layers = _layers()
    p = _relu(p, relu_name)
    if _LOWERING is not None and _LOWERING.fuse_factorized:
        from edge.model.lowering import FUSED_SUFFIX

        fused = conv_names[0].replace("_conv_1", "_conv", 1) + FUSED_SUFFIX
        p = layers.Conv2D(filters, (2, 2), strides=(2, 2), padding="same", use_bias=False, name=fused)(p)
        return _bn(p, bn_name)
    p1 = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid", name=pool_names[0])(p)
    p1 = layers.Conv2D(filters // 2, (1, 1), padding="same", use_bias=False, name=conv_names[0])(p1)
    p2 = layers.ZeroPadding2D(padding=((0, 1), (0, 1)))(p)
    p2 = layers.Cropping2D(cropping=((1, 0), (1, 0)))(p2)
    p2 = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid", name=pool_names[1])(p2)
    p2 = layers.Conv2D(filters - filters // 2, (1, 1), padding="same", use_bias=False, name=conv_names[1])(p2)
    p = layers.concatenate([p1, p2], axis=-1)
    return _bn(p, bn_name)


def pool(x, op: Op, stride: int, name: str, pooling: Pooling, padded_cache: dict, scale: float = 1.0):
    layers = _layers()
    k = op.kernel_size
    is_avg = op is Op.AVG_POOL_3X3
    if is_avg and _LOWERING is not None and _LOWERING.avgpool_as_dwconv:
        if stride > 1 and pooling is Pooling.KERAS:  # zeros count: /k^2 everywhere, 'same' pads like correct_pad
            return _avg_pool_dw(x, k, stride, "same", False, name, scale)
        return _avg_pool_dw(x, k, stride, "same", True, name, scale)
    cls = layers.AveragePooling2D if is_avg else layers.MaxPooling2D
    if (not is_avg and stride > 1 and pooling is Pooling.KERAS and _LOWERING is not None
            and _LOWERING.max_pool_border_map):
        # GPU target: no PAD -> MAX_POOL_2D (LiteRT's GPU merges the two with -inf padding, docs/gpu.md)
        from edge.model.lowering import max_pool_border_map

        border = max_pool_border_map(int(x.shape[1]), int(x.shape[2]), k, stride)
        y = cls((k, k), strides=(stride, stride), padding="same", name=name)(x)
        return _const_maximum_layer()(border, name=name + "_border")(y)
    if stride > 1 and pooling is Pooling.KERAS:
        # Keras zero-pads h once per cell (``reduction_pad_1_{id}``) and pools 'valid'.
        key = (id(x), k)
        if key not in padded_cache:
            padded_cache[key] = _pad2d(x, k, stride, name=padded_cache.get("pad_name") if k == 3 else None)
        return cls((k, k), strides=(stride, stride), padding="valid", name=name)(padded_cache[key])
    # 'same' pooling: TF pads exactly as correct_pad for stride 2 and leaves padding out of max/average.
    return cls((k, k), strides=(stride, stride), padding="same", name=name)(x)


def cell(x, p, spec: CellSpec, pooling: Pooling):
    layers = _layers()
    g, f, bid, kind = spec.genotype, spec.filters, spec.block_id, spec.kind.value
    adjust = spec.adjust
    if p is None:
        p = x
    if adjust == "factorized":
        p = factorized_reduce(p, f, (f"adjust_conv_1_{bid}", f"adjust_conv_2_{bid}"), f"adjust_bn_{bid}",
                              relu_name=f"adjust_relu_1_{bid}",
                              pool_names=(f"adjust_avg_pool_1_{bid}", f"adjust_avg_pool_2_{bid}"))
    elif adjust == "projection":
        p = _relu(p)
        p = layers.Conv2D(f, (1, 1), padding="same", use_bias=False, name=f"adjust_conv_projection_{bid}")(p)
        p = _bn(p, f"adjust_bn_{bid}")
    h = _relu(x)
    h = layers.Conv2D(f, (1, 1), padding="same", use_bias=False, name=f"{kind}_conv_1_{bid}")(h)
    h = _bn(h, f"{kind}_bn_1_{bid}")

    states = [h, p]
    padded: dict = {"pad_name": f"{kind}_pad_1_{bid}"}
    for b in range(g.num_blocks):
        if is_twin_pool_block(g, b, _LOWERING):
            i = 2 * b
            states.append(pool(states[g.inputs[i]], g.ops[i], g.stride(i), f"{g.keras_names[i]}_{bid}", pooling,
                               padded, scale=2.0))
            continue
        outs = []
        for i in (2 * b, 2 * b + 1):
            src, stride, op = states[g.inputs[i]], g.stride(i), g.ops[i]
            name = f"{g.keras_names[i]}_{bid}"
            if op.is_separable:
                outs.append(separable_block(src, f, op.kernel_size, stride, name))
            elif op.is_pool:
                outs.append(pool(src, op, stride, name, pooling, padded))
            elif op is Op.IDENTITY:
                outs.append(src if stride == 1 else
                            factorized_reduce(src, f, (f"{name}_conv_1", f"{name}_conv_2"), f"{name}_bn"))
            else:
                outs.append(conv_block(src, op, f, stride, name))
        if g.combine is Combine.ADD:
            states.append(layers.add(outs, name=f"{kind}_add_{b + 1}_{bid}"))
        else:
            states.append(_concat(outs, name=f"{kind}_comb_{b + 1}_{bid}"))
    return _concat([states[i] for i in g.concat], name=f"{kind}_concat_{bid}")


def build_keras_model(config: NASNetConfig, include_top: bool = True, input_size: int | None = None,
                      classifier_activation: str | None = "softmax", name: str | None = None,
                      lowered: Lowering | bool | None = None):
    """The Keras NASNet for ``config`` (channels-last, static input size).

    ``lowered``: build the edge form (``True`` = all rewrites of :mod:`edge.model.lowering`); its weights come
    from :func:`edge.model.lowering.lowered_keras_weights`.
    """
    global _LOWERING
    from edge.model.lowering import EDGE

    previous = _LOWERING
    _LOWERING = EDGE if lowered is True else (lowered or None)
    _RELU_CACHE.clear()
    try:
        return _build_keras_model(config, include_top, input_size, classifier_activation, name)
    finally:
        _LOWERING = previous
        _RELU_CACHE.clear()


def _build_keras_model(config, include_top, input_size, classifier_activation, name):
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()
    layers = keras.layers

    size = input_size or config.input_size
    specs = config.cells(size)
    inp = layers.Input(shape=(size, size, 3), name="input_layer")
    x = layers.Conv2D(config.stem_filters, (3, 3), strides=(2, 2), padding="valid", use_bias=False,
                      name="stem_conv1")(inp)
    x = _bn(x, "stem_bn1")
    outs = [x]
    p_idx = None
    for i, spec in enumerate(specs):
        x_new = cell(outs[-1], None if p_idx is None else outs[p_idx], spec, config.pooling)
        if not (config.skip_reduction and spec.block_id.startswith("reduce_")):
            p_idx = i
        outs.append(x_new)
    x = _relu(outs[-1])
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(config.num_classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inp, x, name=name or config.name)


def load_keras_weights(model, weights: KerasWeights, strict: bool = True) -> list[str]:
    """Set every weighted layer from ``{layer name: arrays}``; returns the names that were missing."""
    missing = []
    for layer in model.layers:
        if not layer.weights or getattr(layer, "_edge_constant", False):
            continue
        if layer.name not in weights:
            missing.append(layer.name)
            continue
        arrays = weights[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(a)) for a in arrays]
        if expected != got:
            raise WeightsError(f"layer {layer.name}: weights of shapes {got}, model expects {expected}")
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in arrays])
    if strict and missing:
        raise WeightsError(f"{len(missing)} Keras layers missing from the weights, e.g. {missing[:3]}")
    return missing


def cell_output_names(config: NASNetConfig) -> list[str]:
    """Names of the concat layers that end each cell, in order (for per-cell comparisons)."""
    return [f"{s.kind.value}_concat_{s.block_id}" for s in config.cells()]


def load_keras_model(weights="default", *, include_top: bool = True, input_size: int | None = None,
                     pooling=None, classifier_activation: str | None = "softmax", source=None):
    """(Keras NASNet with ``weights``, its WeightsSource); same weight choices as ``load_torch_model``."""
    from edge.model.sources import resolve_weights

    src = source or resolve_weights(weights, pooling=pooling)
    cfg = src.config if not input_size else src.config.with_(input_size=input_size)
    model = build_keras_model(cfg, include_top=include_top, classifier_activation=classifier_activation)
    if src.keras_weights is not None:
        w = src.keras_weights
    elif src.state_dict is not None:
        from edge.model.torch_model import build_torch_model

        tm = build_torch_model(cfg)
        tm.load_state_dict(src.state_dict)
        w = tm.keras_weights()
    else:
        return model, src
    if not include_top:
        w = {k: v for k, v in w.items() if k != "predictions"}
    load_keras_weights(model, w)
    return model, src


def build_keras_parts(config: NASNetConfig, lowered: Lowering | bool | None = None,
                      classifier_activation: str | None = None) -> list[tuple[str, object]]:
    """The network cut at cell boundaries: [(name, Keras model)] for stem, every cell, and head.

    Each part has the real input shapes it has inside the whole network (a cell takes ``x`` and, except
    the first, ``p``), and layer names identical to the whole model's, so the same weights load.
    """
    global _LOWERING
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()
    layers = keras.layers

    from edge.model.lowering import EDGE

    previous = _LOWERING
    _LOWERING = EDGE if lowered is True else (lowered or None)
    _RELU_CACHE.clear()
    try:
        size = config.input_size
        parts = []
        inp = layers.Input(shape=(size, size, 3), name="image")
        x = layers.Conv2D(config.stem_filters, (3, 3), strides=(2, 2), padding="valid", use_bias=False,
                          name="stem_conv1")(inp)
        parts.append(("stem", keras.Model(inp, _bn(x, "stem_bn1"), name="stem")))
        for spec in config.cells():
            xi = layers.Input(shape=spec.x_shape, name="x")
            pi = layers.Input(shape=spec.p_shape, name="p") if spec.p_shape is not None else None
            out = cell(xi, pi, spec, config.pooling)
            parts.append((spec.name, keras.Model([xi] if pi is None else [xi, pi], out, name=spec.name)))
        last = config.cells()[-1].out_shape
        hi = layers.Input(shape=last, name="features")
        h = layers.GlobalAveragePooling2D()(_relu(hi))
        h = layers.Dense(config.num_classes, activation=classifier_activation, name="predictions")(h)
        parts.append(("head", keras.Model(hi, h, name="head")))
        return parts
    finally:
        _LOWERING = previous
        _RELU_CACHE.clear()


def part_inputs(config: NASNetConfig, activations: list[np.ndarray], image: np.ndarray) -> list[list[np.ndarray]]:
    """Inputs of each part of :func:`build_keras_parts`, from the whole network's activations.

    ``activations`` = [stem output, cell 0 output, ...] for ``image``; p follows Keras' wiring.
    """
    feeds = [[image]]
    p_idx = None
    for i, spec in enumerate(config.cells()):
        x = activations[i]
        feeds.append([x] if spec.p_shape is None else [x, activations[p_idx]])
        if not (config.skip_reduction and spec.block_id.startswith("reduce_")):
            p_idx = i
    feeds.append([activations[-1]])
    return feeds
