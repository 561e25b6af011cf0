"""``python -m converters.executorch``: fp32 and int8 XNNPACK programs that load, run and agree."""

from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_module
from edge.preprocessing import list_images, preprocess_batch
from edge.runtime.runners import ExecuTorchRunner, ModelError, open_model
from edge.model.verify import sample_images_dir


def test_fp32_program_is_fully_delegated_and_matches_eager(pte_fp32, pte_dir):
    assert pte_fp32["artifact"] == "nasnet_mobile_edge_xnnpack_fp32.pte"
    assert pte_fp32["delegation"]["ops_outside"] == 0, pte_fp32["delegation"]
    v = pte_fp32["validation"]
    assert v["max_abs_prob_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
    # the count maps are NHWC constants (torch_emit) and the input is channels-last (--input-layout nhwc): the
    # one transpose left is the pooled features' (1xCx1x1, before the classifier)
    assert pte_fp32["delegation"]["detail"]["xnnpack_nodes"]["StaticTranspose"] == 1
    assert pte_fp32["io"]["layout"] == "NHWC"


def test_int8_program_loads_runs_and_agrees_with_fp32(pte_int8, pte_fp32, pte_dir):
    """The stock flow fails to load (StaticConstantPad); ours loads, is fully delegated and agrees."""
    assert pte_int8["delegation"]["ops_outside"] == 0, pte_int8["delegation"]
    # all int8 inside XNNPACK: the only converts are the program's input and output (no fp32 islands)
    detail = pte_int8["delegation"]["detail"]
    assert detail["xnnpack_converts"] == 2, detail["xnnpack_nodes"]
    assert detail["xnnpack_nodes"]["StaticTranspose"] == 1, detail["xnnpack_nodes"]  # as in fp32
    assert pte_int8["quantization"]["fp32_parts"] == []
    assert pte_int8["validation"]["top1_agreement"] >= 0.9
    samples = list_images(sample_images_dir())
    r8 = open_model(pte_dir / pte_int8["artifact"])
    r32 = open_model(pte_dir / pte_fp32["artifact"])
    assert isinstance(r8, ExecuTorchRunner) and r8.labels == pte_int8["labels"]
    p8 = r8.probabilities(preprocess_batch(samples, r8.preprocessing))
    p32 = r32.probabilities(preprocess_batch(samples, r32.preprocessing))
    clear = p32.max(1) >= 0.6
    assert clear.sum() >= 10 and (p8[clear].argmax(1) == p32[clear].argmax(1)).all()


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_pad_annotation_shares_quantization_with_its_input():
    """The root-cause fix: pads and the max pools after them keep their input's quantization (XNNPACK requires it)."""
    import torch

    from converters.executorch import nasnet_xnnpack_quantizer
    from edge.model.config import nasnet_mobile
    from edge.model.torch_emit import build_torch_model
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = build_torch_model(nasnet_mobile(num_classes=10, input_size=64), "xnnpack_pt2e")  # ExecuTorch's int8 form
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


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_int8_pads_lower_as_int8_xnnpack_pads_not_fp32_islands():
    """Root-cause pin (ExecuTorch 1.5.1 ``ConstantPadConfig`` takes pads in fp32 only): with the stock configs
    an int8 pad is lowered between two XNNPACK converts (int8 -> fp32 -> int8); with ours it stays int8, so
    XNNPACK folds it into the depthwise convolution. Counted in the decoded XNNPACK payload."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    import converters.executorch as cx
    from converters.common import Precision

    class PadThenDepthwise(nn.Module):  # NASNet's stride-2 separable conv: conv, ReLU, asymmetric pad, dw
        def __init__(self):
            super().__init__()
            self.conv, self.pw = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
            self.dw = nn.Conv2d(8, 8, 3, 2, groups=8)

        def forward(self, x):
            return self.pw(self.dw(F.pad(F.relu(self.conv(x)), (0, 1, 0, 1))))

    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    calibration = [(torch.randn(1, 8, 16, 16),) for _ in range(4)]

    def lower():
        edge = cx.export_program(PadThenDepthwise().eval(), (x,), Precision.INT8, calibration, "xnnpack",
                                 progress=False)
        return cx.delegation_report(edge)

    ours = lower()
    assert ours.partitions == 1 and ours.detail["xnnpack_nodes"]["StaticConstantPad"] == 1, ours
    assert ours.detail["xnnpack_converts"] == 2, ours  # the program's input and output only
    original = cx.partitioner_for
    try:
        cx.partitioner_for = lambda backend: XnnpackPartitioner(configs=ALL_PARTITIONER_CONFIGS)
        stock = lower()
    finally:
        cx.partitioner_for = original
    # if this fails, upstream takes int8 pads now: nasnet_xnnpack_configs() can go
    assert stock.detail["xnnpack_converts"] == 4, stock


@pytest.mark.slow  # exports two programs (seconds each)
def test_channels_last_input_skips_the_input_transpose_and_every_runner_feeds_the_declared_order(tmp_path,
                                                                                                monkeypatch):
    """The converter's xnnpack default (--input-layout nhwc): a channels-last example input gives a program whose
    input has dim order (0, 2, 3, 1) and one StaticTranspose fewer than an NCHW one (XNNPACK's channels-last pass
    tags the input NHWC). ExecuTorch copies input bytes without checking their order, so the runners read the
    order from the program: predict and execute (even given a contiguous NCHW tensor), and the board runner's
    classify, give the eager network's answers for both layouts, while raw NCHW bytes into the NHWC program do not."""
    import numpy as np
    import torch

    from benchmarks.remote_runner import classify
    from conftest import small_nasnet
    from converters.common import Precision
    from converters.executorch import delegation_report, export_program, image_tuples, write_program
    from edge.artifact.pte_inputs import CHANNELS_LAST, program_inputs

    cfg, model = small_nasnet(lowered=True)
    images = np.random.default_rng(3).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    nchw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        want = model(nchw).numpy()
    transposes, paths = {}, {}
    for layout, order in (("NHWC", CHANNELS_LAST), ("NCHW", (0, 1, 2, 3))):
        (x,) = image_tuples(images[:1], layout)[0]
        edge = export_program(model, (x,), Precision.FP32, None, "xnnpack", progress=False)
        transposes[layout] = delegation_report(edge).detail["xnnpack_nodes"].get("StaticTranspose", 0)
        paths[layout] = path = tmp_path / f"{layout}.pte"
        write_program(edge, path)
        assert program_inputs(path) == [((1, 3, 48, 48), order)]
    probed_together(list(paths.values()), monkeypatch)
    assert transposes["NHWC"] == transposes["NCHW"] - 1, transposes
    # the hazard the runners guard against: NCHW bytes into the NHWC program answer for another image
    raw = ExecuTorchRunner(paths["NHWC"]).method.execute((nchw[:1].contiguous(),))[0].numpy()
    wrong = np.abs(raw - want[:1]).max()
    assert wrong > 1e-4, wrong
    for layout, path in paths.items():
        r = ExecuTorchRunner(path)
        assert r.layout == layout
        for got, ref in ((r.predict(images), want), (r.execute(nchw[:1])[0].numpy(), want[:1]),
                         (classify(str(path), images)[1], want)):
            assert np.abs(got - ref).max() < wrong / 20, (layout, np.abs(got - ref).max(), wrong)


def test_program_inputs_reads_the_declared_dim_order_and_rejects_what_is_no_program(tmp_path, pte_fp32, pte_dir):
    from edge.artifact.pte_inputs import CHANNELS_LAST, program_inputs, takes_channels_last

    assert program_inputs(pte_dir / pte_fp32["artifact"]) == [((1, 3, 224, 224), CHANNELS_LAST)]
    assert takes_channels_last(pte_dir / pte_fp32["artifact"])
    for i, junk in enumerate((b"", b"\0" * 100, b"\xff" * 64)):
        (tmp_path / f"{i}.pte").write_bytes(junk)
        with pytest.raises(ValueError):
            program_inputs(tmp_path / f"{i}.pte")


def test_corrupt_pte_gives_a_clear_error(tmp_path):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(ModelError, match="ExecuTorch cannot load it"):
        ExecuTorchRunner(bad)


@pytest.mark.parametrize("args", [["--backend", "qnn"], ["--weights", "missing.pt"],
                                  ["--calibration", "/nonexistent", "--int8"], ["--int8", "--fp32-parts", "cell_99"]])
def test_bad_inputs_give_one_line_errors(tmp_path, args):
    r = run_module("converters.executorch", "--output", tmp_path, *args)
    assert_one_line_error(r)
    assert not list(tmp_path.glob("*.pte"))


def probed_together(paths, monkeypatch) -> None:
    """Load the programs ``paths`` once in one child process, as ``ExecuTorchRunner`` loads a program without a
    manifest in a child process of its own before loading it here (a crash there fails the test, not the test
    process): one Python start and ExecuTorch import (seconds) for all the per-cell programs, not one each.
    Runners of these paths skip their own probe after this; a failure leaves them to run it (and name the file)."""
    import os
    import subprocess
    import sys

    from edge.runtime import runners  # where ExecuTorchRunner looks the probe up

    script = ("import sys\nfrom executorch.runtime import Runtime\n"
              "for p in sys.argv[1:]:\n    Runtime.get().load_program(p).load_method('forward')\n")
    r = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0:
        return
    probed = {str(p) for p in paths}
    probe = runners.probe_in_subprocess
    monkeypatch.setattr(runners, "probe_in_subprocess",
                        lambda path, *a, **k: None if str(path) in probed else probe(path, *a, **k))


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_per_cell_programs_are_delegated_and_reproduce_the_network(tmp_path, monkeypatch):
    """`--cells` on a small NASNet-A (same genotypes, fewer filters): every part is its own fully delegated
    program, and fp32 parts fed the whole network's activations give the whole network's activations. A
    two-input cell exported int8 (calibrated on the network's activations there) stays close to them."""
    import numpy as np
    import torch

    from conftest import small_nasnet
    from converters.common import Precision
    from converters.executorch import export_cells
    from edge.model.torch_emit import part_feeds, torch_parts

    cfg, model = small_nasnet(lowered=True)
    images = np.random.default_rng(0).uniform(-1, 1, (6, 48, 48, 3)).astype(np.float32)
    x = torch.from_numpy(images[:1].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        feeds = part_feeds(model, x)
        expected = [part(*f) for (_, part), f in zip(torch_parts(model), feeds)]
    assert torch.allclose(expected[-1], model(x), atol=1e-5)

    listing = export_cells(model, Precision.FP32, None, "xnnpack", tmp_path / "fp32", progress=False)
    names = [p.name for p in listing.parts]
    assert names[0] == "stem" and names[-1] == "head" and len(names) == len(cfg.cells()) + 2
    assert listing.parts[2].inputs == [list(feeds[2][0].shape[1:]), list(feeds[2][1].shape[1:])]
    assert listing.total_macs > 0 and all(p.macs > 0 for p in listing.parts)
    listing8 = export_cells(model, Precision.INT8, images, "xnnpack", tmp_path / "int8", progress=False,
                            only={names[2]})
    (part8,) = listing8.parts
    files = [tmp_path / "fp32" / "cells" / p.file for p in listing.parts]
    probed_together([*files, tmp_path / "int8" / "cells" / part8.file], monkeypatch)

    for part, path, f, want in zip(listing.parts, files, feeds, expected):
        assert part.delegation.partitions == 1 and part.delegation.ops_outside == 0, part
        got = ExecuTorchRunner(path).execute(*f)[0]
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4), part.name

    assert part8.index == 2 and part8.delegation.ops_outside == 0, part8
    got = ExecuTorchRunner(tmp_path / "int8" / "cells" / part8.file).execute(*feeds[2])[0]
    sqnr = 10 * torch.log10(expected[2].pow(2).sum() / (expected[2] - got).pow(2).sum())
    assert sqnr > 15, float(sqnr)


@pytest.mark.slow  # exports or compiles (tens of seconds)
def test_fp32_parts_stay_float_inside_the_single_delegate_partition(tmp_path):
    """`--fp32-parts stem,cell_00`: ops of those parts get no quantization annotation (they run fp32), all
    other parts do, and XNNPACK still takes the whole mixed program as one partition that runs."""
    import numpy as np
    import torch

    from conftest import small_nasnet
    from converters.common import Precision
    from converters.executorch import (export_program, image_tuples, nasnet_xnnpack_quantizer, part_module_names,
                                       write_program)

    cfg, model = small_nasnet(lowered="xnnpack_pt2e")  # the form ExecuTorch's converter quantizes
    modules = part_module_names("stem,cell_00", len(cfg.cells()))
    assert modules == ("stem", "cells.0") and part_module_names("none", 4) == ()
    with pytest.raises(ValueError, match="unknown part 'cell_09'"):
        part_module_names("cell_09", len(cfg.cells()))

    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 48)).astype(np.float32))
    gm = torch.export.export(model, (x,), strict=False).module()
    annotated = nasnet_xnnpack_quantizer(modules).annotate(gm)

    def part_of(node):
        paths = [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]
        return "float" if any(p.startswith(("stem", "cells.0.")) or p == "cells.0" for p in paths) else "int8"

    counts = {"float": [0, 0], "int8": [0, 0]}  # [ops, annotated ops]
    for n in annotated.graph.nodes:
        if n.op == "call_function" and "conv" in str(n.target):
            c = counts[part_of(n)]
            c[0] += 1
            c[1] += "quantization_annotation" in n.meta
    assert counts["float"][0] > 5 and counts["float"][1] == 0, counts
    assert counts["int8"][0] > 5 and counts["int8"][1] == counts["int8"][0], counts

    images = np.random.default_rng(1).uniform(-1, 1, (4, 48, 48, 3)).astype(np.float32)
    # (one range method: the 'auto' choice between two is tested in test_quantization.py)
    edge = export_program(model, (x,), Precision.INT8, image_tuples(images), "xnnpack", progress=False,
                          float_modules=modules, ranges="mse")
    from converters.executorch import delegation_report

    report = delegation_report(edge)
    assert report.partitions == 1 and report.ops_outside == 0, report
    write_program(edge, tmp_path / "mixed.pte")
    got = ExecuTorchRunner(tmp_path / "mixed.pte").execute(x)[0]
    with torch.no_grad():
        want = model(x)
    sqnr = 10 * torch.log10(want.pow(2).sum() / (want - got).pow(2).sum())
    assert sqnr > 10, float(sqnr)

    # --cells follows the same choice: those parts are exported fp32 in an int8 per-cell export
    from converters.executorch import export_cells

    listing = export_cells(model, Precision.INT8, images, "xnnpack", tmp_path / "cells", progress=False,
                           only={"stem"}, fp32_parts=("stem", "cell_00"))
    assert [(p.name, p.precision) for p in listing.parts] == [("stem", "fp32")]
    assert listing.parts[0].delegation.detail["xnnpack_converts"] == 0  # the program itself is float


def tiny_cnn():
    """A convolution, a depthwise convolution, a max pool and a concat (NASNet's op kinds), in eval mode: a
    plain CNN that exports and lowers in seconds."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return torch.cat([self.dw(y), torch.nn.functional.max_pool2d(y, 3, 1, 1)], 1).mean((2, 3))

    return Tiny().eval()


@pytest.mark.slow  # exports small programs twice each (tens of seconds)
def test_skipped_lowering_steps_are_no_ops_and_the_rest_still_run():
    """``skip_no_op_lowering_steps``: the decomposition and XNNPACK passes it skips change nothing (the same
    program bytes with and without it), and a graph that has what a pass rewrites (a 1-D convolution) still
    gets that pass. When upstream stops re-tracing for passes that match nothing, the list of
    skips can go (the bytes will still agree)."""
    import contextlib
    from unittest import mock

    import torch

    from converters.common import Precision
    from converters.executorch import export_program, skip_no_op_lowering_steps

    class WithConv1d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(3, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean(2)

    class WithPReLU(torch.nn.Module):  # and a BatchNorm, which XNNPACK's FuseBatchNormPass folds
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.act = torch.nn.PReLU(8)

        def forward(self, x):
            return self.act(self.bn(self.conv(x))).mean((2, 3))

    def program(make, shape, precision, skip: bool) -> tuple[bytes, list]:
        torch.manual_seed(0)
        model, skipped = make().eval(), []
        calib = [(torch.randn(*shape),) for _ in range(4)] if precision is Precision.INT8 else None
        real = skip_no_op_lowering_steps
        ours = mock.patch("converters.executorch.skip_no_op_lowering_steps", lambda: real(skipped))
        upstream = mock.patch("converters.executorch.skip_no_op_lowering_steps", contextlib.nullcontext)
        with ours if skip else upstream:
            edge = export_program(model, (torch.randn(*shape),), precision, calib, "xnnpack", progress=False,
                                  ranges="mse")
            return edge.to_executorch().buffer, skipped

    fast, skipped = program(tiny_cnn, (1, 3, 16, 16), Precision.INT8, True)
    assert fast == program(tiny_cnn, (1, 3, 16, 16), Precision.INT8, False)[0]
    assert {"ConvertToSDPAPass", "ConvertToUpsampleBilinear2d", "Conv1dUnsqueezePass", "PReLUReshapePass",
            "DimOrderOpsRevertPass", "FuseBatchNormPass", "DecomposeBatchNorm", "RemoveGetItemPass",
            "PropagateCustomMetaPass"} <= set(skipped), skipped
    assert any(s.startswith("run_decompositions") for s in skipped), skipped

    fast, skipped = program(WithConv1d, (1, 3, 16), Precision.FP32, True)
    assert "Conv1dUnsqueezePass" not in skipped and "ConvertToSDPAPass" in skipped, skipped
    assert fast == program(WithConv1d, (1, 3, 16), Precision.FP32, False)[0]
    # PReLUReshapePass rewrites aten._prelu_kernel, which nn.PReLU no longer exports as (torch 2.13: aten.prelu,
    # which XNNPACK takes as it is): skipped, and the program is the same
    fast, skipped = program(WithPReLU, (1, 3, 16, 16), Precision.FP32, True)
    assert "PReLUReshapePass" in skipped and "FuseBatchNormPass" not in skipped, skipped
    assert fast == program(WithPReLU, (1, 3, 16, 16), Precision.FP32, False)[0]


@pytest.mark.slow  # exports a small program twice (tens of seconds)
def test_shared_node_provenance_keeps_the_history_and_the_program(tmp_path):
    """The lowering speed-up (``shared_node_provenance``): upstream deep-copies a node's whole provenance
    into every new NodeSource (torch 2.13; when this first assertion fails, upstream shares it and the
    workaround can go); ours shares the same ancestors, and a program lowered with it is byte-identical."""
    import contextlib
    from unittest import mock

    import torch
    from torch.fx import traceback as fx_traceback

    from converters.common import Precision
    from converters.executorch import export_program, shared_node_provenance

    gm = torch.export.export(tiny_cnn(), (torch.randn(1, 3, 16, 16),), strict=False).module()
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    node.meta["from_node"] = [fx_traceback.NodeSource(node, "first")]
    deep = fx_traceback.NodeSource(node, "second")
    with shared_node_provenance():
        shared = fx_traceback.NodeSource(node, "second")
    assert deep.from_node[0] is not node.meta["from_node"][0]  # upstream: a deep copy
    assert shared.from_node[0] is node.meta["from_node"][0]  # ours: the same ancestor
    assert shared.to_dict() == deep.to_dict() and len(node.meta["from_node"]) == 1

    def program(share: bool) -> bytes:
        torch.manual_seed(0)
        model = tiny_cnn()
        x = torch.randn(1, 3, 16, 16)
        calib = [(torch.randn(1, 3, 16, 16),) for _ in range(4)]
        upstream = mock.patch("converters.executorch.shared_node_provenance", contextlib.nullcontext)
        with contextlib.nullcontext() if share else upstream:
            edge = export_program(model, (x,), Precision.INT8, calib, "xnnpack", progress=False, ranges="mse")
            return edge.to_executorch().buffer

    assert program(True) == program(False)


def test_relus_and_slices_of_one_tensor_are_merged_before_lowering(monkeypatch):
    """Each cell output is read through a ReLU by the next two cells, and the 7x7 separables of a reduction cell cut
    the same slices; TFLite's converter merges such ops, torch.export does not, and XNNPACK then runs both as
    standalone Clamps and copies. The exporter merges them (not pads, which XNNPACK folds into one reader only): the
    program has fewer Clamp and slice nodes than one exported without the merge, every pad still one reader, and
    computes the same."""
    import torch

    import converters.executorch as ex
    from conftest import small_nasnet
    from converters.common import Precision

    cfg, model = small_nasnet(lowered=True)
    example = (torch.zeros(1, 3, 48, 48),)
    ep = torch.export.export(model, example, strict=False)
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    removed = ex.merge_equal_ops(ep.graph_module)
    assert removed > 0
    nodes = list(ep.graph_module.graph.nodes)
    relu_inputs = [n.args[0] for n in nodes if "relu" in str(n.target)]
    slices = [n.args for n in nodes if "slice" in str(n.target)]
    assert len(relu_inputs) == len(set(relu_inputs)) and len(slices) == len(set(slices))
    assert all(len(n.users) == 1 for n in nodes if "pad" in str(n.target))
    with torch.no_grad():
        assert torch.equal(ep.module()(x), model(x))
    merged = ex.delegation_report(ex.export_program(model, example, Precision.FP32, None, "xnnpack", progress=False))
    monkeypatch.setattr(ex, "merge_equal_ops", lambda gm: 0)
    unmerged = ex.delegation_report(ex.export_program(model, example, Precision.FP32, None, "xnnpack", progress=False))
    kept = {k: (merged.detail["xnnpack_nodes"].get(k, 0), unmerged.detail["xnnpack_nodes"].get(k, 0))
            for k in ("Clamp", "StaticSlice")}
    # a merged ReLU that is now its producer's only reader is fused into it: more Clamps may go than were merged
    assert kept["Clamp"][0] + kept["StaticSlice"][0] <= kept["Clamp"][1] + kept["StaticSlice"][1] - removed, kept
