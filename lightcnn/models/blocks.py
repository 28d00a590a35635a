"""The building blocks of all four models (see ../shared/docs/seed-models.md).

Each block is a small function that adds Keras layers to a functional graph and returns
the output tensor; every layer gets a readable name from the `name` prefix. Blocks take
their geometry as one small dataclass (MBArgs, CSPArgs) and make their layers through a
LayerFactory, which carries the model's fidelity options (options.py) and L2 penalty, so a
mode changes how layers are made without threading flags through every signature.
Custom layers (StochasticDepth, ChannelPool) are registered with Keras so saved models load
without custom_objects.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers, ops

from lightcnn.models.options import ModelOptions
from lightcnn.models.specs import ACTIVATIONS

# ----------------------------------------------------------------------------- layer factory


@dataclass(frozen=True)
class LayerFactory:
    """Makes the model's weighted layers with the mode's initialisers and the L2 penalty.

    Initialisers are passed as names, so every layer gets its own initializer instance (and
    its own draw). Biases are zero-initialised and never penalised, as in the study.
    """

    options: ModelOptions
    l2: float

    def _penalty(self, applies: bool = True) -> keras.regularizers.Regularizer | None:
        return keras.regularizers.L2(self.l2) if applies and self.l2 > 0 else None

    def conv(self, filters: int, kernel: int, name: str, strides: int = 1) -> layers.Conv2D:
        """Body / stem / top Conv2D (with bias), `same` padding."""
        return layers.Conv2D(
            filters, kernel, strides=strides, padding="same", kernel_initializer=self.options.conv_initializer,
            kernel_regularizer=self._penalty(), name=name,
        )

    def depthwise(self, kernel: int, strides: int, name: str) -> layers.DepthwiseConv2D:
        """DepthwiseConv2D (with bias), `same` padding; L2 in every mode (see ModelOptions)."""
        return layers.DepthwiseConv2D(
            kernel, strides=strides, padding="same", depthwise_initializer=self.options.depthwise_initializer,
            depthwise_regularizer=self._penalty(), name=name,
        )

    def se_dense(self, units: int, name: str) -> layers.Dense:
        """SE's Dense: L2 in every mode (the study's SE_block passed it)."""
        return layers.Dense(
            units, kernel_initializer=self.options.attention_initializer, kernel_regularizer=self._penalty(),
            name=name,
        )

    def attention_dense(self, units: int, name: str, activation: str | None = None) -> layers.Dense:
        """CBAM's Dense: L2 only when options.attention_l2."""
        return layers.Dense(
            units, activation=activation, kernel_initializer=self.options.attention_initializer,
            kernel_regularizer=self._penalty(self.options.attention_l2), name=name,
        )

    def attention_conv(
        self, filters: int, kernel: int, name: str, activation: str | None = None,
    ) -> layers.Conv2D:
        """CBAM's / CA's Conv2D (with bias), `same` padding: L2 only when options.attention_l2."""
        return layers.Conv2D(
            filters, kernel, padding="same", activation=activation,
            kernel_initializer=self.options.attention_initializer,
            kernel_regularizer=self._penalty(self.options.attention_l2), name=name,
        )

    def head_dense(self, units: int, name: str) -> layers.Dense:
        """The classifier's Dense (linear; the softmax is its own layer)."""
        return layers.Dense(
            units, kernel_initializer=self.options.head_initializer, kernel_regularizer=self._penalty(), name=name,
        )

    def residual_add(self, survival_probability: float | None, name: str) -> layers.Layer:
        """Plain Add, or StochasticDepth drawing per batch or per sample as the options say."""
        if survival_probability is None:
            return layers.Add(name=name)
        per_batch = self.options.stochastic_depth_draw == "batch"
        return StochasticDepth(survival_probability, per_batch=per_batch, name=name)


def activation(x, code: str, name: str):
    """Activation from its table code: "HS" hard-swish x*relu6(x+3)/6, "RE" ReLU."""
    return layers.Activation(ACTIVATIONS[code], name=name)(x)


def conv_row(x, filters: int, kernel: int, stride: int, act: str | None, name: str, make: LayerFactory):
    """Conv2D (with bias) -> BN -> activation; layers `name`, `name`_bn, `name`_act (none if act is None)."""
    x = make.conv(filters, kernel, name, strides=stride)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return x if act is None else activation(x, act, f"{name}_act")


def depthwise_row(x, kernel: int, stride: int, act: str | None, name: str, make: LayerFactory):
    """DepthwiseConv2D (with bias) -> BN -> activation; layers `name`, `name`_bn, `name`_act (none if act is None)."""
    x = make.depthwise(kernel, stride, name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return x if act is None else activation(x, act, f"{name}_act")


# ----------------------------------------------------------------------------- attention


def squeeze_excite(x, name: str, make: LayerFactory):
    """SE on C channels: pool -> Dense(C//4) -> BN -> hard-swish -> Dense(C) -> BN -> hard-sigmoid -> scale.

    The same in both flavours (it is the study's SE_block); only its initializer follows the mode.
    """
    channels = x.shape[-1]
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    gate = make.se_dense(channels // 4, f"{name}_reduce")(gate)
    gate = layers.BatchNormalization(name=f"{name}_reduce_bn")(gate)
    gate = layers.Activation("hard_silu", name=f"{name}_reduce_act")(gate)
    gate = make.se_dense(channels, f"{name}_expand")(gate)
    gate = layers.BatchNormalization(name=f"{name}_expand_bn")(gate)
    gate = layers.Activation("hard_sigmoid", name=f"{name}_gate")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


@keras.saving.register_keras_serializable(package="lightcnn")
class ChannelPool(layers.Layer):
    """Mean and max over the channel axis, concatenated: (B, H, W, C) -> (B, H, W, 2). For CBAM.

    One parameter-free layer for what the study wrote as reduce_mean, reduce_max (in that
    order) and Concatenate; Keras 3 cannot apply raw TF ops to symbolic tensors.
    """

    def call(self, inputs):
        mean = ops.mean(inputs, axis=-1, keepdims=True)
        maximum = ops.max(inputs, axis=-1, keepdims=True)
        return ops.concatenate([mean, maximum], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def cbam(x, name: str, make: LayerFactory):
    """CBAM, "paper" flavour (Woo et al. 2018): channel attention, then 7x7 spatial attention.

    The shared MLP reduces to C//4 like our SE (the paper uses C//16, too narrow for 16-channel blocks).
    """
    channels = x.shape[-1]
    reduce = make.attention_dense(channels // 4, f"{name}_mlp_reduce", activation="relu")
    expand = make.attention_dense(channels, f"{name}_mlp_expand")
    avg = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg_pool")(x)
    mx = layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max_pool")(x)
    channel_gate = layers.Add(name=f"{name}_channel_sum")([expand(reduce(avg)), expand(reduce(mx))])
    channel_gate = layers.Activation("sigmoid", name=f"{name}_channel_gate")(channel_gate)
    x = layers.Multiply(name=f"{name}_channel_scale")([x, channel_gate])

    spatial_gate = ChannelPool(name=f"{name}_channel_pool")(x)
    spatial_gate = make.attention_conv(1, 7, f"{name}_spatial_gate", activation="sigmoid")(spatial_gate)
    return layers.Multiply(name=f"{name}_spatial_scale")([x, spatial_gate])


def study_cbam_kernel(width: int, name: str) -> int:
    """The study's spatial kernel: 7 if the width divides by 7, else 4 if it divides by 4.

    Its code had no other case (the kernel size was left unset and the build failed), so
    neither do we: a clear error instead.
    """
    if width % 7 == 0:
        return 7
    if width % 4 == 0:
        return 4
    raise ValueError(
        f"{name}: the study's CBAM needs a feature-map width divisible by 7 or 4, got {width}; "
        "choose an input size that gives such widths, or the 'paper' attention flavour"
    )


def cbam_study(x, name: str, make: LayerFactory):
    """CBAM, "study" flavour, laid out as the study's Layer/Attention.py CBAM_block.

    Channel attention: global max pool and global average pool -> shared Dense(C//2) ->
    hard-sigmoid -> shared Dense(C) -> hard-swish; the two added -> hard-sigmoid -> reshaped
    to (1, 1, C) -> times x. Spatial: channel mean and max, concatenated -> Conv2D(1, k, same)
    (k from study_cbam_kernel) -> hard-sigmoid -> times x. Dense and Conv with biases, no BN.
    The unusual activations (hard-sigmoid inside the MLP, hard-swish on its output) are the
    study's own, kept because a faithful model must train like its.
    """
    channels, width = x.shape[-1], x.shape[2]
    kernel = study_cbam_kernel(width, name)
    reduce = make.attention_dense(channels // 2, f"{name}_mlp_reduce")
    expand = make.attention_dense(channels, f"{name}_mlp_expand")
    branches = []
    for pool_name, pool in (("max", layers.GlobalMaxPooling2D), ("avg", layers.GlobalAveragePooling2D)):
        branch = pool(name=f"{name}_{pool_name}_pool")(x)  # (B, C)
        branch = layers.Activation("hard_sigmoid", name=f"{name}_{pool_name}_reduce_act")(reduce(branch))
        branch = layers.Activation("hard_silu", name=f"{name}_{pool_name}_expand_act")(expand(branch))
        branches.append(branch)
    channel_gate = layers.Add(name=f"{name}_channel_sum")(branches)
    channel_gate = layers.Activation("hard_sigmoid", name=f"{name}_channel_gate")(channel_gate)
    channel_gate = layers.Reshape((1, 1, channels), name=f"{name}_channel_reshape")(channel_gate)
    x = layers.Multiply(name=f"{name}_channel_scale")([x, channel_gate])

    spatial_gate = ChannelPool(name=f"{name}_channel_pool")(x)
    spatial_gate = make.attention_conv(1, kernel, f"{name}_spatial_conv")(spatial_gate)
    spatial_gate = layers.Activation("hard_sigmoid", name=f"{name}_spatial_gate")(spatial_gate)
    return layers.Multiply(name=f"{name}_spatial_scale")([x, spatial_gate])


def coordinate_attention(x, name: str, make: LayerFactory):
    """Coordinate attention, "paper" flavour (Hou et al. 2021), from built-in layers only.

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
    both = make.attention_conv(mid, 1, f"{name}_conv")(both)
    both = layers.BatchNormalization(name=f"{name}_conv_bn")(both)
    both = layers.Activation("hard_silu", name=f"{name}_conv_act")(both)
    gate_h = layers.Cropping2D(((0, width), (0, 0)), name=f"{name}_split_h")(both)  # (B, H, 1, mid)
    gate_w = layers.Cropping2D(((height, 0), (0, 0)), name=f"{name}_split_w")(both)  # (B, W, 1, mid)
    gate_w = layers.Permute((2, 1, 3), name=f"{name}_untranspose_w")(gate_w)  # (B, 1, W, mid)
    gate_h = make.attention_conv(channels, 1, f"{name}_gate_h", activation="sigmoid")(gate_h)
    gate_w = make.attention_conv(channels, 1, f"{name}_gate_w", activation="sigmoid")(gate_w)
    return layers.Multiply(name=f"{name}_scale")([x, gate_h, gate_w])


def coordinate_attention_study(x, name: str, make: LayerFactory):
    """Coordinate attention, "study" flavour, laid out as the study's Layer/Attention.py CA_block.

    mip = max(8, C // 2). Average pools along W and along H; the study permutes them to
    (C, 1, H) and (C, 1, W), concatenates on the last axis and permutes back to
    (1, H+W, C); Conv2D(mip, 1) -> BN -> hard-sigmoid; split in two equal halves along that
    axis; each half -> Conv2D(C, 1) -> hard-sigmoid; x times the first gate, times the second.

    Both gates have shape (1, ·, C) with positions on the *width* axis, so the row gate
    (pooled along W, indexed by row) is broadcast over rows and applied along columns: the
    study gated only along the width axis, twice. That is what its models trained with, so
    the faithful flavour keeps it. It needs a square feature map (the equal split and the
    broadcast fail otherwise, as they did in the study's code).
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height != width:
        raise ValueError(
            f"{name}: the study's coordinate attention needs a square feature map, got {height}x{width}; "
            "use a square input, or the 'paper' attention flavour"
        )
    mip = max(8, channels // 2)
    pooled_h = layers.AveragePooling2D((1, width), name=f"{name}_pool_h")(x)  # (B, H, 1, C)
    pooled_h = layers.Permute((3, 2, 1), name=f"{name}_permute_h")(pooled_h)  # (B, C, 1, H)
    pooled_w = layers.AveragePooling2D((height, 1), name=f"{name}_pool_w")(x)  # (B, 1, W, C)
    pooled_w = layers.Permute((3, 1, 2), name=f"{name}_permute_w")(pooled_w)  # (B, C, 1, W)
    both = layers.Concatenate(name=f"{name}_concat")([pooled_h, pooled_w])  # (B, C, 1, H+W)
    both = layers.Permute((2, 3, 1), name=f"{name}_permute")(both)  # (B, 1, H+W, C)
    both = make.attention_conv(mip, 1, f"{name}_conv")(both)
    both = layers.BatchNormalization(name=f"{name}_conv_bn")(both)
    both = layers.Activation("hard_sigmoid", name=f"{name}_conv_act")(both)
    half = (height + width) // 2
    first = layers.Cropping2D(((0, 0), (0, half)), name=f"{name}_split_h")(both)  # (B, 1, H, mip)
    second = layers.Cropping2D(((0, 0), (half, 0)), name=f"{name}_split_w")(both)  # (B, 1, W, mip)
    gate_h = make.attention_conv(channels, 1, f"{name}_gate_h_conv")(first)
    gate_h = layers.Activation("hard_sigmoid", name=f"{name}_gate_h")(gate_h)
    gate_w = make.attention_conv(channels, 1, f"{name}_gate_w_conv")(second)
    gate_w = layers.Activation("hard_sigmoid", name=f"{name}_gate_w")(gate_w)
    x = layers.Multiply(name=f"{name}_scale_h")([x, gate_h])
    return layers.Multiply(name=f"{name}_scale_w")([x, gate_w])


AttentionBlock = Callable[..., keras.KerasTensor]
# attention -> flavour -> block; SE is the study's in both flavours.
ATTENTION_BLOCKS: dict[str, dict[str, AttentionBlock]] = {
    "se": {"study": squeeze_excite, "paper": squeeze_excite},
    "cbam": {"study": cbam_study, "paper": cbam},
    "ca": {"study": coordinate_attention_study, "paper": coordinate_attention},
}
ATTENTIONS = (*ATTENTION_BLOCKS, "none")


def attention_block(x, kind: str, name: str, make: LayerFactory):
    """The attention chosen for the model, in the mode's flavour ("none" returns x unchanged)."""
    if kind == "none":
        return x
    block = ATTENTION_BLOCKS[kind][make.options.attention_flavour]
    return block(x, f"{name}_{kind}", make)


# ----------------------------------------------------------------------------- residuals


@keras.saving.register_keras_serializable(package="lightcnn")
class StochasticDepth(layers.Layer):
    """Residual add with stochastic depth (Huang et al. 2016).

    call([shortcut, residual]): in training shortcut + b * residual with b ~ Bernoulli(p);
    at inference shortcut + p * residual (the expected value). per_batch=False draws b per
    sample (drop path); per_batch=True draws one b for the whole batch, as
    tfa.layers.StochasticDepth (which the study used) does. The default is False so that
    models saved before the option existed load unchanged.
    """

    def __init__(self, survival_probability: float, seed: int | None = None, per_batch: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < survival_probability <= 1.0:
            raise ValueError(f"survival_probability must be in (0, 1], got {survival_probability}")
        if not isinstance(per_batch, bool):
            raise ValueError(f"per_batch must be True or False, got {per_batch!r}")
        self.survival_probability = float(survival_probability)
        self.seed = seed
        self.per_batch = per_batch
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        if not training:
            return shortcut + self.survival_probability * residual
        # One draw per sample (or one for the batch), broadcast over the remaining axes.
        batch = 1 if self.per_batch else ops.shape(residual)[0]
        noise_shape = (batch,) + (1,) * (len(residual.shape) - 1)
        draw = keras.random.uniform(noise_shape, seed=self.seed_generator, dtype=residual.dtype)
        keep = ops.cast(draw < self.survival_probability, residual.dtype)
        return shortcut + keep * residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {
            **super().get_config(), "survival_probability": self.survival_probability, "seed": self.seed,
            "per_batch": self.per_batch,
        }


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class MBArgs:
    """Geometry of one inverted residual (MB) block.

    survival_probability: stochastic depth on its residual add, None for a plain Add.
    attention: "se", "cbam", "ca" or "none".
    """

    expansion: int
    filters: int
    kernel: int
    stride: int
    activation: str
    attention: str
    survival_probability: float | None


@dataclass(frozen=True)
class CSPArgs:
    """Geometry of one CSP stage: one expansion per part-1 MB, the rest as MBArgs."""

    expansions: tuple[int, ...]
    filters: int
    kernel: int
    stride: int
    activation: str
    attention: str
    survival_probability: float | None


def inverted_residual(x, block: MBArgs, name: str, make: LayerFactory):
    """MB: 1x1 expand -> k x k depthwise (stride) -> attention -> 1x1 project, each Conv/BN/act.

    The expansion conv is always there (even when expansion equals the input channels) and
    the projection is followed by the activation, as in the original. Residual when the
    shape is kept (stride 1, same channels).
    """
    shortcut = x
    x = conv_row(x, block.expansion, 1, 1, block.activation, f"{name}_expand_conv", make)
    x = depthwise_row(x, block.kernel, block.stride, block.activation, f"{name}_dw_conv", make)
    x = attention_block(x, block.attention, name, make)
    x = conv_row(x, block.filters, 1, 1, block.activation, f"{name}_project_conv", make)
    if block.stride == 1 and shortcut.shape[-1] == block.filters:
        x = make.residual_add(block.survival_probability, f"{name}_add")([shortcut, x])
    return x


def csp_stage(x, stage: CSPArgs, name: str, make: LayerFactory):
    """CSP stage: two halves of `filters` channels from the same (unsplit) input, concatenated.

    part 1: MB(E1//2, F//2, k, s) then MB(Ei//2, F//2, k, 1) for the other expansions;
    part 2: [2x2 stride-2 depthwise -> BN -> act if s == 2] then 1x1 conv -> BN -> act.
    No transition conv after the concatenation. With options.csp_part2_activation False
    (faithful), hard-swish stages get no activation in part 2, as in the study's code.
    """
    if stage.stride not in (1, 2):
        raise ValueError(f"CSP stage {name}: stride must be 1 or 2, got {stage.stride}")
    half = stage.filters // 2
    part1 = x
    for index, expansion in enumerate(stage.expansions):
        block = MBArgs(
            expansion // 2, half, stage.kernel, stage.stride if index == 0 else 1, stage.activation,
            stage.attention, stage.survival_probability,
        )
        part1 = inverted_residual(part1, block, f"{name}_part1_block{index + 1}", make)

    part2_act = stage.activation
    if stage.activation == "HS" and not make.options.csp_part2_activation:
        part2_act = None  # the study's `Activation == "HS"` bug: no activation at all
    part2 = x
    if stage.stride == 2:
        part2 = depthwise_row(part2, 2, 2, part2_act, f"{name}_part2_dw_conv", make)
    part2 = conv_row(part2, half, 1, 1, part2_act, f"{name}_part2_conv", make)
    return layers.Concatenate(name=f"{name}_concat")([part1, part2])
