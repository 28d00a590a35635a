"""The building blocks of all four models (see ../shared/docs/seed-models.md).

Each block is a small function that adds Keras layers to a functional graph and returns
the output tensor; every layer gets a readable name from the `name` prefix. Custom layers
(StochasticDepth, ChannelPool) are registered with Keras so saved models load without
custom_objects.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from lightcnn.models.specs import ACTIVATIONS

# The original study's kernel initializer: keras' RandomUniform(-0.05, 0.05). Passed as a
# string so that every layer gets its own initializer instance (and its own draw).
KERNEL_INITIALIZER = "random_uniform"


def _regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """L2 kernel penalty, or none when l2 is 0."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def activation(x, code: str, name: str):
    """Activation from its table code: "HS" hard-swish x*relu6(x+3)/6, "RE" ReLU."""
    return layers.Activation(ACTIVATIONS[code], name=name)(x)


def conv_row(x, filters: int, kernel: int, stride: int, act: str, name: str, l2: float):
    """Conv2D (with bias) -> BN -> activation; layers `name`, `name`_bn, `name`_act."""
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same",
        kernel_initializer=KERNEL_INITIALIZER, kernel_regularizer=_regularizer(l2), name=name,
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return activation(x, act, f"{name}_act")


def depthwise_row(x, kernel: int, stride: int, act: str, name: str, l2: float):
    """DepthwiseConv2D (with bias) -> BN -> activation; layers `name`, `name`_bn, `name`_act."""
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same",
        depthwise_initializer=KERNEL_INITIALIZER, depthwise_regularizer=_regularizer(l2), name=name,
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return activation(x, act, f"{name}_act")


def dense(units: int, name: str, l2: float, act: str | None = None) -> layers.Dense:
    """Dense layer with the project's kernel initializer and L2 penalty (linear unless `act`)."""
    return layers.Dense(
        units, activation=act, kernel_initializer=KERNEL_INITIALIZER,
        kernel_regularizer=_regularizer(l2), name=name,
    )


# ----------------------------------------------------------------------------- attention


def squeeze_excite(x, name: str, l2: float):
    """SE on C channels: pool -> Dense(C//4) -> BN -> hard-swish -> Dense(C) -> BN -> hard-sigmoid -> scale."""
    channels = x.shape[-1]
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    gate = dense(channels // 4, f"{name}_reduce", l2)(gate)
    gate = layers.BatchNormalization(name=f"{name}_reduce_bn")(gate)
    gate = layers.Activation("hard_silu", name=f"{name}_reduce_act")(gate)
    gate = dense(channels, f"{name}_expand", l2)(gate)
    gate = layers.BatchNormalization(name=f"{name}_expand_bn")(gate)
    gate = layers.Activation("hard_sigmoid", name=f"{name}_gate")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


@keras.saving.register_keras_serializable(package="lightcnn")
class ChannelPool(layers.Layer):
    """Mean and max over the channel axis, concatenated: (B, H, W, C) -> (B, H, W, 2). For CBAM."""

    def call(self, inputs):
        mean = ops.mean(inputs, axis=-1, keepdims=True)
        maximum = ops.max(inputs, axis=-1, keepdims=True)
        return ops.concatenate([mean, maximum], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def cbam(x, name: str, l2: float):
    """CBAM (Woo et al. 2018): channel attention, then 7x7 spatial attention.

    The shared MLP reduces to C//4 like our SE (the paper uses C//16, too narrow for 16-channel blocks).
    """
    channels = x.shape[-1]
    reduce = dense(channels // 4, f"{name}_mlp_reduce", l2, act="relu")
    expand = dense(channels, f"{name}_mlp_expand", l2)
    avg = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg_pool")(x)
    mx = layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max_pool")(x)
    channel_gate = layers.Add(name=f"{name}_channel_sum")([expand(reduce(avg)), expand(reduce(mx))])
    channel_gate = layers.Activation("sigmoid", name=f"{name}_channel_gate")(channel_gate)
    x = layers.Multiply(name=f"{name}_channel_scale")([x, channel_gate])

    spatial_gate = ChannelPool(name=f"{name}_channel_pool")(x)
    spatial_gate = layers.Conv2D(
        1, 7, padding="same", activation="sigmoid", kernel_initializer=KERNEL_INITIALIZER,
        kernel_regularizer=_regularizer(l2), name=f"{name}_spatial_gate",
    )(spatial_gate)
    return layers.Multiply(name=f"{name}_spatial_scale")([x, spatial_gate])


def coordinate_attention(x, name: str, l2: float):
    """Coordinate attention (Hou et al. 2021), from built-in layers only.

    Pool along W (-> H x 1) and along H (-> 1 x W), encode both together with one shared
    1x1 conv -> BN -> hard-swish (width max(8, C//32), as in the paper), split them again and
    turn each into a sigmoid gate. The split uses Cropping2D and the transposes Permute, so
    the block needs a static spatial size, which our fixed-size inputs give.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    mid = max(8, channels // 32)
    along_h = layers.AveragePooling2D((1, width), name=f"{name}_pool_h")(x)  # (B, H, 1, C)
    along_w = layers.AveragePooling2D((height, 1), name=f"{name}_pool_w")(x)  # (B, 1, W, C)
    along_w = layers.Permute((2, 1, 3), name=f"{name}_transpose_w")(along_w)  # (B, W, 1, C)
    both = layers.Concatenate(axis=1, name=f"{name}_concat")([along_h, along_w])  # (B, H+W, 1, C)
    both = conv_row(both, mid, 1, 1, "HS", f"{name}_conv", l2)
    gate_h = layers.Cropping2D(((0, width), (0, 0)), name=f"{name}_split_h")(both)  # (B, H, 1, mid)
    gate_w = layers.Cropping2D(((height, 0), (0, 0)), name=f"{name}_split_w")(both)  # (B, W, 1, mid)
    gate_w = layers.Permute((2, 1, 3), name=f"{name}_untranspose_w")(gate_w)  # (B, 1, W, mid)
    gate_h = layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=KERNEL_INITIALIZER,
        kernel_regularizer=_regularizer(l2), name=f"{name}_gate_h",
    )(gate_h)
    gate_w = layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=KERNEL_INITIALIZER,
        kernel_regularizer=_regularizer(l2), name=f"{name}_gate_w",
    )(gate_w)
    return layers.Multiply(name=f"{name}_scale")([x, gate_h, gate_w])


ATTENTION_BLOCKS = {"se": squeeze_excite, "cbam": cbam, "ca": coordinate_attention}
ATTENTIONS = (*ATTENTION_BLOCKS, "none")


def attention_block(x, kind: str, name: str, l2: float):
    """The attention chosen for the model ("none" returns x unchanged)."""
    if kind == "none":
        return x
    return ATTENTION_BLOCKS[kind](x, f"{name}_{kind}", l2)


# ----------------------------------------------------------------------------- residuals


@keras.saving.register_keras_serializable(package="lightcnn")
class StochasticDepth(layers.Layer):
    """Residual add with stochastic depth (Huang et al. 2016).

    call([shortcut, residual]): in training shortcut + b * residual with b ~ Bernoulli(p)
    drawn per sample; at inference shortcut + p * residual (the expected value).
    """

    def __init__(self, survival_probability: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < survival_probability <= 1.0:
            raise ValueError(f"survival_probability must be in (0, 1], got {survival_probability}")
        self.survival_probability = float(survival_probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        if not training:
            return shortcut + self.survival_probability * residual
        # One draw per sample, broadcast over the remaining axes.
        noise_shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
        draw = keras.random.uniform(noise_shape, seed=self.seed_generator, dtype=residual.dtype)
        keep = ops.cast(draw < self.survival_probability, residual.dtype)
        return shortcut + keep * residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "survival_probability": self.survival_probability, "seed": self.seed}


def residual_add(shortcut, residual, survival_probability: float | None, name: str):
    """shortcut + residual, through stochastic depth unless survival_probability is None."""
    if survival_probability is None:
        return layers.Add(name=name)([shortcut, residual])
    return StochasticDepth(survival_probability, name=name)([shortcut, residual])


# ----------------------------------------------------------------------------- blocks


def inverted_residual(
    x, expansion: int, filters: int, kernel: int, stride: int, act: str, attention: str,
    survival_probability: float | None, name: str, l2: float,
):
    """MB: 1x1 expand -> k x k depthwise (stride) -> attention -> 1x1 project, each Conv/BN/act.

    The expansion conv is always there (even when expansion equals the input channels) and
    the projection is followed by the activation, as in the original. Residual when the
    shape is kept (stride 1, same channels).
    """
    shortcut = x
    x = conv_row(x, expansion, 1, 1, act, f"{name}_expand_conv", l2)
    x = depthwise_row(x, kernel, stride, act, f"{name}_dw_conv", l2)
    x = attention_block(x, attention, name, l2)
    x = conv_row(x, filters, 1, 1, act, f"{name}_project_conv", l2)
    if stride == 1 and shortcut.shape[-1] == filters:
        x = residual_add(shortcut, x, survival_probability, f"{name}_add")
    return x


def csp_stage(
    x, expansions: tuple[int, ...], filters: int, kernel: int, stride: int, act: str, attention: str,
    survival_probability: float | None, name: str, l2: float,
):
    """CSP stage: two halves of `filters` channels from the same (unsplit) input, concatenated.

    part 1: MB(E1//2, F//2, k, s) then MB(Ei//2, F//2, k, 1) for the other expansions;
    part 2: [2x2 stride-2 depthwise -> BN -> act if s == 2] then 1x1 conv -> BN -> act.
    No transition conv after the concatenation. Part 2 gets the stage's activation (the
    original code left hard-swish stages without one by mistake).
    """
    part1 = x
    for index, expansion in enumerate(expansions):
        part1 = inverted_residual(
            part1, expansion // 2, filters // 2, kernel, stride if index == 0 else 1, act, attention,
            survival_probability, f"{name}_part1_block{index + 1}", l2,
        )
    part2 = x
    if stride == 2:
        part2 = depthwise_row(part2, 2, 2, act, f"{name}_part2_dw_conv", l2)
    elif stride != 1:
        raise ValueError(f"CSP stage {name}: stride must be 1 or 2, got {stride}")
    part2 = conv_row(part2, filters // 2, 1, 1, act, f"{name}_part2_conv", l2)
    return layers.Concatenate(name=f"{name}_concat")([part1, part2])
