"""``python -m converters.executorch``: fp32 and int8 XNNPACK programs that load, run and agree."""

from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_module
from edge.preprocessing import list_images, preprocess_batch
from edge.runtime import ExecuTorchRunner, ModelError, open_model
from edge.verify import sample_images_dir


def test_fp32_program_is_fully_delegated_and_matches_eager(pte_fp32, pte_dir):
    assert pte_fp32["artifact"] == "nasnet_mobile_edge_xnnpack_fp32.pte"
    assert pte_fp32["delegation"]["outside_ops"] == 0, pte_fp32["delegation"]
    v = pte_fp32["validation"]
    assert v["max_abs_prob_diff"] <= 1e-4 and v["top1_agreement"] == 1.0


def test_int8_program_loads_runs_and_agrees_with_fp32(pte_int8, pte_fp32, pte_dir):
    """The stock flow fails to load (StaticConstantPad); ours loads, is fully delegated and agrees."""
    assert pte_int8["delegation"]["outside_ops"] == 0, pte_int8["delegation"]
    assert pte_int8["validation"]["top1_agreement"] >= 0.9
    samples = list_images(sample_images_dir())
    r8 = open_model(pte_dir / pte_int8["artifact"])
    r32 = open_model(pte_dir / pte_fp32["artifact"])
    assert isinstance(r8, ExecuTorchRunner) and r8.labels == pte_int8["labels"]
    p8 = r8.probabilities(preprocess_batch(samples, r8.preprocessing))
    p32 = r32.probabilities(preprocess_batch(samples, r32.preprocessing))
    clear = p32.max(1) >= 0.6
    assert clear.sum() >= 10 and (p8[clear].argmax(1) == p32[clear].argmax(1)).all()


def test_pad_annotation_shares_quantization_with_its_input():
    """The root-cause fix: pads and the max pools after them keep their input's quantization (XNNPACK requires it)."""
    import torch

    from converters.executorch import nasnet_xnnpack_quantizer
    from edge.config import nasnet_mobile
    from edge.torch_model import build_torch_model
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = build_torch_model(nasnet_mobile(num_classes=10, input_size=64), lowered=True)
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_pt2e(torch.export.export(model, (x,), strict=False).module(), nasnet_xnnpack_quantizer())
    prepared(x)
    graph = convert_pt2e(prepared).graph
    pads = [n for n in graph.nodes if n.op == "call_function" and ("pad" in str(n.target) or "max_pool" in str(n.target))]
    assert any("max_pool" in str(n.target) for n in pads) and any("pad" in str(n.target) for n in pads)
    for pad in pads:
        dq = pad.args[0]
        qs = [u for u in pad.users if "quantize_per_tensor" in str(u.target)]
        assert "dequantize" in str(dq.target)
        for q in qs:
            assert q.args[1:3] == dq.args[1:3], (pad.name, dq.args[1:3], q.args[1:3])


def test_corrupt_pte_gives_a_clear_error(tmp_path):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(ModelError, match="ExecuTorch cannot load it"):
        ExecuTorchRunner(bad)


@pytest.mark.parametrize("args", [["--backend", "qnn"], ["--weights", "missing.pt"], ["--calibration", "/nonexistent",
                                                                                       "--int8"]])
def test_bad_inputs_give_one_line_errors(tmp_path, args):
    r = run_module("converters.executorch", "--output", tmp_path, *args)
    assert_one_line_error(r)
    assert not list(tmp_path.glob("*.pte"))
