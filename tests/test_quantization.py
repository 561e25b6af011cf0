"""Quantization-aware fine-tuning (edge.quant_aware) and the int8 sensitivity report (benchmarks.quantization)."""

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
    from edge.quant_aware import FakeQuantPoints

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


def test_range_pass_feeds_each_interpreter_input_its_keras_input():
    """A per-cell part has inputs x and p; LiteRT may list them in another order than Keras."""
    from converters.ranges import _input_order

    def details(*names):
        return [{"name": f"serving_default_{n}:0"} for n in names]

    assert _input_order(details("x", "p"), ["x", "p"]) == [0, 1]
    assert _input_order(details("p", "x"), ["x", "p"]) == [1, 0]
    assert _input_order(details("a", "b"), ["x", "p"]) == [0, 1]  # no match: in order
