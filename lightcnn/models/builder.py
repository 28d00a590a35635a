"""One builder for all four models: walks a spec table (specs.py) and adds blocks (blocks.py)."""
from __future__ import annotations

from numbers import Integral

import keras
from keras import layers

from lightcnn.models import blocks
from lightcnn.models.blocks import ATTENTIONS, CSPArgs, LayerFactory, MBArgs
from lightcnn.models.options import ModelOptions, resolve_mode
from lightcnn.models.specs import MODEL_NAMES, MODEL_SPECS, ModelSpec, Row

STRIDES = ("cifar", "birds", "auto")
AUTO_CIFAR_MAX_SIZE = 64  # "auto" strides: CIFAR strides up to this input height/width


def _choose(kind: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def resolve_strides(strides: str, input_shape: tuple[int, int, int]) -> str:
    """ "cifar" or "birds"; "auto" picks CIFAR strides for inputs up to 64x64."""
    _choose("strides", strides, STRIDES)
    if strides != "auto":
        return strides
    height, width = input_shape[:2]
    return "cifar" if max(height, width) <= AUTO_CIFAR_MAX_SIZE else "birds"


def _is_positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


def _check_arguments(name, spec, num_classes, input_shape, attention, l2, dropout) -> None:
    if spec is None:
        _choose("model", name, MODEL_NAMES)
    elif not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a lightcnn.models.specs.ModelSpec, got {type(spec).__name__}")
    elif not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name must be an identifier (it names the Keras model), got {name!r}")
    _choose("attention", attention, ATTENTIONS)
    if not _is_positive_int(num_classes):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if len(input_shape) != 3 or not all(_is_positive_int(size) for size in input_shape):
        raise ValueError(f"input_shape must be three positive ints (height, width, channels), got {input_shape!r}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0 (0 disables it), got {l2}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def block_names(rows: tuple[Row, ...]) -> list[str]:
    """Layer-name prefix of each row.

    Conv rows before the body are "stem", after it "top1", "top2", ... with the very last
    one "top" (so its activation is "top_conv_act"); MB rows are "stage{s}_block{i}"
    (i counted within the stage) and CSP rows "stage{s}".
    """
    names: list[str] = []
    blocks_in_stage: dict[int, int] = {}
    body_started = False
    top_rows = 0
    for index, row in enumerate(rows):
        if row.kind == "conv":
            if not body_started:
                names.append("stem" if index == 0 else f"stem{index + 1}")
            elif index == len(rows) - 1:
                names.append("top")
            else:
                top_rows += 1
                names.append(f"top{top_rows}")
        elif row.kind == "mb":
            body_started = True
            blocks_in_stage[row.stage] = blocks_in_stage.get(row.stage, 0) + 1
            names.append(f"stage{row.stage}_block{blocks_in_stage[row.stage]}")
        else:
            body_started = True
            names.append(f"stage{row.stage}")
    return names


def build_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    attention: str = "se",
    *,
    l2: float = 5e-5,
    dropout: float = 0.5,
    stochastic_depth: bool = True,
    strides: str = "auto",
    mode: str | ModelOptions = "corrected",
    spec: ModelSpec | None = None,
) -> keras.Model:
    """Build one of MODEL_NAMES with a softmax head of `num_classes`.

    spec: a table of your own (lightcnn.models.specs.ModelSpec, rows as in specs.py) built
    with the same blocks in place of a named one; `name` then only names the Keras model.

    attention: "se" (as published), "cbam" or "ca" in place of SE where the table has SE,
    or "none" to drop it. l2: L2 penalty on conv, depthwise and dense kernels (0 disables).
    stochastic_depth: False makes the residual adds plain Add layers. strides: "cifar",
    "birds" or "auto" (CIFAR strides when the input is at most 64x64). mode: "corrected"
    (the intended design, the default), "faithful" (the study's models as its code really
    built them) or a ModelOptions; see lightcnn.models.options. Both modes have the same
    layers' weights, so the published parameter counts hold in either.
    """
    input_shape = tuple(input_shape)
    _check_arguments(name, spec, num_classes, input_shape, attention, l2, dropout)
    options = resolve_mode(mode)
    num_classes, input_shape = int(num_classes), tuple(int(size) for size in input_shape)
    stride_set = resolve_strides(strides, input_shape)
    spec = spec or MODEL_SPECS[name]
    make = LayerFactory(options, float(l2))

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for row, prefix in zip(spec.rows, block_names(spec.rows)):
        stride = row.stride_cifar if stride_set == "cifar" else row.stride_birds
        if row.kind == "conv":
            x = blocks.conv_row(x, row.filters, row.kernel, stride, row.activation, f"{prefix}_conv", make)
            continue
        row_attention = attention if row.attention else "none"
        survival = 1.0 - spec.survival_decay * row.stage if stochastic_depth else None
        if row.kind == "mb":
            (expansion,) = row.expansions
            block = MBArgs(expansion, row.filters, row.kernel, stride, row.activation, row_attention, survival)
            x = blocks.inverted_residual(x, block, prefix, make)
        else:
            stage = CSPArgs(row.expansions, row.filters, row.kernel, stride, row.activation, row_attention, survival)
            x = blocks.csp_stage(x, stage, prefix, make)

    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = make.head_dense(num_classes, "logits")(x)
    outputs = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
