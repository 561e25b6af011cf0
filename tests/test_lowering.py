"""The edge form computes the reference function: every rewrite is pinned in float on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.model.config import Pooling, nasnet_mobile
from edge.model.keras_emit import build_keras_model, emit_keras, load_keras_weights
from edge.model.passes import XNNPACK_FP32, XNNPACK_INT8, build_plan, pack_factorized, split_for_concat
from edge.model.torch_emit import build_torch_model, emit_torch
from edge.preprocessing import preprocess_batch

from conftest import randomize_bn


def torch_probs(model, x):
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x).permute(0, 3, 1, 2)), 1).numpy()


@pytest.fixture(scope="module")
def reference(keras_reference):
    """Reference PyTorch NASNet-Mobile with the random Keras weights (realistic BN statistics)."""
    from edge.model.weights import keras_model_weights

    weights = keras_model_weights(keras_reference)
    model = build_torch_model(nasnet_mobile())
    model.load_keras_weights(weights)
    return model, weights


@pytest.mark.parametrize("target", [XNNPACK_INT8, XNNPACK_FP32, XNNPACK_INT8.without("fuse_factorized", "split_concat"),
                                    XNNPACK_FP32.without("avgpool_as_dwconv"),
                                    XNNPACK_FP32.without("share_relu", "merge_twin_pools")], ids=lambda t: t.name)
def test_edge_form_equals_reference_in_both_builders(reference, real_images, target):
    model, weights = reference
    cfg = model.config
    x = preprocess_batch(real_images[:6], cfg.preprocessing)
    want = torch_probs(model, x)
    plan = build_plan(cfg, target)
    lw = plan.lower_weights(weights)
    edge_t = emit_torch(plan)
    edge_t.load_keras_weights(lw)
    assert np.abs(torch_probs(edge_t, x) - want).max() <= 1e-5
    edge_k = emit_keras(plan)
    load_keras_weights(edge_k, lw)
    assert np.abs(edge_k.predict(x, verbose=0) - want).max() <= 1e-5


@pytest.mark.parametrize("size,pooling,target", [(199, Pooling.KERAS, XNNPACK_INT8), (224, Pooling.SLIM, XNNPACK_INT8),
                                                (199, Pooling.KERAS, XNNPACK_FP32), (224, Pooling.KERAS, XNNPACK_FP32)])
def test_edge_form_is_exact_at_odd_sizes_and_in_slim_mode(size, pooling, target):
    cfg = nasnet_mobile(num_classes=10, input_size=size, pooling=pooling)
    ref = build_torch_model(cfg)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    edge = build_torch_model(cfg, target)
    edge.load_keras_weights(edge.plan.lower_weights(ref.keras_weights()))
    assert np.abs(torch_probs(edge, x) - torch_probs(ref, x)).max() <= 1e-5


def test_a_same_max_pool_is_its_own_padding_and_ceil_mode_exactly():
    """The emitter's rule (torch_emit._pool_padding) against F.pad(-inf) + a 'valid' pool, for every input size
    5-119 and the kernels and strides NASNet and its variants use: where it answers, the same windows and values."""
    import torch.nn.functional as F

    from edge.model.config import same_pad
    from edge.model.torch_emit import _pool_padding

    g = torch.Generator().manual_seed(0)
    answered = 0
    for n in range(5, 120):
        for k, s in ((3, 2), (3, 1), (2, 2), (5, 2)):
            pad = same_pad(n, k, s) * 2  # (top, bottom, left, right)
            own = _pool_padding(pad, (n, n), (k, k), (s, s))
            if own is None:
                continue
            answered += 1
            x = torch.randn(1, 2, n, n, generator=g)
            want = F.max_pool2d(F.pad(x, (pad[2], pad[3], pad[0], pad[1]), value=float("-inf")), k, s)
            assert torch.equal(F.max_pool2d(x, k, s, padding=own[0], ceil_mode=own[1]), want), (n, k, s)
    assert answered == 460  # every case: TF 'same' never pads more than one extra at the bottom/right


@pytest.mark.parametrize("size", [199, 224])
def test_float_form_max_pools_take_their_padding_themselves(size):
    """max_pool_border_map in the PyTorch emitter: a 'same' max pool is F.max_pool2d's own padding (ceil_mode for
    TF's one extra row at the bottom), not F.pad(-inf) before it, which ExecuTorch's XNNPACK lowering would run as a
    pad copy of the pool's whole input (StaticConstantPad; XNNPACK folds pads into convolutions only)."""
    model = build_torch_model(nasnet_mobile(num_classes=10, input_size=size), XNNPACK_FP32).eval()
    graph = torch.export.export(model, (torch.zeros(1, 3, size, size),)).graph
    pools = [n for n in graph.nodes if "max_pool2d" in str(n.target)]
    assert len(pools) == 4  # one per reduction cell (share_max_pools)
    assert not [p for p in pools if "pad" in str(p.args[0].target)]
    assert any(len(p.args) > 5 and p.args[5] for p in pools)  # ceil_mode: an even input, TF's bottom row
    assert len([n for n in graph.nodes if "maximum" in str(n.target)]) == 4  # the border maps


def test_factorized_reduction_packs_into_one_2x2_conv_and_back():
    rng = np.random.default_rng(0)
    k1, k2 = rng.normal(size=(1, 1, 8, 3)), rng.normal(size=(1, 1, 8, 3))
    fused = pack_factorized(k1, k2)
    assert fused.shape == (2, 2, 8, 6) and fused[0, 1].max() == 0 and fused[1, 0].max() == 0
    plan = build_plan(nasnet_mobile(), XNNPACK_FP32)
    w = {"adjust_conv_1_0": [k1], "adjust_conv_2_0": [k2]}
    # and the 7x7 separable convs (stride 2 and 1: different kernel groups) split and join back
    sep = {n: [rng.normal(size=(7, 7, 4, 1)), rng.normal(size=(1, 1, 4, 5))]
           for n in ("separable_conv_1_reduction_right1_stem_1", "separable_conv_2_reduction_right1_stem_1")}
    lowered = plan.lower_weights({**w, **sep})
    assert lowered["separable_conv_1_reduction_right1_stem_1_dw0"][0].shape[:2] == (2, 7)  # stride 2
    assert lowered["separable_conv_2_reduction_right1_stem_1_dw0"][0].shape[:2] == (7, 3)  # stride 1
    back = plan.raise_weights(lowered)
    np.testing.assert_allclose(back["adjust_conv_1_0"][0], k1, rtol=0, atol=1e-7)
    np.testing.assert_allclose(back["adjust_conv_2_0"][0], k2, rtol=0, atol=1e-7)
    for n, arrays in sep.items():
        for a, b in zip(back[n], arrays):
            np.testing.assert_array_equal(a, b)


def test_concat_split_respects_xnnpack_arity():
    assert split_for_concat(list(range(6))) == [[0, 1], [2], [3], [4], [5]]  # 7 copy operators, not 3 + 3 + 2
    assert split_for_concat(list(range(4))) == [[0, 1, 2, 3]]
    for n in (7, 11, 25):
        groups = split_for_concat(list(range(n)))
        assert len(groups) <= 5 and max(map(len, groups)) <= 5 and sum(groups, []) == list(range(n))
    with pytest.raises(ValueError, match="more than two levels"):
        split_for_concat(list(range(26)))


def test_edge_form_has_no_ops_that_xnnpack_rejects():
    """Structure of the lowered Keras graph: no pooling averages, no standalone ReLU, no wide concat."""
    cfg = nasnet_mobile(num_classes=10)
    model = build_keras_model(cfg, XNNPACK_INT8)
    kinds = [type(l).__name__ for l in model.layers]
    assert "AveragePooling2D" not in kinds
    # the only plain ReLUs left follow a BatchNormalization (conv + BN + ReLU fuse into one kernel), or an ADD
    # or constant MUL that takes it as its fused activation (relu_before_concat)
    fused = []
    for layer in model.layers:
        if type(layer).__name__ in ("Activation", "ReLU"):
            producer = type(layer.input._keras_history.operation).__name__
            assert producer in ("BatchNormalization", "Add", "ConstantScale"), layer.name
            fused.append(producer)
    assert "Add" in fused and "ConstantScale" in fused
    assert max(l.kernel_size[0] * l.kernel_size[1] for l in model.layers
               if type(l).__name__ == "DepthwiseConv2D") <= 25  # no 7x7 depthwise left
    assert "ZeroPadding2D" in kinds  # Keras-mode max pools keep their zero padding (PAD is delegated)
    assert all(len(l.input) <= 5
               for l in model.layers if type(l).__name__ == "Concatenate")


def test_edge_form_computes_each_cell_states_relu_once():
    """share_relu: NASNet-A reads a cell state in up to three ops that each start with its ReLU; XNNPACK does
    not merge equal ops, so the reference form runs 45 more standalone clamps: 44 where a cell's ops read the
    same state, and one in the first cell, whose base reads the tensor it also reads as p (the builders before the
    compiled plan shared that one in Keras only). Pinned on the exported graph."""
    import torch

    cfg = nasnet_mobile(num_classes=10, input_size=64)
    x = torch.zeros(1, 3, 64, 64)

    def relus(target) -> int:
        model = build_torch_model(cfg, target).eval()
        graph = torch.export.export(model, (x,), strict=False).graph
        return sum(1 for n in graph.nodes if n.op == "call_function" and "relu" in str(n.target))

    assert relus(XNNPACK_FP32.without("share_relu")) - relus(XNNPACK_FP32) == 45


@pytest.mark.parametrize("size,stride", [(14, 1), (14, 2), (13, 2), (9, 1), (2, 1), (3, 2), (1, 2)])
def test_tap_groups_sum_to_the_same_padded_7x7_depthwise_conv(size, stride):
    """The 7x7 split (2x7 + 5x2 + 5x5, each through its own pad/crop) equals the 'same' 7x7 depthwise conv."""
    import torch
    import torch.nn.functional as F

    from edge.model.config import same_pad
    from edge.model.passes import group_windows, tap_groups

    groups = tap_groups(7, stride)
    assert [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in groups] == ([14, 10, 25] if stride == 2 else [21, 21, 7])
    g = torch.Generator().manual_seed(size + stride)
    x, k = torch.randn(1, 4, size, size, generator=g), torch.randn(4, 1, 7, 7, generator=g)
    (pt, pb), (pl, pr) = same_pad(size, 7, stride), same_pad(size, 7, stride)
    want = F.conv2d(F.pad(x, (pl, pr, pt, pb)), k, stride=stride, groups=4)
    got = 0
    for (r0, r1, c0, c1), window in zip(groups, group_windows((size, size), 7, stride)):
        if window is None:  # reads only padding
            continue
        (rc0, rc1, gt, gb), (cc0, cc1, gl, gr) = window
        xi = F.pad(x[:, :, rc0:size - rc1, cc0:size - cc1], (gl, gr, gt, gb))
        got = got + F.conv2d(xi, k[:, :, r0:r1, c0:c1], stride=stride, groups=4)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
