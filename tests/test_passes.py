"""The compiled plan and each lowering pass, on plans alone: no PyTorch, no TensorFlow (the float equivalence of
every pass on real images is pinned in test_lowering.py, through both emitters)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from edge.model.config import Pooling, nasnet_large, nasnet_mobile
from edge.model.passes import (GPU, MAX_CONCAT_INPUTS, MAX_DW_TAPS, PASSES, TARGETS, XNNPACK_FP32, XNNPACK_INT8,
                               XNNPACK_PT2E,
                               PackFactorized, SplitSeparable, avgpool_as_dwconv, build_plan, distinct_pads,
                               fuse_factorized,
                               max_pool_border_map, max_pool_border_relu, merge_twin_pools, share_max_pools, relu_as_dwconv, relu_before_concat, same_padding,
                               share_relu, split_concat, split_large_dwconv)
from edge.model.plan import CONV_KINDS, NO_PAD, Kind, PadMode, Plan, compile, conv_out, same_pad4

MOBILE = nasnet_mobile(num_classes=10)
SMALL = nasnet_mobile(num_classes=5).with_(penultimate_filters=96, num_blocks=1, stem_filters=32, input_size=48)


def check(plan: Plan) -> None:
    """Invariants every plan keeps: unique names, inputs defined before use, shapes that fit."""
    seen: dict[str, tuple] = {}
    for n in plan.nodes:
        assert n.name not in seen, f"duplicate {n.name}"
        for i in n.inputs:
            assert i in seen, f"{n.name} reads {i} before it exists"
        ins = [seen[i] for i in n.inputs]
        if n.kind is Kind.ADD:
            assert all(s == n.shape for s in ins), n.name
        if n.kind is Kind.CONCAT:
            assert sum(s[2] for s in ins) == n.shape[2] and all(s[:2] == n.shape[:2] for s in ins), n.name
        if n.kind in CONV_KINDS or n.kind in (Kind.MAX_POOL, Kind.AVG_POOL):
            (h, w, _), (kh, kw), (sh, sw) = ins[0], n.kernel, n.stride
            t, b, l, r = n.pad
            assert n.shape[:2] == (conv_out(h, kh, sh, t, b, n.dilation), conv_out(w, kw, sw, l, r, n.dilation)), n.name
        seen[n.name] = n.shape
    assert plan.output in seen
    plan.parts()  # one output per part


def count(plan: Plan) -> Counter:
    return Counter(n.kind for n in plan.nodes)


@pytest.fixture(scope="module")
def ref() -> Plan:
    return compile(MOBILE)


def test_the_reference_plan_is_keras_nasnet_mobile_by_name(ref):
    check(ref)
    weighted = ref.weighted()
    assert len(weighted) == 389  # keras.applications.NASNetMobile's weighted layers, by the same names
    names = {n.weights for n in weighted}
    assert {"stem_conv1", "adjust_conv_1_stem_2", "separable_conv_1_reduction_left4_stem_1", "normal_bn_1_11",
            "adjust_conv_projection_12", "predictions"} <= names
    assert sum(p for p in ref.params().values()) == 4_243_548  # trainable parameters of NASNetMobile(classes=10)
    assert [p.name for p in ref.parts()] == ["stem"] + [s.name for s in MOBILE.cells()] + ["head"]
    assert ref.node(ref.output).shape == (1, 1, 10)


def test_p_wiring_and_adjustment_are_decided_in_the_plan(ref):
    """Each cell reads x (the previous cell) and p (the one before; the stem's output twice for the first cell)."""
    parts = ref.parts()
    outputs = [p.output for p in parts]
    assert parts[1].inputs == ("stem_bn1",)  # the first cell reads x as its p
    for k in range(2, len(parts) - 1):
        assert parts[k].inputs == (outputs[k - 1], outputs[k - 2]), parts[k].name
    # a NASNet-Large configuration skips the reduction cells' p (skip_reduction)
    large = compile(nasnet_large(num_classes=7))
    lp = large.parts()
    reduce = [k for k, p in enumerate(lp) if "reduction" in p.name and k > 2]
    k = reduce[0] + 1  # the cell after a reduction reads the reduction's own p as its p, not the reduction's input
    assert lp[k].inputs == (lp[k - 1].output, lp[k - 1].inputs[1]) and lp[k - 1].inputs[1] != lp[k - 2].output
    assert lp[k + 1].inputs == (lp[k].output, lp[k - 1].output)


def test_every_target_keeps_the_invariants_and_the_output(ref):
    for target in TARGETS.values():
        plan = build_plan(MOBILE, target)
        check(plan)
        assert plan.passes == target.passes and plan.target == target.name
        assert [p.name for p in plan.parts()] == [p.name for p in ref.parts()]
        assert plan.node(plan.output).shape == ref.node(ref.output).shape
    assert len({build_plan(MOBILE, t).digest() for t in TARGETS.values()}) == len(TARGETS)


def test_passes_are_pure_and_the_digest_is_stable(ref):
    plan = ref
    for name in XNNPACK_INT8.passes:
        before = plan.to_dict()
        after = PASSES[name](plan)
        assert plan.to_dict() == before, name  # the input plan is left as it was
        plan = after
    max_pool_border_map(build_plan(MOBILE, XNNPACK_FP32))
    assert compile(MOBILE).digest() == ref.digest()
    json.dumps(build_plan(MOBILE, GPU).to_dict())  # serializable as the manifest records it
    assert compile(MOBILE.with_(num_classes=11)).digest() != ref.digest()


def test_fuse_factorized_makes_one_2x2_stride_2_conv_per_factorized_reduction(ref):
    plan = fuse_factorized(ref)
    check(plan)
    n_factorized = sum(1 for s in MOBILE.cells() if s.adjust == "factorized")
    fused = [n for n in plan.nodes if n.kind is Kind.CONV and n.kernel == (2, 2)]
    assert len(fused) == n_factorized == 4  # stem_2, the first normal cell, and one after each reduction
    assert count(plan)[Kind.SUBSAMPLE] == count(plan)[Kind.CROP] == 0
    assert all(f.stride == (2, 2) and f.weights.endswith("_fused") for f in fused)
    assert len([w for w in plan.weight_ops if isinstance(w, PackFactorized)]) == n_factorized
    # odd input: 'same' pads one zero row/column at the bottom/right, like the shifted second path
    odd = fuse_factorized(compile(MOBILE.with_(input_size=199)))
    assert {n.pad for n in odd.nodes if n.kind is Kind.CONV and n.kernel == (2, 2)} <= {(0, 1, 0, 1), NO_PAD}


def test_avgpool_as_dwconv_leaves_no_average_pool_and_corrects_the_count(ref):
    plan = avgpool_as_dwconv(ref)
    check(plan)
    pools = [n for n in ref.nodes if n.kind is Kind.AVG_POOL]
    assert count(plan)[Kind.AVG_POOL] == 0
    dws = [n for n in plan.nodes if n.kind is Kind.DEPTHWISE and n.const]
    assert len(dws) == len(pools) and all(d.const == ("fill", 1 / 9) for d in dws)
    # the count map only where 'same' pooling leaves padding out (stride 1 in Keras mode)
    same = [n for n in pools if n.pad_mode is PadMode.EXCLUDED]
    assert count(plan)[Kind.SCALE] == len(same) > 0
    slim = avgpool_as_dwconv(compile(MOBILE.with_(pooling=Pooling.SLIM)))
    assert count(slim)[Kind.SCALE] == len(pools)  # TF-slim's stride-2 average pools leave it out too


def test_same_padding_moves_conv_pads_into_the_conv_and_keeps_the_max_pools_zero_pad(ref):
    plan = same_padding(avgpool_as_dwconv(ref))
    check(plan)
    pads = [n for n in plan.nodes if n.kind is Kind.PAD]
    readers = {r for p in pads for r in plan.readers[p.name]}
    assert all(plan.node(r).kind in (Kind.MAX_POOL, Kind.CROP) for r in readers)  # zeros that take part in a max
    strided = [n for n in plan.nodes if n.kind is Kind.SEPARABLE and n.stride == (2, 2)]
    assert strided and all(n.pad == same_pad4(plan.node(n.inputs[0]).shape[:2], n.kernel, n.stride) for n in strided)


def test_merge_twin_pools_doubles_one_pool_per_normal_cell(ref):
    before = same_padding(avgpool_as_dwconv(ref))
    plan = merge_twin_pools(before)
    check(plan)
    normal = sum(1 for s in MOBILE.cells() if s.kind.value == "normal")
    assert count(before)[Kind.ADD] - count(plan)[Kind.ADD] == normal == 12
    assert sum(1 for n in plan.nodes if n.const == ("fill", 2 / 9)) == normal
    assert merge_twin_pools(ref).nodes == ref.nodes  # needs the depthwise form first


def test_split_large_dwconv_leaves_no_kernel_over_25_taps(ref):
    plan = split_large_dwconv(same_padding(ref))
    check(plan)
    assert all(n.kernel[0] * n.kernel[1] <= MAX_DW_TAPS for n in plan.nodes if n.kind in (Kind.DEPTHWISE, Kind.SEPARABLE))
    sevens = [n for n in ref.nodes if n.kind is Kind.SEPARABLE and n.kernel == (7, 7)]
    assert len([w for w in plan.weight_ops if isinstance(w, SplitSeparable)]) == len(sevens) == 16
    stride2 = [w for w in plan.weight_ops if isinstance(w, SplitSeparable) and w.stride == 2]
    assert len(stride2) == 8
    with pytest.raises(AssertionError, match="same_padding first"):
        split_large_dwconv(ref)  # the reference's stride-2 separable reads an explicit PAD


def conv_pads(plan: Plan) -> Counter:
    """Zero PADs read only by convolutions, keyed as TFLite's converter sees them: equal crops of one tensor are
    one tensor (it merges equal ops), so two equal keys become one PAD with two readers."""
    def source(name):
        n = plan.node(name)
        return ("crop", source(n.inputs[0]), n.pad) if n.kind is Kind.CROP else name

    return Counter((source(n.inputs[0]), n.pad) for n in plan.nodes
                   if n.kind is Kind.PAD and all(plan.node(r).kind in CONV_KINDS for r in plan.readers[n.name]))


@pytest.mark.parametrize("target", [XNNPACK_FP32, XNNPACK_INT8], ids=lambda t: t.name)
def test_distinct_pads_leaves_no_pad_the_converter_would_share(target):
    before = build_plan(MOBILE, target.without("distinct_pads"))
    after = build_plan(MOBILE, target)
    check(after)
    # without the pass: the two 7x7 stride-2 separables of each of the 4 reduction cells share 3 group pads
    assert sorted(conv_pads(before).values(), reverse=True)[:13] == [2] * 12 + [1]
    assert set(conv_pads(after).values()) == {1}
    changed = [(a, b) for a, b in zip(before.nodes, after.nodes) if a != b]
    assert len(changed) == 12 and len(after.nodes) == len(before.nodes)
    for a, b in changed:  # one row or column of padding more or less, after the input, that no window reads
        assert a.kind is b.kind is Kind.PAD and a.name == b.name
        assert sum(abs(x - y) for x, y in zip(a.pad, b.pad)) == 1 and a.pad[0] == b.pad[0] and a.pad[2] == b.pad[2]
        assert all(after.node(r).pad == NO_PAD for r in after.readers[b.name])  # readers keep their shapes: check()


def test_distinct_pads_leaves_pads_alone_where_a_row_would_be_read():
    """A stride-1 'valid' conv reads every row and column: no variant keeps its output, so the shared PAD stays."""
    ref = compile(SMALL)
    x = next(n for n in ref.nodes if n.kind is Kind.RELU)
    from dataclasses import replace as _replace

    from edge.model.plan import Node
    h, w, c = x.shape
    pads = [Node(f"pad{i}", Kind.PAD, (x.name,), (h + 2, w + 2, c), pad=(1, 1, 1, 1)) for i in range(2)]
    convs = [Node(f"dw{i}", Kind.DEPTHWISE, (f"pad{i}",), (h, w, c), (3, 3), weights=f"dw{i}") for i in range(2)]
    out = Node("sum", Kind.ADD, ("dw0", "dw1"), (h, w, c))
    i = ref.nodes.index(x) + 1
    plan = _replace(ref, nodes=ref.nodes[:i] + tuple(pads + convs + [out]), output="sum", include_top=False)
    assert distinct_pads(plan).nodes == plan.nodes
    strided = _replace(plan, nodes=tuple(_replace(n, stride=(2, 2), shape=(conv_out(h + 2, 3, 2, 0, 0),
                                                                           conv_out(w + 2, 3, 2, 0, 0), c))
                                         if n.kind is Kind.DEPTHWISE and n.name.startswith("dw") else n
                                         for n in plan.nodes))
    strided = _replace(strided, nodes=tuple(_replace(n, shape=strided.node("dw0").shape) if n.name == "sum" else n
                                            for n in strided.nodes))
    lowered = distinct_pads(strided)
    assert lowered.node("pad0").pad == (1, 1, 1, 1) and lowered.node("pad1").pad != (1, 1, 1, 1)
    check(lowered)


def test_relu_as_dwconv_leaves_only_relus_the_converter_fuses(ref):
    plan = relu_as_dwconv(ref)
    check(plan)
    for n in plan.nodes:
        if n.kind is Kind.RELU:
            producer = plan.node(n.inputs[0])
            assert producer.kind is Kind.BATCH_NORM and plan.readers[producer.name] == [n.name]
    converted = [n for n in plan.nodes if n.kind is Kind.DEPTHWISE and n.activation == "relu"]
    assert converted and all(n.kernel == (1, 1) and n.const == ("fill", 1.0) for n in converted)


def test_relu_before_concat_rectifies_cell_outputs_where_they_are_made():
    """relu(concat(a, b)) == concat(relu(a), relu(b)): every cell output is read only through ReLUs (the next
    cell's x, the one after's p, the head), so the pass moves them into the concat's inputs, where an ADD or
    constant MUL read by nothing else takes it as its fused activation (LiteRT int8 form). Float equality
    through both emitters: test_lowering.py."""
    from edge.model.passes import _is_relu

    before = build_plan(MOBILE, XNNPACK_INT8.without("relu_before_concat"))
    plan = build_plan(MOBILE, XNNPACK_INT8)
    check(plan)
    concats = {n.name for n in plan.nodes if n.kind is Kind.CONCAT}
    assert not [n for n in plan.nodes if _is_relu(n) and n.inputs[0] in concats]
    assert len([n for n in before.nodes if _is_relu(n) and n.inputs[0] in concats]) == 30
    for part in plan.parts()[1:-1]:  # every cell's output concat reads only rectified tensors
        inputs, seen = [part.output], []
        while inputs:
            n = plan.node(inputs.pop())
            if n.kind is Kind.CONCAT:
                inputs += n.inputs
            else:
                seen.append(n)
        assert all(_is_relu(n) or n.activation == "relu" for n in seen), part.name
    fused = [n for n in plan.nodes if n.activation == "relu" and not _is_relu(n)]
    assert {n.kind for n in fused} == {Kind.ADD, Kind.SCALE} and all(len(n.inputs) == 2 for n in fused
                                                                    if n.kind is Kind.ADD)

    def clamped(p: Plan) -> int:  # values a standalone clamp reads (a ReLU after a BN alone fuses into its conv)
        return sum(np.prod(n.shape) for n in p.nodes if _is_relu(n)
                   and not (p.node(n.inputs[0]).kind is Kind.BATCH_NORM and p.readers[n.inputs[0]] == [n.name]))

    assert clamped(plan) < 0.4 * clamped(before)
    # the plan's output keeps its name: features without the head end in the last concat's ReLU
    notop = compile(MOBILE, include_top=False)
    assert notop.node(notop.output).kind is Kind.RELU
    assert relu_before_concat(notop).node(notop.output) == notop.node(notop.output)


def test_share_relu_keeps_one_relu_per_tensor_and_part(ref):
    plan = share_relu(ref)
    check(plan)
    keys = [(n.part, n.inputs) for n in plan.nodes if n.kind is Kind.RELU]
    assert len(keys) == len(set(keys))
    assert count(ref)[Kind.RELU] - count(plan)[Kind.RELU] == 45  # 44 in the cells' ops, 1 in the first cell's base
    # the int8 form shares the depthwise ReLUs the same way
    int8 = build_plan(MOBILE, XNNPACK_INT8)
    keys = [(n.part, n.inputs) for n in int8.nodes if n.kind is Kind.DEPTHWISE and n.activation == "relu"]
    assert len(keys) == len(set(keys))


def test_split_concat_respects_xnnpack_arity(ref):
    plan = split_concat(ref)
    check(plan)
    assert max(len(n.inputs) for n in plan.nodes if n.kind is Kind.CONCAT) <= MAX_CONCAT_INPUTS
    six = [n for n in ref.nodes if n.kind is Kind.CONCAT and len(n.inputs) == 6]
    assert count(plan)[Kind.CONCAT] - count(ref)[Kind.CONCAT] == len(six) == 12  # 2 grouped, joined with 4


def test_max_pool_border_map_leaves_no_pad_feeding_a_max_pool():
    before = build_plan(MOBILE, XNNPACK_FP32.without("max_pool_border_map"))
    plan = max_pool_border_map(before)
    check(plan)
    # the float XNNPACK form (LiteRT fp32/fp16/dynamic, ExecuTorch fp32) and the GPU's have it; ExecuTorch's int8
    # form not (PT2E's XNNPACK partitioner takes MAXIMUM in fp32 only)
    assert build_plan(MOBILE, XNNPACK_FP32).nodes == build_plan(MOBILE, GPU).nodes == plan.nodes
    assert build_plan(MOBILE, XNNPACK_PT2E).nodes == before.nodes
    assert not [n for n in plan.nodes if n.kind is Kind.MAX_POOL and plan.node(n.inputs[0]).kind is Kind.PAD]
    maxima = [n for n in plan.nodes if n.kind is Kind.MAXIMUM]
    pools = [n for n in before.nodes if n.kind is Kind.MAX_POOL and n.pad_mode is PadMode.ZERO]
    assert len(maxima) == len(pools) > 0
    assert all(plan.node(m.inputs[0]).pad_mode is PadMode.EXCLUDED for m in maxima)


def test_share_max_pools_keeps_one_of_each_reduction_cells_equal_pools(ref):
    plan = share_max_pools(same_padding(ref))
    check(plan)
    before = [n for n in ref.nodes if n.kind is Kind.MAX_POOL]
    after = [n for n in plan.nodes if n.kind is Kind.MAX_POOL]
    assert len(before) == 8 and len(after) == 4  # reduction_left2 and reduction_right5 of each reduction cell
    assert {n.name.split("_")[1] for n in after} == {"left2"}
    for right in [n for n in before if "right5" in n.name]:  # its readers now read the left pool of its cell
        left = right.name.replace("right5", "left2")
        assert all(left in plan.node(r).inputs for r in ref.readers[right.name])
    assert share_max_pools(plan).nodes == plan.nodes


def test_max_pool_border_relu_replaces_each_max_pool_pad_by_a_mask_on_the_pooled_output():
    before = build_plan(MOBILE, XNNPACK_INT8.without("max_pool_border_relu"))
    plan = build_plan(MOBILE, XNNPACK_INT8)
    check(plan)
    assert not [n for n in plan.nodes if n.kind is Kind.MAX_POOL and plan.node(n.inputs[0]).kind is Kind.PAD]
    pools = [n for n in plan.nodes if n.kind is Kind.MAX_POOL]  # one per reduction cell (share_max_pools)
    assert len(pools) == 4 and all(n.pad_mode is PadMode.EXCLUDED for n in pools)
    for pool in pools:  # m -> SCALE(relu, mask) -> ADD(m, .), the ADD under the old pool's name (readers keep it)
        (mask,), (add,) = ([plan.node(r) for r in plan.readers[pool.name] if plan.node(r).kind is k]
                           for k in (Kind.SCALE, Kind.ADD))
        assert mask.activation == "relu" and mask.const[0] == "border_mask" and add.inputs == (pool.name, mask.name)
        assert add.name == pool.name.removesuffix("_same") and add.shape == pool.shape
    assert count(before)[Kind.PAD] - count(plan)[Kind.PAD] == 4
    assert max_pool_border_relu(plan).nodes == plan.nodes  # nothing left to rewrite


@pytest.mark.parametrize("hw", [7, 8, 9, 13, 28])
def test_border_mask_gives_the_zero_padded_max_pool_exactly(hw):
    from edge.model.config import same_pad
    from edge.model.plan import border_mask

    x = np.random.default_rng(hw).normal(-1.0, 1.0, (hw, hw, 3)).astype(np.float32)  # mostly negative

    def pool(a: np.ndarray) -> np.ndarray:
        oh, ow = (a.shape[0] - 3) // 2 + 1, (a.shape[1] - 3) // 2 + 1
        return np.max([a[i:i + 2 * oh:2, j:j + 2 * ow:2] for i in range(3) for j in range(3)], axis=0)

    (pt, pb), (pl, pr) = same_pad(hw, 3, 2), same_pad(hw, 3, 2)
    want = pool(np.pad(x, ((pt, pb), (pl, pr), (0, 0))))
    m = pool(np.pad(x, ((pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf))
    got = m + np.maximum(m * border_mask(hw, hw, 3, 2)[..., None], 0)
    assert np.array_equal(got, want) and (want == 0).any() and (want < 0).any()


def test_weight_transforms_round_trip_and_name_every_weighted_node():
    rng = np.random.default_rng(0)
    ref = compile(SMALL)
    weights = {}
    for n in ref.weighted():
        cin = ref.node(n.inputs[0]).shape[2]
        shapes = {Kind.CONV: [n.kernel + (cin, n.shape[2])],
                  Kind.SEPARABLE: [n.kernel + (cin, 1), (1, 1, cin, n.shape[2])],
                  Kind.BATCH_NORM: [(n.shape[2],)] * 4, Kind.DENSE: [(cin, n.shape[2]), (n.shape[2],)]}[n.kind]
        weights[n.weights] = [rng.normal(size=s).astype(np.float32) for s in shapes]
    for target in TARGETS.values():
        plan = build_plan(SMALL, target)
        lowered = plan.lower_weights(weights)
        assert {n.weights for n in plan.weighted()} <= set(lowered), target.name
        back = plan.raise_weights(lowered)
        assert set(back) == set(weights)
        for k in weights:
            for a, b in zip(back[k], weights[k]):
                np.testing.assert_array_equal(a, b)


def test_costs_are_counted_from_the_nodes(ref):
    macs = compile(nasnet_mobile()).macs()
    assert sum(macs.values()) == 563_638_816  # NASNet-Mobile's multiply-adds at 224 px (1000 classes)
    assert macs["stem"] == 111 * 111 * 32 * 27  # 3x3 stride 2 'valid' on 224 px
