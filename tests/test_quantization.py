"""Quantization-aware fine-tuning (edge.training.quant_aware) and the int8 sensitivity report (benchmarks.quantization)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_module, small_nasnet


def sqnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(a.pow(2).sum() / (a - b).pow(2).sum()))


@pytest.fixture()
def small_model():
    return small_nasnet(num_classes=4)[1]


def test_fake_quant_points_simulate_int8_and_switch_off(small_model):
    from edge.training.quant_aware import FakeQuantPoints

    x = torch.rand(4, 3, 48, 48) * 2 - 1
    small_model.eval()
    with torch.no_grad():
        float_out = small_model(x)
    fq = FakeQuantPoints(small_model, observe_only_steps=1)
    # depthwise outputs, every BatchNorm, pools, cells and the stem
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in small_model.modules())
    assert len(fq) > n_bn + len(small_model.cells)
    with torch.no_grad():
        assert torch.equal(small_model(x), float_out)  # no ranges observed yet: float
    small_model.train()
    small_model(x)  # observe only
    out = small_model(x)  # simulated int8, with gradients through the rounding (straight-through)
    out.sum().backward()
    grads = [p.grad for p in small_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    small_model.eval()
    with torch.no_grad():
        bn_stats = {k: v.clone() for k, v in small_model.state_dict().items()}
        fq.enabled = False
        float_now = small_model(x)
        fq.enabled = True
        simulated = small_model(x)
    assert not torch.equal(simulated, float_now)
    assert sqnr(float_now, simulated) > 10
    assert set(small_model.state_dict()) == set(bn_stats)  # no extra parameters or buffers in the saved model
    fq.remove()
    with torch.no_grad():
        assert torch.equal(small_model(x), float_now)


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_quantization_report_on_a_small_network(small_model):
    from benchmarks.quantization import noise_budget, per_cell_sqnr, to_markdown

    small_model.eval()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, 48, 48, 3)).astype(np.float32)
    images = rng.uniform(-1, 1, (10, 48, 48, 3)).astype(np.float32)
    budget = noise_budget(small_model, calibration, images)
    assert [r["int8"] for r in budget][0] == "weights (per channel)" and len(budget) == 5
    for r in budget:
        assert 0 < r["logit_sqnr_db"] < 80 and 0 <= r["top1_agreement"] <= 1, r
    # all three activation classes together cost more than any one alone
    assert budget[-1]["logit_sqnr_db"] <= min(r["logit_sqnr_db"] for r in budget[1:4]) + 0.5
    cells = per_cell_sqnr(small_model, calibration, images)
    assert [c["name"] for c in cells] == ["stem"] + [s.name for s in small_model.specs] + ["logits"]
    assert all(0 < c["sqnr_db"] < 80 for c in cells) and "top1_agreement" in cells[-1]
    md = to_markdown({"weights": "random", "command": "test", "images": 10, "data": "random",
                      "calibration": {"count": 8}, "per_cell": cells, "noise_budget": budget})
    assert "| logits |" in md and "weights (per channel)" in md


def test_quantization_report_rejects_a_missing_folder(tmp_path):
    r = run_module("benchmarks.quantization", "--data", tmp_path / "nope", "--output", tmp_path / "o")
    assert_one_line_error(r)


def test_mse_range_clips_rare_outliers_and_keeps_dense_ranges():
    """converters.ranges: one outlier no longer sets the int8 step; ReLU ranges keep 0; uniform data keeps
    (almost) its whole range. The chosen range has lower quantization error than min/max on the values."""
    from converters.ranges import RangeHistograms, mse_range

    rng = np.random.default_rng(0)

    def quant_mse(v, a, b):
        step = (b - a) / 255
        return float(((np.round((np.clip(v, a, b) - a) / step) * step + a - v) ** 2).mean())

    def chosen(v):
        h = RangeHistograms({0: (float(v.min()), float(v.max()))})
        h.add(0, v)
        return h.best_ranges()[0]

    # one outlier among 2M values (an activation tensor over 100 images has tens of millions)
    v = np.concatenate([rng.normal(0, 1, 2_000_000), [40.0]])
    a, b = chosen(v)
    assert b < 0.5 * v.max() and a < 0 and quant_mse(v, a, b) < 0.5 * quant_mse(v, v.min(), v.max())
    few = np.concatenate([rng.normal(0, 1, 20_000), [40.0]])  # in 20k values the outlier matters: kept
    a, b = chosen(few)
    assert b > 0.5 * few.max() and quant_mse(few, a, b) <= quant_mse(few, few.min(), few.max())
    relu = np.maximum(rng.normal(0, 1, 100_000), 0)
    a, b = chosen(relu)
    assert a == 0.0 and 0 < b <= relu.max()
    flat = rng.uniform(-3, 5, 100_000)
    a, b = chosen(flat)
    assert a <= -0.9 * 3 and b >= 0.9 * 5
    assert mse_range(np.zeros(16), -1.0, 1.0) == (-1.0, 1.0)  # nothing observed: unchanged


def test_mse_range_prefix_sums_equal_the_direct_sum_over_bins():
    """The O(1)-per-candidate error (prefix sums) picks the same range as summing every bin directly."""
    from converters import ranges

    rng = np.random.default_rng(1)

    def direct(counts, lo, hi):
        centers = lo + (np.arange(len(counts)) + 0.5) * (hi - lo) / len(counts)
        los = lo * ranges._GRID if lo < 0 else np.array([lo])
        his = hi * ranges._GRID if hi > 0 else np.array([hi])
        best, arg = np.inf, None
        for a in los:
            for b in his:
                if b <= a:
                    continue
                clipped = np.clip(centers, a, b)
                err = ((centers - clipped) ** 2 + (clipped == centers) * ((b - a) / 255) ** 2 / 12) @ counts
                if err < best:
                    best, arg = err, (float(a), float(b))
        return arg

    for lo, hi in [(-3.0, 5.0), (0.0, 7.0), (-145.0, 64.0)]:
        counts = rng.poisson(rng.gamma(0.3, 50, 512)).astype(float)
        assert ranges.mse_range(counts, lo, hi) == pytest.approx(direct(counts, lo, hi))


def test_mean_ranges_keep_the_step_of_typical_images_when_one_image_has_massive_activations():
    """v1's cell 12: one calibration image in 100 reaches -145 where the others stay within +-8. The mean of
    each image's own range keeps the typical images' rounding error far lower than the global range."""
    rng = np.random.default_rng(2)
    images = [rng.normal(0, 2, 5000) for _ in range(99)] + [rng.normal(0, 2, 5000) * 40]

    def err(v, a, b):
        step = (b - a) / 255
        return float(((np.round((np.clip(v, a, b) - a) / step) * step + a - v) ** 2).mean())

    glob = (min(v.min() for v in images), max(v.max() for v in images))
    mean = (np.mean([v.min() for v in images]), np.mean([v.max() for v in images]))
    typical = np.concatenate(images[:99])
    assert mean[1] - mean[0] < 0.2 * (glob[1] - glob[0])
    assert err(typical, *mean) < 0.1 * err(typical, *glob)


@pytest.mark.slow  # converts a small network through TensorFlow (tens of seconds)
def test_auto_ranges_choose_the_mean_when_one_calibration_input_has_massive_activations(tmp_path):
    """converters.tflite end to end on a small 1000-class NASNet (nothing Imagenette-specific): one of 24
    calibration inputs drives every tensor ~30x past the others, as one photo drives v1's cell 12. With the
    error-minimizing ranges that one input sets the step of every tensor; the default 'auto' measures both
    candidates on the calibration inputs, keeps the mean of per-image ranges, and the int8 network stays
    much closer to the float one on ordinary inputs it never saw."""
    from converters.common import Precision, compare
    from converters.tflite import convert_keras
    from edge.model.keras_emit import emit_keras, load_keras_weights
    from edge.model.passes import build_plan
    from edge.runtime.runners import LiteRTRunner

    cfg, model = small_nasnet(num_classes=1000, realistic_bn=False)
    plan = build_plan(cfg, "xnnpack_int8")
    weights = plan.lower_weights(model.keras_weights())
    keras_model = emit_keras(plan, classifier_activation=None)
    load_keras_weights(keras_model, weights)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (24, 48, 48, 3)).astype(np.float32)
    calibration[7] *= 30  # the massive one
    ordinary = rng.uniform(-1, 1, (32, 48, 48, 3)).astype(np.float32)
    reference = np.asarray(keras_model.predict(ordinary, verbose=0))
    auto, candidates = {}, {}
    flat = convert_keras(keras_model, Precision.INT8, calibration, "float", progress=False, ranges="auto",
                         report=auto, candidates=candidates)
    assert auto["method"] == "mean" and set(auto["chosen_from"]) == set(candidates) == {"mse", "mean"}, auto
    assert flat == candidates["mean"] and auto["tensors"] > 50
    sqnr = {}
    for method, model_bytes in (("mse", candidates["mse"]), ("auto", flat)):
        path = tmp_path / f"{method}.tflite"
        path.write_bytes(model_bytes)
        sqnr[method] = compare(reference, LiteRTRunner(path).predict(ordinary))["logit_sqnr_db"]
    assert auto["chosen_from"]["mean"]["median_kl"] < auto["chosen_from"]["mse"]["median_kl"]
    assert sqnr["auto"] > sqnr["mse"] + 6, sqnr


def test_executorch_activation_observers_use_the_error_minimizing_or_mean_range():
    """converters.executorch --activation-ranges: the observers the XNNPACK quantizer gets compute their
    range with converters.ranges (mse) or as the mean of per-call ranges (mean); weights untouched."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    from converters.executorch import activation_range_config
    from converters.ranges import mse_range

    base = get_symmetric_quantization_config(is_per_channel=True)
    rng = np.random.default_rng(3)
    calls = [torch.from_numpy(rng.normal(0, 1, 20000).astype(np.float32)) for _ in range(9)]
    calls.append(torch.from_numpy((rng.normal(0, 1, 20000) * 30).astype(np.float32)))

    mse = activation_range_config(base, "mse")
    assert mse.weight is base.weight
    obs = mse.input_activation.observer_or_fake_quant_ctr()
    for x in calls:
        obs(x)
    lo, hi = obs._non_linear_param_search()
    assert (float(lo), float(hi)) == pytest.approx(
        mse_range(obs.histogram.numpy(), float(obs.min_val), float(obs.max_val)))
    scale_mse = float(obs.calculate_qparams()[0])

    mean = activation_range_config(base, "mean").output_activation.observer_or_fake_quant_ctr()
    for x in calls:
        mean(x)
    assert mean._range()[1] == pytest.approx(np.mean([float(x.max()) for x in calls]), rel=1e-5)
    scale_mean = float(mean.calculate_qparams()[0])
    global_scale = (max(float(x.max()) for x in calls) - min(float(x.min()) for x in calls)) / 255
    assert scale_mean < 0.5 * global_scale and scale_mse < global_scale


def test_validation_agreement_carries_a_95_percent_interval_and_warns_when_too_wide():
    from converters.common import compare, interval_warning, wilson_interval

    lo, hi = wilson_interval(195, 200)
    assert 0.94 < lo < 0.95 and 0.985 < hi < 0.99  # 97.5% on 200 images: +-2-3 points
    ref = np.eye(10)[np.arange(200) % 10] * 5
    got = ref.copy()
    got[:5] = np.roll(got[:5], 1, axis=1)  # 5 of 200 disagree
    v = compare(ref, got)
    assert v["top1_agreement"] == 0.975 and v["top1_agreement_ci95"] == [round(lo, 4), round(hi, 4)]
    w = interval_warning(v)
    assert w and "--validation DIR" in w and "200 images" in w
    big = compare(np.tile(ref, (20, 1)), np.tile(got, (20, 1)))  # same rate on 4000 images: +-0.5 point
    assert interval_warning(big) is None


def test_range_pass_feeds_each_interpreter_input_its_keras_input():
    """A per-cell part has inputs x and p; LiteRT may list them in another order than Keras."""
    from converters.ranges import _input_order

    def details(*names):
        return [{"name": f"serving_default_{n}:0"} for n in names]

    assert _input_order(details("x", "p"), ["x", "p"]) == [0, 1]
    assert _input_order(details("p", "x"), ["x", "p"]) == [1, 0]
    assert _input_order(details("a", "b"), ["x", "p"]) == [0, 1]  # no match: in order
