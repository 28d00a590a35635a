"""The four architectures as data: one spec table per model (see ../shared/docs/seed-models.md),
and a fifth, `smoke`, for checking a setup end to end in minutes (not a result).

Each row is one block of the network, in order. The builder (builder.py) turns a table into
a Keras model using the blocks in blocks.py; nothing here knows about Keras.
"""
from __future__ import annotations

from dataclasses import dataclass

BLOCK_KINDS = ("conv", "mb", "csp")
ACTIVATIONS = {"HS": "hard_silu", "RE": "relu"}  # table code -> Keras activation name


@dataclass(frozen=True)
class Row:
    """One row of a spec table.

    kind: "conv" (conv row), "mb" (inverted residual) or "csp" (CSP stage).
    expansions: expansion width of each MB (one for "mb", one per part-1 MB for "csp",
        none for "conv").
    filters: output channels. kernel: (depthwise) kernel size.
    stride_cifar / stride_birds: stride at 32x32 and at 224x224 input.
    activation: "HS" (hard-swish) or "RE" (ReLU).
    attention: whether the block has SE (or the attention chosen in its place).
    stage: stage number for the stochastic-depth survival probability (None for conv rows).
    """

    kind: str
    expansions: tuple[int, ...]
    filters: int
    kernel: int
    stride_cifar: int
    stride_birds: int
    activation: str
    attention: bool
    stage: int | None

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; choose one of: {', '.join(BLOCK_KINDS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class ModelSpec:
    """A spec table plus the stochastic-depth decay: survival p = 1 - survival_decay * stage."""

    rows: tuple[Row, ...]
    survival_decay: float


def _row(kind, expansions, filters, kernel, stride_cifar, stride_birds, activation, attention, stage) -> Row:
    """Row from the table layout below; a single expansion may be written as a plain int."""
    if expansions is None:
        expansions = ()
    elif isinstance(expansions, int):
        expansions = (expansions,)
    return Row(kind, tuple(expansions), filters, kernel, stride_cifar, stride_birds, activation, attention, stage)


def _table(*rows: tuple) -> tuple[Row, ...]:
    return tuple(_row(*row) for row in rows)


SE, NO = True, False

# kind, expansion(s), out, kernel, stride cifar, stride birds, activation, SE, stage
MOBILENETV3_LARGE = _table(
    ("conv", None, 16, 3, 1, 2, "HS", NO, None),
    ("mb", 16, 16, 3, 1, 1, "RE", NO, 1),
    ("mb", 64, 24, 3, 1, 2, "RE", NO, 2),
    ("mb", 72, 24, 3, 1, 1, "RE", NO, 2),
    ("mb", 72, 40, 5, 2, 2, "RE", SE, 3),
    ("mb", 120, 40, 5, 1, 1, "RE", SE, 3),
    ("mb", 120, 40, 5, 1, 1, "RE", SE, 3),
    ("mb", 240, 80, 3, 2, 2, "HS", NO, 4),
    ("mb", 200, 80, 3, 1, 1, "HS", NO, 4),
    ("mb", 184, 80, 3, 1, 1, "HS", NO, 4),
    ("mb", 184, 80, 3, 1, 1, "HS", NO, 4),
    ("mb", 480, 112, 3, 1, 1, "HS", SE, 5),
    ("mb", 672, 112, 3, 1, 1, "HS", SE, 5),
    ("mb", 672, 160, 5, 2, 2, "HS", SE, 6),
    ("mb", 672, 160, 5, 1, 1, "HS", SE, 6),
    ("mb", 960, 160, 5, 1, 1, "HS", SE, 6),
    ("conv", None, 960, 1, 1, 1, "HS", NO, None),
    ("conv", None, 1280, 1, 1, 1, "HS", NO, None),
)

MOBILENETV3_SMALL = _table(
    ("conv", None, 16, 3, 1, 2, "HS", NO, None),
    ("mb", 16, 16, 3, 1, 2, "RE", SE, 1),
    ("mb", 72, 24, 3, 2, 2, "RE", NO, 2),
    ("mb", 88, 24, 3, 1, 1, "RE", NO, 2),
    ("mb", 96, 40, 5, 2, 2, "HS", SE, 3),
    ("mb", 240, 40, 5, 1, 1, "HS", SE, 3),
    ("mb", 240, 40, 5, 1, 1, "HS", SE, 3),
    ("mb", 120, 48, 5, 1, 1, "HS", SE, 4),
    ("mb", 144, 48, 5, 1, 1, "HS", SE, 4),
    ("mb", 288, 96, 5, 2, 2, "HS", SE, 5),
    ("mb", 576, 96, 5, 1, 1, "HS", SE, 5),
    ("mb", 576, 96, 5, 1, 1, "HS", SE, 5),
    ("conv", None, 576, 1, 1, 1, "HS", NO, None),
    ("conv", None, 1024, 1, 1, 1, "HS", NO, None),
)

OUR_LARGE = _table(
    ("conv", None, 16, 3, 1, 2, "HS", NO, None),
    ("csp", 16, 16, 3, 1, 1, "RE", NO, 1),
    ("csp", (64, 72), 24, 3, 1, 2, "RE", NO, 2),
    ("csp", (72, 120, 120), 40, 5, 2, 2, "HS", SE, 3),
    ("csp", (240, 200, 184, 184), 80, 5, 2, 2, "HS", NO, 4),
    ("csp", (480, 672), 112, 5, 1, 1, "HS", SE, 5),
    ("csp", (672, 960, 960), 160, 5, 2, 2, "HS", SE, 6),
    ("conv", None, 960, 1, 1, 1, "HS", NO, None),
    ("conv", None, 1280, 1, 1, 1, "HS", NO, None),
)

OUR_SMALL = _table(
    ("conv", None, 16, 3, 1, 2, "HS", NO, None),
    ("csp", 16, 16, 3, 1, 2, "RE", SE, 1),
    ("csp", (72, 88), 24, 3, 2, 2, "RE", NO, 2),
    ("csp", (96, 240, 240), 40, 5, 2, 2, "HS", SE, 3),
    ("csp", (120, 144), 48, 5, 1, 1, "HS", SE, 4),
    ("csp", (288, 576, 576), 96, 5, 2, 2, "HS", SE, 5),
    ("conv", None, 576, 1, 1, 1, "HS", NO, None),
    ("conv", None, 1024, 1, 1, 1, "HS", NO, None),
)

# Not the study's: one block of each kind the four use (a conv row, an inverted residual and a
# CSP stage, with SE, ReLU and hard-swish, BatchNorm, strides, stochastic depth) at minimal
# width, in 71 layers against our_small's 220. Most of a short run on a CPU is tracing the
# network, in proportion to its layers: `dvc exp run -S model=smoke` (with a small
# data.max_per_class, train.epochs=1 and train.warmup_epochs=0: README, Settings) checks a new
# machine, dataset or setting through every stage in minutes before the real models spend
# hours. Its accuracy means nothing.
SMOKE = _table(
    ("conv", None, 8, 3, 1, 2, "HS", NO, None),
    ("mb", 16, 8, 3, 1, 2, "RE", SE, 1),
    ("csp", (24, 24), 16, 3, 2, 2, "HS", SE, 2),
    ("conv", None, 32, 1, 1, 1, "HS", NO, None),
)

# Survival decay per stage: 0.083 for the Large models, 0.01 for the Small ones.
MODEL_SPECS: dict[str, ModelSpec] = {
    "mobilenetv3_large": ModelSpec(MOBILENETV3_LARGE, survival_decay=0.083),
    "mobilenetv3_small": ModelSpec(MOBILENETV3_SMALL, survival_decay=0.01),
    "our_large": ModelSpec(OUR_LARGE, survival_decay=0.083),
    "our_small": ModelSpec(OUR_SMALL, survival_decay=0.01),
    "smoke": ModelSpec(SMOKE, survival_decay=0.01),
}
MODEL_NAMES = tuple(MODEL_SPECS)  # the study's four (lightcnn.study.STUDY_MODELS), then smoke
