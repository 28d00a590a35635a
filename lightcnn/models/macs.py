"""Multiply-accumulates per image of a Keras model, counted from its layers."""
from __future__ import annotations

import keras
import numpy as np


def _layer_macs(layer) -> int:
    """MACs of one call of a Conv2D, DepthwiseConv2D or Dense layer per image; 0 for others."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # Each output value: one k_h x k_w window of a single input channel.
        _, out_h, out_w, out_channels = layer.output.shape
        kernel_h, kernel_w = layer.kernel_size
        return out_h * out_w * out_channels * kernel_h * kernel_w
    if isinstance(layer, keras.layers.Conv2D):
        if layer.data_format != "channels_last":
            raise ValueError(f"count_macs supports channels_last convolutions only ({layer.name})")
        # Each output value: a k_h x k_w window over the input channels of its group.
        in_channels = layer.input.shape[-1]
        _, out_h, out_w, out_channels = layer.output.shape
        kernel_h, kernel_w = layer.kernel_size
        return out_h * out_w * out_channels * kernel_h * kernel_w * (in_channels // layer.groups)
    if isinstance(layer, keras.layers.Dense):
        # Dense acts on the last axis, once per position of any axes in between.
        positions = int(np.prod(layer.input.shape[1:-1], dtype=np.int64))
        return positions * layer.input.shape[-1] * layer.units
    unsupported = (keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose, keras.layers.Conv1D,
                   keras.layers.Conv3D, keras.layers.EinsumDense)
    if isinstance(layer, unsupported):
        raise NotImplementedError(f"count_macs does not count {type(layer).__name__} layers "
                                  f"({layer.name}); extend lightcnn.models.macs._layer_macs")
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates per image of a Keras model, counted from its layers.

    Counted: Conv2D (any strides, padding, dilation and groups: out_h * out_w * out_c *
    k_h * k_w * in_c / groups), DepthwiseConv2D (out_h * out_w * out_c * k_h * k_w) and Dense
    (in_features * units per position). Nested models are walked. Not counted, being no
    multiply-accumulates or negligible beside the convolutions: biases, activations,
    element-wise adds and multiplies (residuals, attention gates), pooling, and BatchNorm
    (folded into the convolutions at TFLite export). A layer called more than once in a graph
    is counted once.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        sublayers = [sub for sub in layer._flatten_layers(include_self=False)
                     if isinstance(sub, (keras.layers.Conv2D, keras.layers.Dense))]
        if sublayers:
            raise NotImplementedError(
                f"count_macs cannot see the input shapes of {[s.name for s in sublayers]} inside the custom "
                f"layer {layer.name} ({type(layer).__name__}); build that block functionally")
        total += _layer_macs(layer)
    return int(total)
