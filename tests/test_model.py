"""The foundation: genotypes, both builders, official-layout weights and exact parity with Keras."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge.model.config import Pooling, nasnet_mobile
from edge.model.genotypes import NASNET_A_NORMAL, NASNET_A_REDUCTION, CellKind, Genotype, Op
from edge.model.keras_emit import build_keras_model, load_keras_weights
from edge.model.sources import load_torch_model, resolve_weights
from edge.preprocessing import preprocess_batch
from edge.model.torch_emit import build_torch_model, count_parameters
from edge.model.weights import WeightsError, keras_model_weights, read_keras_h5

from conftest import REPO

SOFTMAX_TOL = 1e-5


def softmax_torch(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)), 1).numpy()


def test_nasnet_a_genotypes_follow_tf_slim():
    assert NASNET_A_NORMAL.inputs == (0, 1, 1, 1, 0, 1, 1, 1, 0, 0)
    assert NASNET_A_REDUCTION.inputs == (0, 1, 0, 1, 0, 1, 3, 2, 2, 0)
    assert NASNET_A_NORMAL.concat == (1, 2, 3, 4, 5, 6)
    assert NASNET_A_REDUCTION.concat == (3, 4, 5, 6)
    # stride 2 exactly for the reduction ops that read the cell inputs
    assert [NASNET_A_REDUCTION.stride(i) for i in range(10)] == [2, 2, 2, 2, 2, 2, 1, 1, 1, 2]
    assert len(Op) == 13


@pytest.mark.parametrize("bad", [
    dict(ops=(Op.IDENTITY,), inputs=(0,), concat=(1,)),  # one op per block
    dict(ops=(Op.IDENTITY, Op.IDENTITY), inputs=(0, 2), concat=(1,)),  # reads a state not made yet
    dict(ops=(Op.IDENTITY, Op.IDENTITY), inputs=(0, 1), concat=(5,)),  # concat of a missing state
])
def test_invalid_genotypes_are_rejected(bad):
    with pytest.raises(ValueError):
        Genotype(name="bad", kind=CellKind.NORMAL, **bad)


def test_cell_shapes_are_computed_from_the_config():
    cfg = nasnet_mobile()
    assert cfg.filters == 44
    shapes = [s.out_shape for s in cfg.cells()]
    assert shapes[0] == (56, 56, 44) and shapes[1] == (28, 28, 88)
    assert shapes[2:6] == [(28, 28, 264)] * 4 and shapes[6] == (14, 14, 352)
    assert shapes[7:11] == [(14, 14, 528)] * 4 and shapes[11] == (7, 7, 704)
    assert shapes[12:] == [(7, 7, 1056)] * 4
    assert cfg.feature_channels == cfg.penultimate_filters


def test_torch_parameter_count_matches_keras():
    model = build_torch_model(nasnet_mobile())
    assert count_parameters(model) == 5_326_716
    assert len(model.keras_layers()) == 389


def test_keras_builder_matches_keras_applications_layer_for_layer(keras_reference):
    ours = build_keras_model(nasnet_mobile())
    ref = {l.name: [tuple(w.shape) for w in l.weights] for l in keras_reference.layers if l.weights}
    got = {l.name: [tuple(w.shape) for w in l.weights] for l in ours.layers if l.weights}
    assert len(ref) == 389
    assert got == ref
    assert ours.count_params() == keras_reference.count_params() == 5_326_716


def test_official_layout_is_read_by_name_with_scopes_and_suffixes(official_h5, keras_reference):
    weights = read_keras_h5(official_h5)
    assert len(weights) == 389
    ref = keras_model_weights(keras_reference)
    for name in ("stem_conv1", "separable_conv_1_reduction_left4_stem_1", "adjust_bn_0", "predictions"):
        for a, b in zip(weights[name], ref[name]):
            np.testing.assert_array_equal(a, b)


def test_parity_with_keras_applications_at_224(official_h5, keras_reference, real_images):
    """The parity test of the foundation issue: official layout in, softmax within 1e-5 for both builders."""
    cfg = nasnet_mobile()
    x = preprocess_batch(real_images, cfg.preprocessing)
    ref = keras_reference.predict(x, verbose=0)
    torch_model, src = load_torch_model(str(official_h5))
    assert src.kind == "keras_h5"
    ours = build_keras_model(cfg)
    load_keras_weights(ours, read_keras_h5(official_h5))
    d_torch = np.abs(softmax_torch(torch_model, x) - ref).max()
    d_keras = np.abs(ours.predict(x, verbose=0) - ref).max()
    assert d_torch <= SOFTMAX_TOL, d_torch
    assert d_keras <= SOFTMAX_TOL, d_keras
    assert (softmax_torch(torch_model, x).argmax(1) == ref.argmax(1)).all()


def test_headless_parity_at_an_odd_input_size(official_no_top_h5, real_images):
    import keras

    size = 199  # odd sizes change every stride-2 padding (Keras correct_pad)
    ref = keras.applications.NASNetMobile(weights=None, include_top=False, input_shape=(size, size, 3))
    ref.load_weights(str(official_no_top_h5))
    cfg = nasnet_mobile(input_size=size)
    x = preprocess_batch(real_images[:4], cfg.preprocessing)
    want = ref.predict(x, verbose=0)
    tm, _ = load_torch_model(str(official_no_top_h5), include_top=False, input_size=size)
    with torch.inference_mode():
        got = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    ours = build_keras_model(cfg, include_top=False)
    load_keras_weights(ours, read_keras_h5(official_no_top_h5))
    scale = np.abs(want).max()
    assert got.shape == want.shape == (4, 7, 7, 1056)
    assert np.abs(got - want).max() / scale <= 1e-5
    assert np.abs(ours.predict(x, verbose=0) - want).max() / scale <= 1e-5


def test_slim_pooling_differs_from_keras_and_both_builders_agree(official_h5, real_images):
    """TF-slim 'SAME' pooling is a separate mode: same weights, different borders, same in both builders."""
    weights = read_keras_h5(official_h5)
    cfg = nasnet_mobile(pooling=Pooling.SLIM)
    x = preprocess_batch(real_images[:4], cfg.preprocessing)
    tm = build_torch_model(cfg)
    tm.load_keras_weights(weights)
    km = build_keras_model(cfg)
    load_keras_weights(km, weights)
    slim = softmax_torch(tm, x)
    assert np.abs(slim - km.predict(x, verbose=0)).max() <= SOFTMAX_TOL
    keras_mode = build_torch_model(nasnet_mobile())
    keras_mode.load_keras_weights(weights)
    with torch.inference_mode():
        a = keras_mode.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))
        b = tm.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert (a - b).abs().max() > 1e-3  # the pooling trap is real


def test_custom_class_count_in_both_builders(official_h5, real_images):
    tm, src = load_torch_model(str(official_h5), num_classes=7)
    assert tm.head.layers["predictions"].out_features == 7 and len(src.labels) == 7
    km = build_keras_model(src.config)
    load_keras_weights(km, tm.keras_weights())
    x = preprocess_batch(real_images[:3], src.config.preprocessing)
    assert np.abs(softmax_torch(tm, x) - km.predict(x, verbose=0)).max() <= SOFTMAX_TOL


def test_every_search_space_op_builds_and_agrees_across_builders():
    """A cell that uses all 13 operations (and concat combine) runs identically in both frameworks."""
    from edge.model.config import NASNetConfig
    from edge.model.genotypes import Combine

    ops = list(Op)
    normal = Genotype(name="all_ops_normal", kind=CellKind.NORMAL,
                      ops=(Op.SEP_CONV_3X3, Op.SEP_CONV_5X5, Op.SEP_CONV_7X7, Op.CONV_1X1, Op.CONV_3X3,
                           Op.CONV_1X3_3X1, Op.CONV_1X7_7X1, Op.DIL_CONV_3X3, Op.AVG_POOL_3X3, Op.MAX_POOL_3X3,
                           Op.MAX_POOL_5X5, Op.MAX_POOL_7X7, Op.IDENTITY, Op.IDENTITY),
                      inputs=(0, 1, 0, 1, 2, 3, 0, 1, 0, 1, 0, 1, 4, 5), concat=(2, 3, 4, 5, 6, 7, 8))
    reduction = Genotype(name="all_ops_reduction", kind=CellKind.REDUCTION,
                         ops=(Op.IDENTITY, Op.CONV_1X7_7X1, Op.MAX_POOL_5X5, Op.DIL_CONV_3X3),
                         inputs=(0, 1, 0, 1), concat=(2, 3), combine=Combine.CONCAT)
    assert {*normal.ops, *reduction.ops} == set(ops)
    cfg = NASNetConfig(name="all_ops", penultimate_filters=7 * 4 * 8, num_blocks=1, stem_filters=8,
                       normal=normal, reduction=reduction, num_classes=5).with_(input_size=67)
    tm = build_torch_model(cfg)
    km = build_keras_model(cfg)
    load_keras_weights(km, tm.keras_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 67, 67, 3)).astype(np.float32)
    assert np.abs(softmax_torch(tm, x) - km.predict(x, verbose=0)).max() <= SOFTMAX_TOL


def test_toolkit_weights_round_trip(tmp_path, official_h5):
    from edge.model.weights import save_toolkit_weights

    tm, _ = load_torch_model(str(official_h5))
    save_toolkit_weights(tmp_path / "m.pt", tm, {"labels": ["x"] * 1000})
    again, src = load_torch_model(str(tmp_path / "m.pt"))
    assert src.kind == "toolkit"
    for (k, a), b in zip(tm.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_imagenet_weights_missing_names_the_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        resolve_weights("imagenet")
    msg = str(e.value)
    assert "NASNet-mobile.h5" in msg and str(tmp_path / "models" / "nasnet_mobile.h5") in msg
    assert "\n" not in msg


def test_imagenet_weights_are_found_in_the_keras_cache(tmp_path, monkeypatch, official_h5):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nasnet_mobile.h5").write_bytes(official_h5.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    src = resolve_weights("imagenet")
    assert src.kind == "imagenet" and len(src.keras_weights) == 389


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.verify", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_verify_cli_passes_on_an_official_layout_file(official_h5):
    r = run_verify("--weights", str(official_h5), "--limit", "6")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cell_15_normal_12" in r.stdout and "PASS" in r.stdout and "softmax max abs diff" in r.stdout


@pytest.mark.parametrize("content", [b"", b"this is not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_verify_cli_rejects_a_corrupt_file_in_one_line(tmp_path, content):
    bad = tmp_path / "NASNet-mobile.h5"
    bad.write_bytes(content)
    r = run_verify("--weights", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_verify_cli_rejects_a_file_of_another_network(tmp_path):
    import keras

    from edge.model.weights import save_keras_model_as_h5

    other = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    path = tmp_path / "mobilenet.h5"
    save_keras_model_as_h5(other, path)
    r = run_verify("--weights", str(path))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["mobile", "large", "small_custom"])
def test_configurations_and_preprocessing_round_trip_exactly(name, tmp_path):
    """A saved configuration reloads as itself (a NASNet-Large one used to reload as NASNet-Mobile)."""
    from dataclasses import replace

    from edge.model.config import NASNetConfig, Preprocessing, nasnet_large, nasnet_mobile
    from edge.model.sources import config_from_dict, resolve_weights

    cfg = {"mobile": nasnet_mobile(), "large": nasnet_large(num_classes=7, pooling="slim"),
           "small_custom": nasnet_mobile(num_classes=5).with_(penultimate_filters=96, num_blocks=1, stem_filters=32,
                                                               input_size=48)}[name]
    assert NASNetConfig.from_dict(cfg.to_dict()) == cfg == config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    pre = replace(Preprocessing(), channel_order="BGR", layout="NCHW", crop_fraction=1.0)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    if name == "small_custom":  # and through a toolkit weights file, as a custom-class model is saved
        from conftest import small_nasnet
        from edge.model.weights import save_toolkit_weights

        small_cfg, model = small_nasnet(num_classes=5)
        save_toolkit_weights(tmp_path / "m.pt", model, {"labels": list("abcde")})
        src = resolve_weights(tmp_path / "m.pt")
        assert src.config == small_cfg and src.labels == list("abcde")


def test_the_keras_builder_and_the_lowering_do_not_import_torch():
    """Which earlier output a cell reads, and how it is adjusted, is decided once (``CellSpec.adjust``):
    the lowering no longer imports the PyTorch builder, and the Keras side loads without PyTorch."""
    code = ("import sys, edge.model.plan, edge.model.passes, edge.model.keras_emit; "
            "print(sorted(m for m in ('torch', 'edge.model.torch_emit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_artifact_names_come_from_the_configuration():
    """Both converters name artifacts by the network they convert, not a hard-coded NASNet-Mobile."""
    from converters.common import artifact_base
    from edge.model.config import nasnet_large

    assert artifact_base(nasnet_mobile(num_classes=10), lowered=True) == "nasnet_mobile_edge"
    assert artifact_base(nasnet_large(), lowered=False) == "nasnet_large_stock"
    assert artifact_base(nasnet_large(), lowered=True, name="mine") == "mine"
