"""The one preprocessing definition: any image in, the network's input tensor out.

Used by every runtime wrapper, the converters' calibration and validation, the benchmarks, the demo,
and mirrored line by line by the Android core module (``android_demo/core``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from edge.model.config import Preprocessing
from edge.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageLike = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


class ImageError(UserError):
    """An input that is not a usable image; the message says which and why."""


def load_rgb(image: ImageLike, *, bgr: bool = True) -> np.ndarray:
    """Any supported input as an HxWx3 uint8 RGB array.

    Paths are decoded with OpenCV; ndarrays are taken as OpenCV frames (BGR, the order
    ``cv2.VideoCapture`` gives) unless ``bgr=False``; PIL images are converted from their mode.
    Grayscale and alpha channels are converted; empty or unreadable inputs raise :class:`ImageError`.
    """
    import cv2

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{path}: no such image file")
        data = np.fromfile(path, dtype=np.uint8)
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if arr is None:
            raise ImageError(f"{path}: not a readable image (empty, truncated or not an image format)")
        bgr = True
    elif hasattr(image, "mode") and hasattr(image, "convert"):  # PIL
        arr = np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB"))
        bgr = False
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}: pass a path, a PIL image or an array")
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise ImageError(f"empty or malformed image array of shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2 or arr.shape[2] == 1:
        return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise ImageError(f"image with {arr.shape[2]} channels; expected 1, 3 or 4")
    return np.ascontiguousarray(arr[:, :, ::-1] if bgr else arr)


def center_crop_box(height: int, width: int, fraction: float) -> tuple[int, int, int]:
    """(top, left, side) of the centered square covering ``fraction`` of the shorter side."""
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side


def preprocess(image: ImageLike, pre: Preprocessing, *, bgr: bool = True) -> np.ndarray:
    """One image as a float32 (size, size, 3) array: center crop, bilinear resize, x*scale+offset."""
    import cv2

    rgb = load_rgb(image, bgr=bgr)
    top, left, side = center_crop_box(rgb.shape[0], rgb.shape[1], pre.crop_fraction)
    crop = rgb[top:top + side, left:left + side]
    resized = cv2.resize(crop, (pre.size, pre.size), interpolation=cv2.INTER_LINEAR)
    return resized.astype(np.float32) * np.float32(pre.scale) + np.float32(pre.offset)


def preprocess_batch(images, pre: Preprocessing, *, bgr: bool = True) -> np.ndarray:
    """NHWC float32 batch."""
    return np.stack([preprocess(im, pre, bgr=bgr) for im in images])


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` by extension, sorted for reproducibility."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


# Camera frames: Android's YUV_420_888 is full-range BT.601 (JFIF). The Android core module
# (android_demo/core) decodes with the same coefficients; these two functions are the reference.
def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YUV 4:2:0 planes (H x W, H/2 x W/2, H/2 x W/2) to uint8 RGB."""
    yy = y.astype(np.float32)
    cb = np.repeat(np.repeat(u.astype(np.float32) - 128, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    cr = np.repeat(np.repeat(v.astype(np.float32) - 128, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    rgb = np.stack([yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray):
    """uint8 RGB (even H and W) to full-range BT.601 planes, chroma averaged over 2x2 blocks."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    h, w = y.shape

    def sub(c):
        return c[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    to8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)  # noqa: E731
    return to8(y), to8(sub(cb)), to8(sub(cr))
