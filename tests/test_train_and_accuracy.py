"""Training on real images, the shipped default model, and accuracy evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SHARED_DATA, assert_one_line_error, run_module
from edge.models import default_model_path, resolve_weights


@pytest.fixture(scope="module")
def tiny_imagenette(tmp_path_factory) -> Path:
    """3 real classes x 12 train / 4 val photos, from ../shared or the package's own photos."""
    root = tmp_path_factory.mktemp("tiny")
    src_train = SHARED_DATA / "imagenette" / "train"
    if src_train.is_dir():
        classes = sorted(p.name for p in src_train.iterdir())[:3]
        for split, n in (("train", 12), ("val", 4)):
            for c in classes:
                (root / split / c).mkdir(parents=True)
                for f in sorted((SHARED_DATA / "imagenette" / split / c).iterdir())[:n]:
                    shutil.copy(f, root / split / c / f.name)
    else:  # the package's calibration (train) and sample (val) photos, grouped by wnid prefix
        pkg = Path(__file__).resolve().parents[1] / "edge" / "assets"
        for split, folder in (("train", "calibration"), ("val", "samples")):
            for f in sorted((pkg / folder).iterdir())[:40]:
                d = root / split / f.name[:9]
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, d / f.name)
    return root


def test_training_a_tiny_config_lowers_the_loss_on_real_images(tiny_imagenette, tmp_path):
    from edge.train import build_parser, train

    args = build_parser().parse_args(["--data", str(tiny_imagenette), "--output", str(tmp_path), "--epochs", "4",
                                      "--image-size", "64", "--batch-size", "12", "--lr", "0.02", "--quiet",
                                      "--warmup-epochs", "0", "--schedule", "constant", "--no-augment"])
    result = train(args)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0], losses
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert (tmp_path / "curve.png").stat().st_size > 1000
    src = resolve_weights(tmp_path / "best.pt")
    assert src.config.input_size == 224 and src.config.num_classes == 3
    assert src.labels[0] in ("tench", "English springer", "cassette player")


def test_training_resumes_from_its_last_checkpoint(tiny_imagenette, tmp_path):
    from edge.train import build_parser, train

    base = ["--data", str(tiny_imagenette), "--output", str(tmp_path), "--image-size", "64", "--batch-size", "12",
            "--quiet", "--limit", "0"]
    train(build_parser().parse_args(base + ["--epochs", "1"]))
    result = train(build_parser().parse_args(base + ["--epochs", "2", "--resume"]))
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_training_rejects_a_folder_without_splits(tmp_path):
    r = run_module("edge.train", "--data", tmp_path, "--output", tmp_path / "o")
    assert_one_line_error(r)


def test_default_model_ships_with_manifest_and_recognizes_real_photos():
    path = default_model_path()
    assert path.is_file()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["dataset"].startswith("Imagenette") and manifest["input_size"] == 224
    assert len(manifest["labels"]) == 10 and manifest["val_top1"] >= 0.8
    src = resolve_weights("default")
    assert src.labels == manifest["labels"]


def test_accuracy_of_the_default_model_on_a_real_subset(tmp_path):
    data = SHARED_DATA / "imagenette" / "val"
    if not data.is_dir():
        data = tmp_path / "val"
        pkg = Path(__file__).resolve().parents[1] / "edge" / "assets" / "samples"
        for f in pkg.iterdir():
            (data / f.name[:9]).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, data / f.name[:9] / f.name)
    out = tmp_path / "acc.json"
    r = run_module("benchmarks.accuracy", "--data", data, "--limit", "200", "--json", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    top1 = res["results"][0]["top1"]
    assert res["images"] == 200 and top1 >= 0.6  # chance is 0.1
    assert out.with_suffix(".md").is_file() and "| default |" in out.with_suffix(".md").read_text()


def test_accuracy_reports_mismatched_classes_and_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_module("benchmarks.accuracy", "--data", tmp_path / "empty"))
    other = tmp_path / "other" / "zebra"
    other.mkdir(parents=True)
    shutil.copy(next((Path(__file__).resolve().parents[1] / "edge" / "assets" / "samples").iterdir()), other / "a.jpg")
    r = run_module("benchmarks.accuracy", "--data", tmp_path / "other")
    assert_one_line_error(r)
    assert "zebra" in r.stderr


def test_quantization_aware_training_records_the_simulated_int8_accuracy(tiny_imagenette, tmp_path):
    from edge.train import build_parser, train

    args = build_parser().parse_args(["--data", str(tiny_imagenette), "--output", str(tmp_path), "--epochs", "1",
                                      "--image-size", "64", "--batch-size", "12", "--quiet", "--quant-aware"])
    result = train(args)
    rec = result["history"][-1]
    assert 0 <= rec["val_top1_int8_simulated"] <= 1 and 0 <= rec["val_top1"] <= 1
    # the saved model is a plain float model: it loads like any other
    src = resolve_weights(tmp_path / "best.pt")
    assert src.config.num_classes == 3


def test_distillation_and_time_budget_shape_the_run_and_final_pt_is_written(tiny_imagenette, tmp_path):
    from edge.train import build_parser, train

    base = ["--data", str(tiny_imagenette), "--image-size", "64", "--batch-size", "12", "--quiet",
            "--no-augment", "--device", "cpu", "--schedule", "constant", "--warmup-epochs", "0"]
    plain = train(build_parser().parse_args(base + ["--output", str(tmp_path / "a"), "--epochs", "1"]))
    # a time budget already spent after epoch 1 stops the run there, though --epochs asks for 5
    distilled = train(build_parser().parse_args(base + ["--output", str(tmp_path / "b"), "--epochs", "5",
                                                         "--distill", "0.5", "--time-budget", "0.01"]))
    assert len(distilled["history"]) == 1
    # same seed, same batches: only the KL term to the frozen teacher can change the loss
    assert distilled["history"][0]["train_loss"] != pytest.approx(plain["history"][0]["train_loss"], rel=1e-4)
    final = resolve_weights(tmp_path / "b" / "final.pt")
    assert final.config.num_classes == 3 and final.config.input_size == 224
