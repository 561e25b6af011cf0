"""Class labels: the ImageNet-1k list shipped in the package, and per-model label lists."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from edge.errors import UserError


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((wnid, short name), ...) in ImageNet-1k index order (sorted wnids, as Keras/TF-slim/PyTorch)."""
    text = resources.files("edge").joinpath("assets/labels/imagenet1k_classes.tsv").read_text()
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    return tuple((r["wnid"], r["clean_name"]) for r in rows)


def imagenet_labels() -> list[str]:
    return [name for _, name in imagenet_classes()]


@functools.lru_cache(maxsize=1)
def wnid_to_imagenet() -> dict[str, tuple[int, str]]:
    return {wnid: (i, name) for i, (wnid, name) in enumerate(imagenet_classes())}


def label_for_folder(name: str) -> str:
    """Readable label for a class folder: the ImageNet name for a WordNet id, else the folder name."""
    hit = wnid_to_imagenet().get(name)
    return hit[1] if hit else name


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def top_k(probabilities: np.ndarray, labels: list[str], k: int = 5) -> list[Prediction]:
    """Top-k of one probability vector as (index, label, probability), best first."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(labels) != p.size:
        raise UserError(f"model has {p.size} outputs but {len(labels)} labels; give a labels file with one name per output")
    k = min(k, p.size)
    idx = np.argsort(-p, kind="stable")[:k]
    return [Prediction(int(i), labels[i], float(p[i])) for i in idx]
