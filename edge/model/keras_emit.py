"""Keras emitter: any plan (:mod:`edge.model.plan`) as a Keras functional model, one node kind at a time.

Layer names are the plan's node names, so the reference plan's weighted layers are named exactly as
``keras.applications.nasnet`` names them (the 389 weighted layers of NASNet-Mobile match by name and shape)
and official files load by name. Padding: a node whose padding is TF 'SAME' becomes ``padding='same'``, no
padding ``'valid'``; any other amount a ``ZeroPadding2D`` first. There is no lowering here. Importing this
module does not import PyTorch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from edge.model.config import BN_EPSILON, BN_MOMENTUM_KERAS
from edge.model.plan import NO_PAD, Kind, Node, PadMode, Plan, constant, same_pad4
from edge.model.weights import KerasWeights, WeightsError


def _const_scale_layer():
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


def _constant(layer):
    """Mark a layer whose weights are constants of the plan (not loaded from weight files)."""
    layer._edge_constant = True
    return layer


def _padding(keras, n: Node, x, in_shape):
    """(x, 'same' | 'valid') for a node's explicit padding: TF 'SAME' amounts are the layer's own."""
    if n.pad == NO_PAD:
        # a 1x1 conv pads nothing either way; Keras' NASNet writes 'same' for them
        return x, "same" if n.kernel == (1, 1) else "valid"
    if n.pad == same_pad4(in_shape[:2], n.kernel, n.stride, n.dilation):
        return x, "same"
    t, b, l, r = n.pad
    return keras.layers.ZeroPadding2D(((t, b), (l, r)), name=n.name + "_pad")(x), "valid"


def _layer(keras, plan: Plan, n: Node, args: list, classifier_activation):
    """The Keras layer call of node ``n`` on its inputs ``args``."""
    L = keras.layers
    x = args[0] if args else None
    kind = n.kind
    in_shape = plan.node(n.inputs[0]).shape if n.inputs else None
    if kind is Kind.CONV:
        x, padding = _padding(keras, n, x, in_shape)
        return L.Conv2D(n.shape[2], n.kernel, strides=n.stride, dilation_rate=n.dilation, padding=padding,
                        use_bias=False, activation=n.activation, name=n.name)(x)
    if kind is Kind.SEPARABLE:
        x, padding = _padding(keras, n, x, in_shape)
        return L.SeparableConv2D(n.shape[2], n.kernel, strides=n.stride, padding=padding, use_bias=False,
                                 activation=n.activation, name=n.name)(x)
    if kind is Kind.DEPTHWISE:
        x, padding = _padding(keras, n, x, in_shape)
        if n.const:
            init = keras.initializers.Constant(float(n.const[1])) if n.const[0] == "fill" else None
            return _constant(L.DepthwiseConv2D(n.kernel, strides=n.stride, padding=padding, use_bias=False,
                                               activation=n.activation, depthwise_initializer=init, name=n.name))(x)
        return L.DepthwiseConv2D(n.kernel, strides=n.stride, padding=padding, use_bias=False, activation=n.activation,
                                 name=n.name)(x)
    if kind is Kind.BATCH_NORM:
        return L.BatchNormalization(axis=-1, momentum=BN_MOMENTUM_KERAS, epsilon=BN_EPSILON, name=n.name)(x)
    if kind is Kind.RELU:
        return L.Activation("relu", name=n.name)(x)
    if kind is Kind.PAD:
        t, b, l, r = n.pad
        return L.ZeroPadding2D(((t, b), (l, r)), name=n.name)(x)
    if kind is Kind.CROP:
        t, b, l, r = n.pad
        return L.Cropping2D(((t, b), (l, r)), name=n.name)(x)
    if kind is Kind.SUBSAMPLE:  # Keras' NASNet writes x[::2, ::2] as a 1x1 average pool with stride 2
        return L.AveragePooling2D((1, 1), strides=n.stride, padding="valid", name=n.name)(x)
    if kind in (Kind.MAX_POOL, Kind.AVG_POOL):
        cls = L.MaxPooling2D if kind is Kind.MAX_POOL else L.AveragePooling2D
        if n.pad_mode is PadMode.EXCLUDED:
            if n.pad != NO_PAD and n.pad != same_pad4(in_shape[:2], n.kernel, n.stride):
                raise ValueError(f"{n.name}: Keras pools leave out only TF 'SAME' padding, not {n.pad}")
            return cls(n.kernel, strides=n.stride, padding="same" if n.pad != NO_PAD else "valid", name=n.name)(x)
        if n.pad != NO_PAD:
            t, b, l, r = n.pad
            x = L.ZeroPadding2D(((t, b), (l, r)), name=n.name + "_pad")(x)
        return cls(n.kernel, strides=n.stride, padding="valid", name=n.name)(x)
    if kind is Kind.SCALE:
        if n.activation:  # the named layer's output is the node's: the activation carries the name
            return L.Activation(n.activation, name=n.name)(_const_scale_layer()(constant(n), name=n.name + "_scale")(x))
        return _const_scale_layer()(constant(n), name=n.name)(x)
    if kind is Kind.MAXIMUM:
        return _const_maximum_layer()(constant(n), name=n.name)(x)
    if kind is Kind.ADD:
        if n.activation:  # the converter fuses it into the ADD
            return L.Activation(n.activation, name=n.name)(L.add(args, name=n.name + "_sum"))
        return L.add(args, name=n.name)
    if kind is Kind.CONCAT:
        return L.concatenate(args, axis=-1, name=n.name)
    if kind is Kind.GLOBAL_POOL:
        return L.GlobalAveragePooling2D(name=n.name)(x)
    if kind is Kind.DENSE:
        return L.Dense(n.shape[2], activation=classifier_activation, name=n.name)(x)
    raise NotImplementedError(f"the Keras emitter has no rule for {kind.value} ({n.name})")


def _emit(keras, plan: Plan, nodes, inputs: dict, classifier_activation):
    env = dict(inputs)
    for n in nodes:
        if n.kind is Kind.INPUT:
            continue
        env[n.name] = _layer(keras, plan, n, [env[i] for i in n.inputs], classifier_activation)
    return env


def emit_keras(plan: Plan, classifier_activation: str | None = "softmax", name: str | None = None):
    """The Keras model of ``plan`` (channels-last, static input size; random weights, see
    :func:`load_keras_weights`). ``classifier_activation`` applies to the classifier only."""
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()
    (inp,) = [n for n in plan.nodes if n.kind is Kind.INPUT]
    x = keras.layers.Input(shape=inp.shape, name=inp.name)
    env = _emit(keras, plan, plan.nodes, {inp.name: x}, classifier_activation)
    return keras.Model(x, env[plan.output], name=name or plan.config.name)


def emit_keras_parts(plan: Plan, classifier_activation: str | None = None) -> list[tuple[str, object]]:
    """The plan cut at its parts: [(name, Keras model)] for stem, every cell and head, each with the real input
    shapes it has inside the whole network (a cell takes ``x`` and, except the first, ``p``) and layer names
    identical to the whole model's, so the same weights load."""
    from edge.quiet import import_tensorflow

    keras = import_tensorflow()
    out = []
    for k, part in enumerate(plan.parts()):
        if k == 0:
            (inp,) = [n for n in part.nodes if n.kind is Kind.INPUT]
            ins = {inp.name: keras.layers.Input(shape=inp.shape, name="image")}
        else:
            names = ("features",) if part.name == "head" else ("x", "p")
            ins = {i: keras.layers.Input(shape=plan.node(i).shape, name=names[j]) for j, i in enumerate(part.inputs)}
        env = _emit(keras, plan, part.nodes, ins, classifier_activation)
        out.append((part.name, keras.Model(list(ins.values()), env[part.output], name=part.name)))
    return out


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


def part_inputs(plan: Plan, activations: list[np.ndarray], image: np.ndarray) -> list[list[np.ndarray]]:
    """Inputs of each part of :func:`emit_keras_parts`, from the whole network's part outputs
    ``activations`` = [stem output, cell 0 output, ...] for ``image``."""
    parts = plan.parts()
    by_output = {p.output: a for p, a in zip(parts, activations)}
    return [[image]] + [[by_output[i] for i in p.inputs] for p in parts[1:]]


def part_output_names(plan: Plan) -> list[str]:
    """The node (layer) names that end stem and each cell, in order (for per-cell comparisons)."""
    return [p.output for p in plan.parts()[:-1]]


def build_keras_model(config, target="reference", include_top: bool = True, input_size: int | None = None,
                      classifier_activation: str | None = "softmax", name: str | None = None):
    """The Keras NASNet of ``config`` lowered for ``target`` (see :func:`edge.model.passes.build_plan`); its
    weights: ``model_plan(...).lower_weights(reference weights)``."""
    from edge.model.passes import build_plan

    if input_size:
        config = config.with_(input_size=input_size)
    return emit_keras(build_plan(config, target, include_top=include_top), classifier_activation, name)


def build_keras_parts(config, target="reference", classifier_activation: str | None = None):
    """:func:`emit_keras_parts` of ``config``'s plan for ``target``."""
    from edge.model.passes import build_plan

    return emit_keras_parts(build_plan(config, target), classifier_activation)
