"""Desktop demo: headless on real footage, bounded frames, the right label, a summary and a timeline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, run_module, shipped_photos


@pytest.fixture(scope="module")
def parachute_video(tmp_path_factory) -> Path:
    """A video made of real photos of one of the default model's classes: the 20 shipped validation photos of
    parachutes (Imagenette val), 3 frames each, at 30 fps: 60 frames."""
    files = shipped_photos("validation", "n03888257")
    assert len(files) == 20
    path = tmp_path_factory.mktemp("video") / "parachutes.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
    for f in files:
        frame = cv2.resize(cv2.imread(str(f)), (320, 240))
        for _ in range(3):
            writer.write(frame)
    writer.release()
    return path


def test_demo_classifies_a_video_headless_and_writes_the_summary(parachute_video, tmp_path):
    out_json = tmp_path / "demo.json"
    out_mp4 = tmp_path / "annotated.mp4"
    # --realtime: the file is delivered at its 30 fps like a camera, so most frames get classified
    r = run_module("edge.demo", "--source", parachute_video, "--headless", "--json", out_json, "--output", out_mp4,
                   "--max-frames", "60", "--realtime")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out_json.read_text())
    s = res["summary"]
    assert s["frames_read"] == 60 and s["frames_classified"] >= 20
    assert s["frames_classified"] + s["frames_dropped"] == s["frames_read"]
    assert s["most_frequent_label"] == "parachute", s
    assert res["timeline"][0].keys() == {"frame", "label", "probability"}
    # default: the bundled int8 model (its manifest says so)
    assert json.loads(Path(REPO, s["model"] + ".json").read_text())["precision"] == "int8"
    cap = cv2.VideoCapture(str(out_mp4))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s["frames_classified"]
    assert "classified FPS" in r.stdout


def test_demo_reads_a_folder_of_images(tmp_path):
    src = REPO / "edge" / "assets" / "samples"
    r = run_module("edge.demo", "--source", src, "--headless", "--json", tmp_path / "d.json", "--smoothing", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "d.json").read_text())["summary"]
    assert s["frames_read"] == 30


@pytest.mark.parametrize("source,expect", [("7", "camera 7"), ("missing.mp4", "no such"), ("corrupt", "cannot open")])
def test_demo_bad_sources_are_one_line(tmp_path, source, expect):
    if source == "corrupt":
        source = tmp_path / "corrupt.mp4"
        source.write_bytes(b"not a video at all")
    r = run_module("edge.demo", "--source", source, "--headless")
    assert_one_line_error(r)
    assert expect in r.stderr


def test_demo_rejects_an_unsupported_model(tmp_path):
    r = run_module("edge.demo", "--source", REPO / "edge" / "assets" / "samples", "--headless", "--model",
                   REPO / "README.md")
    assert_one_line_error(r)
