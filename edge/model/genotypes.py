"""NASNet cells as data.

A cell is a list of blocks; each block applies two operations to two hidden states and combines them.
This is TF-slim's encoding (``research/slim/nets/nasnet/nasnet_utils.py``): ``ops`` holds two operations
per block, ``inputs`` the hidden-state index each one reads, where 0 is ``h`` (the cell base applied to
the previous cell's output), 1 is ``p`` (the cell before that, adjusted) and 2.. are earlier blocks'
outputs. In a reduction cell an operation that reads state 0 or 1 has stride 2. The states that are
concatenated into the cell output must be stored explicitly: they cannot be derived from the wiring.

``keras_names`` gives the Keras layer-name stem of each operation, because names are how the official
weights load. The default is ``{kind}_{left|right}{block}``; Keras deviates once (the separable conv of
the NASNet-A reduction cell's block 5 is called ``reduction_left4``), and that exception is data here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from edge.errors import ConfigError


class Op(str, enum.Enum):
    """The 13 operations of the NASNet search space (Zoph et al. 2018, section 3)."""

    IDENTITY = "identity"
    CONV_1X3_3X1 = "conv_1x3_3x1"
    CONV_1X7_7X1 = "conv_1x7_7x1"
    DIL_CONV_3X3 = "dil_conv_3x3"
    AVG_POOL_3X3 = "avg_pool_3x3"
    MAX_POOL_3X3 = "max_pool_3x3"
    MAX_POOL_5X5 = "max_pool_5x5"
    MAX_POOL_7X7 = "max_pool_7x7"
    CONV_1X1 = "conv_1x1"
    CONV_3X3 = "conv_3x3"
    SEP_CONV_3X3 = "sep_conv_3x3"
    SEP_CONV_5X5 = "sep_conv_5x5"
    SEP_CONV_7X7 = "sep_conv_7x7"

    @property
    def kernel_size(self) -> int:
        """Spatial extent of the operation (1 for identity)."""
        return {
            Op.IDENTITY: 1, Op.CONV_1X3_3X1: 3, Op.CONV_1X7_7X1: 7, Op.DIL_CONV_3X3: 3,
            Op.AVG_POOL_3X3: 3, Op.MAX_POOL_3X3: 3, Op.MAX_POOL_5X5: 5, Op.MAX_POOL_7X7: 7,
            Op.CONV_1X1: 1, Op.CONV_3X3: 3, Op.SEP_CONV_3X3: 3, Op.SEP_CONV_5X5: 5, Op.SEP_CONV_7X7: 7,
        }[self]

    @property
    def is_pool(self) -> bool:
        return self in (Op.AVG_POOL_3X3, Op.MAX_POOL_3X3, Op.MAX_POOL_5X5, Op.MAX_POOL_7X7)

    @property
    def is_separable(self) -> bool:
        return self in (Op.SEP_CONV_3X3, Op.SEP_CONV_5X5, Op.SEP_CONV_7X7)

    @property
    def has_weights(self) -> bool:
        return not (self.is_pool or self is Op.IDENTITY)


class Combine(str, enum.Enum):
    """How a block joins its two operation outputs."""

    ADD = "add"
    CONCAT = "concat"


class CellKind(str, enum.Enum):
    NORMAL = "normal"
    REDUCTION = "reduction"


@dataclass(frozen=True)
class Genotype:
    """One NASNet cell, as data."""

    name: str
    kind: CellKind
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    concat: tuple[int, ...]
    combine: Combine = Combine.ADD
    keras_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.ops) != len(self.inputs) or len(self.ops) % 2 or not self.ops:
            raise ConfigError(f"genotype {self.name!r}: need two ops per block and one input index per op")
        for i, src in enumerate(self.inputs):
            if not 0 <= src < 2 + i // 2:
                raise ConfigError(f"genotype {self.name!r}: op {i} reads state {src}, which does not exist yet")
        n_states = 2 + self.num_blocks
        if not self.concat or any(not 0 <= c < n_states for c in self.concat):
            raise ConfigError(f"genotype {self.name!r}: concat {self.concat} names states outside 0..{n_states - 1}")
        if not self.keras_names:
            names = tuple(f"{self.kind.value}_{'left' if i % 2 == 0 else 'right'}{i // 2 + 1}"
                          for i in range(len(self.ops)))
            object.__setattr__(self, "keras_names", names)
        if len(self.keras_names) != len(self.ops):
            raise ConfigError(f"genotype {self.name!r}: one Keras name per op")
        object.__setattr__(self, "ops", tuple(Op(o) for o in self.ops))

    @property
    def num_blocks(self) -> int:
        return len(self.ops) // 2

    @property
    def reduces(self) -> bool:
        return self.kind is CellKind.REDUCTION

    def stride(self, op_index: int) -> int:
        """Stride of op ``op_index``: 2 in a reduction cell when it reads the cell inputs."""
        return 2 if self.reduces and self.inputs[op_index] < 2 else 1


# TF-slim nasnet_utils.NasNetANormalCell: ops and hiddenstate_indices verbatim; used_hiddenstates
# [1,0,0,0,0,0,0] leaves p and the five blocks for the concat.
NASNET_A_NORMAL = Genotype(
    name="nasnet_a_normal",
    kind=CellKind.NORMAL,
    ops=(Op.SEP_CONV_5X5, Op.SEP_CONV_3X3, Op.SEP_CONV_5X5, Op.SEP_CONV_3X3, Op.AVG_POOL_3X3,
         Op.IDENTITY, Op.AVG_POOL_3X3, Op.AVG_POOL_3X3, Op.SEP_CONV_3X3, Op.IDENTITY),
    inputs=(0, 1, 1, 1, 0, 1, 1, 1, 0, 0),
    concat=(1, 2, 3, 4, 5, 6),
)

# TF-slim nasnet_utils.NasNetAReductionCell; used_hiddenstates [1,1,1,0,0,0,0]: blocks 2..5 are the
# output, block 1 is consumed inside the cell.
NASNET_A_REDUCTION = Genotype(
    name="nasnet_a_reduction",
    kind=CellKind.REDUCTION,
    ops=(Op.SEP_CONV_5X5, Op.SEP_CONV_7X7, Op.MAX_POOL_3X3, Op.SEP_CONV_7X7, Op.AVG_POOL_3X3,
         Op.SEP_CONV_5X5, Op.IDENTITY, Op.AVG_POOL_3X3, Op.SEP_CONV_3X3, Op.MAX_POOL_3X3),
    inputs=(0, 1, 0, 1, 0, 1, 3, 2, 2, 0),
    concat=(3, 4, 5, 6),
    keras_names=("reduction_left1", "reduction_right1", "reduction_left2", "reduction_right2",
                 "reduction_left3", "reduction_right3", "reduction_right4", "reduction_left4",
                 "reduction_left4", "reduction_right5"),  # sic: Keras calls block 4's pool and block 5's sep "left4"
)

GENOTYPES: dict[str, Genotype] = {g.name: g for g in (NASNET_A_NORMAL, NASNET_A_REDUCTION)}
