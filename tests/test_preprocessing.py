"""One preprocessing for every input kind, and label decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge.model.config import Preprocessing
from edge.labels import imagenet_labels, top_k
from edge.preprocessing import ImageError, center_crop_box, load_rgb, preprocess


@pytest.fixture
def photo(real_images):
    return real_images[0]


def test_path_bgr_frame_and_pil_give_the_same_tensor(photo):
    import cv2

    pre = Preprocessing()
    a = preprocess(photo, pre)
    b = preprocess(cv2.imread(str(photo)), pre)  # OpenCV BGR frame
    c = preprocess(Image.open(photo), pre)
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert -1.0 <= a.min() and a.max() <= 1.0


def test_grayscale_and_rgba_are_converted(photo, tmp_path):
    im = Image.open(photo)
    gray = tmp_path / "g.png"
    im.convert("L").save(gray)
    rgba = tmp_path / "a.png"
    im.convert("RGBA").save(rgba)
    g = preprocess(gray, Preprocessing())
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 1], g[..., 2])
    np.testing.assert_allclose(preprocess(rgba, Preprocessing()), preprocess(photo, Preprocessing()), atol=1e-6)
    assert preprocess(Image.open(photo).convert("LA"), Preprocessing()).shape == (224, 224, 3)


@pytest.mark.parametrize("bad", ["missing.jpg", "empty.jpg", "text.jpg"])
def test_bad_images_raise_a_clear_error(tmp_path, bad):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg|empty.jpg|missing.jpg"):
        load_rgb(tmp_path / bad)
    with pytest.raises(ImageError):
        load_rgb(np.zeros((0, 0, 3), np.uint8))


def test_center_crop_is_square_and_centered():
    assert center_crop_box(160, 160, 0.875) == (10, 10, 140)
    assert center_crop_box(360, 640, 1.0) == (0, 140, 360)


def test_imagenet_labels_ship_in_the_package_and_decode_top_k():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[701] == "parachute"
    p = np.zeros(1000)
    p[[574, 3, 9]] = [0.7, 0.2, 0.1]
    top = top_k(p, labels, 2)
    assert [(t.index, t.label) for t in top] == [(574, "golf ball"), (3, "tiger shark")]
    assert top[0].probability == pytest.approx(0.7)
    with pytest.raises(ValueError):
        top_k(np.ones(10), labels)
