"""Network and preprocessing configurations: the facts every builder, runtime and converter reads.

Channel counts and spatial sizes are computed here from the configuration, never written as literals
elsewhere, and one :class:`Preprocessing` object travels with a model to every runtime.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from edge.model.genotypes import NASNET_A_NORMAL, NASNET_A_REDUCTION, CellKind, Genotype
from edge.errors import ConfigError

# Keras/TF-slim BatchNormalization: momentum 0.9997 (PyTorch counts the other way: 1 - 0.9997),
# epsilon 1e-3 (PyTorch's default 1e-5 would shift every normalised activation).
BN_MOMENTUM_KERAS = 0.9997
BN_MOMENTUM_TORCH = 1.0 - BN_MOMENTUM_KERAS
BN_EPSILON = 1e-3


class Pooling(str, enum.Enum):
    """Border semantics of the stride-2 pools in reduction cells (see NASNET_SPEC "The pooling trap").

    KERAS: zero-pad then pool 'valid' (zeros join the max; the average always divides by k*k), as
    ``keras.applications`` computes today. SLIM: TF 'SAME' pooling as in TF-slim, where the official
    weights were trained: max ignores the padding and the average excludes it from the count.
    """

    KERAS = "keras"
    SLIM = "slim"


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network input. Carried by every model and artifact manifest.

    Square center crop of ``crop_fraction`` of the shorter side, bilinear resize to ``size``, RGB,
    then ``x * scale + offset`` (NASNet: x / 127.5 - 1, i.e. [-1, 1]; no mean/std, no BGR swap).
    """

    size: int = 224
    crop_fraction: float = 0.875
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    channel_order: str = "RGB"
    layout: str = "NHWC"

    @property
    def mean(self) -> float:
        """Equivalent TFLite/Android ``NormalizeOp`` mean: (x - mean) / std == x * scale + offset."""
        return -self.offset / self.scale

    @property
    def std(self) -> float:
        return 1.0 / self.scale

    def to_dict(self) -> dict:
        return {"size": self.size, "crop_fraction": self.crop_fraction, "scale": self.scale,
                "offset": self.offset, "mean": self.mean, "std": self.std,
                "channel_order": self.channel_order, "layout": self.layout,
                "resize": "bilinear", "crop": "center square of the shorter side"}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """Inverse of :meth:`to_dict` (the derived keys mean, std, resize and crop are ignored)."""
        return cls(size=int(d["size"]), crop_fraction=float(d["crop_fraction"]), scale=float(d["scale"]),
                   offset=float(d["offset"]), channel_order=str(d.get("channel_order", "RGB")),
                   layout=str(d.get("layout", "NHWC")))


@dataclass(frozen=True)
class CellSpec:
    """One cell of a concrete network: where it sits, what it reads and what it produces."""

    index: int
    block_id: str  # Keras block id: "stem_1", "0", "reduce_4", ...
    genotype: Genotype
    filters: int
    x_shape: tuple[int, int, int]  # (H, W, C) of the previous cell's output
    p_shape: tuple[int, int, int] | None  # None: the cell reads x as p, raw (first cell)
    out_shape: tuple[int, int, int]

    @property
    def kind(self) -> CellKind:
        return self.genotype.kind

    @property
    def name(self) -> str:
        return f"cell_{self.index:02d}_{self.kind.value}_{self.block_id}"

    @property
    def adjust(self) -> str:
        """What Keras ``_adjust_block`` does to p: 'none', 'factorized' or 'projection'.

        Keras compares the width only (``img_dim = -2``); the first cell reads its raw input as p.
        """
        if self.p_shape is None:
            return "none"
        if self.p_shape[1] != self.x_shape[1]:
            return "factorized"
        if self.p_shape[2] != self.filters:
            return "projection"
        return "none"


@dataclass(frozen=True)
class NASNetConfig:
    """A NASNet network: macro structure (Keras ``NASNet(...)`` arguments) plus the two genotypes."""

    name: str = "nasnet_mobile"
    penultimate_filters: int = 1056
    num_blocks: int = 4  # normal cells per stack
    stem_filters: int = 32
    filter_multiplier: int = 2
    skip_reduction: bool = False
    normal: Genotype = NASNET_A_NORMAL
    reduction: Genotype = NASNET_A_REDUCTION
    num_classes: int = 1000
    pooling: Pooling = Pooling.KERAS
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        denom = len(self.normal.concat) * self.filter_multiplier**2
        if self.penultimate_filters % denom:
            raise ConfigError(f"penultimate_filters must be a multiple of {denom} "
                             f"(normal-cell concat width x filter_multiplier^2), got {self.penultimate_filters}")

    @property
    def filters(self) -> int:
        """Filters of the first normal stack (Keras: penultimate_filters // 24 for NASNet-A)."""
        return self.penultimate_filters // (len(self.normal.concat) * self.filter_multiplier**2)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    def with_(self, **changes) -> "NASNetConfig":
        """A copy with some fields changed (``input_size=`` is accepted as a shorthand)."""
        if "input_size" in changes:
            changes["preprocessing"] = replace(self.preprocessing, size=int(changes.pop("input_size")))
        if "pooling" in changes:
            changes["pooling"] = Pooling(changes["pooling"])
        return replace(self, **changes)

    def cells(self, input_size: int | None = None) -> list[CellSpec]:
        """The cells in order, with real shapes, following Keras ``NASNet()`` exactly."""
        size = input_size or self.input_size
        stem = (stem_output_size(size), stem_output_size(size), self.stem_filters)
        f, m, n = self.filters, self.filter_multiplier, self.num_blocks
        plan: list[tuple[str, Genotype, int]] = [("stem_1", self.reduction, f // m**2),
                                                   ("stem_2", self.reduction, f // m)]
        plan += [(str(i), self.normal, f) for i in range(n)]
        plan += [(f"reduce_{n}", self.reduction, f * m)]
        plan += [(str(n + i + 1), self.normal, f * m) for i in range(n)]
        plan += [(f"reduce_{2 * n}", self.reduction, f * m**2)]
        plan += [(str(2 * n + i + 1), self.normal, f * m**2) for i in range(n)]

        specs: list[CellSpec] = []
        x, p = stem, None
        for index, (block_id, genotype, filters) in enumerate(plan):
            h, w = x[0], x[1]
            if genotype.reduces:
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            out = (h, w, filters * len(genotype.concat) * _concat_width(genotype))
            specs.append(CellSpec(index, block_id, genotype, filters, x, p, out))
            # Keras: every cell returns (x, ip); with skip_reduction a reduction cell passes p through.
            if not (self.skip_reduction and block_id.startswith("reduce_")):
                p = x
            x = out
        return specs

    @property
    def feature_channels(self) -> int:
        return self.cells()[-1].out_shape[2]

    def to_dict(self) -> dict:
        return {"name": self.name, "penultimate_filters": self.penultimate_filters,
                "num_blocks": self.num_blocks, "stem_filters": self.stem_filters,
                "filter_multiplier": self.filter_multiplier, "skip_reduction": self.skip_reduction,
                "normal": self.normal.name, "reduction": self.reduction.name,
                "num_classes": self.num_classes, "pooling": self.pooling.value,
                "preprocessing": self.preprocessing.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "NASNetConfig":
        """Inverse of :meth:`to_dict`: ``NASNetConfig.from_dict(c.to_dict()) == c``. Fields a saved dict lacks
        (files written before they existed) take NASNet-Mobile's values; genotypes are found by name."""
        from edge.model.genotypes import GENOTYPES

        def genotype(key: str, default: Genotype) -> Genotype:
            name = d.get(key, default.name)
            if name not in GENOTYPES:
                raise ConfigError(f"configuration names the {key} genotype {name!r}, which this toolkit does not "
                                  f"know (known: {', '.join(sorted(GENOTYPES))})")
            return GENOTYPES[name]

        base = cls()
        return cls(name=str(d.get("name", base.name)),
                   penultimate_filters=int(d.get("penultimate_filters", base.penultimate_filters)),
                   num_blocks=int(d.get("num_blocks", base.num_blocks)),
                   stem_filters=int(d.get("stem_filters", base.stem_filters)),
                   filter_multiplier=int(d.get("filter_multiplier", base.filter_multiplier)),
                   skip_reduction=bool(d.get("skip_reduction", base.skip_reduction)),
                   normal=genotype("normal", base.normal), reduction=genotype("reduction", base.reduction),
                   num_classes=int(d.get("num_classes", base.num_classes)),
                   pooling=Pooling(d.get("pooling", base.pooling.value)),
                   preprocessing=(Preprocessing.from_dict(d["preprocessing"]) if "preprocessing" in d
                                  else base.preprocessing))


def _concat_width(genotype: Genotype) -> int:
    return 2 if genotype.combine.value == "concat" else 1


def stem_output_size(size: int) -> int:
    """Stem: 3x3 conv, stride 2, 'valid'."""
    return (size - 3) // 2 + 1


def same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one axis; equals Keras ``correct_pad`` for stride 2."""
    k = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def nasnet_mobile(num_classes: int = 1000, pooling: Pooling | str = Pooling.KERAS,
                  input_size: int = 224) -> NASNetConfig:
    """NASNet-A 4 @ 1056, 224 px: ``keras.applications.NASNetMobile``."""
    return NASNetConfig(num_classes=num_classes, pooling=Pooling(pooling)).with_(input_size=input_size)


def nasnet_large(num_classes: int = 1000, pooling: Pooling | str = Pooling.KERAS) -> NASNetConfig:
    """NASNet-A 6 @ 4032, 331 px: ``keras.applications.NASNetLarge``."""
    return NASNetConfig(name="nasnet_large", penultimate_filters=4032, num_blocks=6, stem_filters=96,
                        skip_reduction=True, num_classes=num_classes,
                        pooling=Pooling(pooling)).with_(input_size=331)


CONFIGS = {"nasnet_mobile": nasnet_mobile, "nasnet_large": nasnet_large}
