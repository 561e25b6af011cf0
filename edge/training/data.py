"""ImageNet-style folders (``<split>/<class>/*.jpg``) as in-memory uint8 tensors, and batch augmentation.

Decoding once and augmenting whole batches with one ``grid_sample`` keeps the two CPU cores on the
network instead of on JPEG decoding and per-image Python.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import label_for_folder
from edge.preprocessing import ImageError, center_crop_box, list_images, load_rgb

log = logging.getLogger(__name__)


class DataError(UserError):
    """A data folder that cannot be used; the message says what is wrong."""


@dataclass
class ImageFolder:
    """Class subfolders of ``root``: sorted folder names are the class order."""

    root: Path
    classes: list[str]
    files: list[Path]
    targets: list[int]

    @property
    def labels(self) -> list[str]:
        return [label_for_folder(c) for c in self.classes]

    @classmethod
    def scan(cls, root: str | Path) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataError(f"{root}: no class subfolders; expected {root}/<class>/*.jpg")
        files, targets = [], []
        for i, c in enumerate(classes):
            imgs = list_images(root / c)
            files += imgs
            targets += [i] * len(imgs)
        if not files:
            raise DataError(f"{root}: class folders hold no images ({', '.join(classes[:3])}...)")
        return cls(root, classes, files, targets)

    def subset(self, every: int, offset: int = 0) -> "ImageFolder":
        return ImageFolder(self.root, self.classes, self.files[offset::every], self.targets[offset::every])


def decode_square(folder: ImageFolder, size: int, progress: bool = True):
    """All images as a uint8 NHWC array (center square of the shorter side, resized to ``size``).

    Unreadable images are skipped and counted. Returns (images, targets, n_skipped).
    """
    import cv2
    from tqdm import tqdm

    images = np.empty((len(folder.files), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(folder.files), dtype=bool)
    for i, path in enumerate(tqdm(folder.files, desc=f"decode {folder.root.name}", unit="img",
                                  disable=not progress, leave=False)):
        try:
            rgb = load_rgb(path)
        except ImageError as e:
            log.warning("skipping %s", e)
            continue
        top, left, side = center_crop_box(rgb.shape[0], rgb.shape[1], 1.0)
        images[i] = cv2.resize(rgb[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
        keep[i] = True
    targets = np.asarray(folder.targets, dtype=np.int64)
    return images[keep], targets[keep], int((~keep).sum())


def to_float(batch_u8, scale: float, offset: float):
    """uint8 NHWC -> float NCHW in the model's range."""
    import torch

    return batch_u8.permute(0, 3, 1, 2).float() * scale + offset


def random_resized_crop(x, out_size: int, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True,
                        generator=None):
    """Batch RandomResizedCrop + horizontal flip with one affine ``grid_sample`` (bilinear)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device), (n, x.shape[1], out_size, out_size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def center_resize(x, out_size: int, crop_fraction: float):
    """Evaluation view: center crop ``crop_fraction`` then bilinear resize (as edge.preprocessing)."""
    import torch.nn.functional as F

    size = x.shape[-1]
    top, left, side = center_crop_box(size, size, crop_fraction)
    x = x[:, :, top:top + side, left:left + side]
    return F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
