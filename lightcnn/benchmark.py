"""Single-image latency of one TFLite model in LiteRT (a quick look), and multiply-accumulate counts.

Comparisons between models or variants take their figures from
lightcnn.latency.interleaved_latency, which times them all in one process, interleaved.
"""
from __future__ import annotations

import os
import time

import numpy as np

from lightcnn.export import TFLiteModel
from lightcnn.latency import cpu_info, litert_version, summarise

__all__ = ["count_macs", "cpu_info", "latency"]


def latency(tflite_model: str | os.PathLike | bytes, threads: int, warmup: int = 20,
            runs: int = 200, seed: int = 0) -> dict:
    """Time single-image inference of a TFLite model in LiteRT on this CPU.

    The same random image (of the model's input type) is loaded once; each run times one
    `invoke()`. LiteRT's default XNNPACK delegate stays on, as in TFLite's benchmark_model;
    `xnnpack` in the result says whether it was applied to the graph.
    Returns median_ms, p90_ms, ci95_low_ms, ci95_high_ms (bootstrap interval of the median),
    mean_ms, min_ms, max_ms, runs, warmup, threads, xnnpack, input_dtype, litert_version, cpu,
    vector_extensions and logical_cores. One model timed alone: to compare models or
    variants use lightcnn.latency.interleaved_latency.
    """
    for name, value, smallest in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"{name} must be an integer >= {smallest}, got {value!r}")
    model = TFLiteModel(tflite_model, num_threads=threads)
    image = np.random.default_rng(seed).random(model.image_shape, dtype=np.float32)
    model.set_input(image)
    for _ in range(warmup):
        model.invoke()
    times_ms = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        model.invoke()
        times_ms[i] = (time.perf_counter_ns() - start) / 1e6
    cpu = cpu_info()
    return {
        **summarise(times_ms, seed),
        "warmup": warmup,
        "threads": threads,
        "xnnpack": model.xnnpack_applied,
        "input_dtype": model.input_dtype.name,
        "litert_version": litert_version(),
        "cpu": cpu["model_name"],
        "vector_extensions": cpu["vector_extensions"],
        "logical_cores": cpu["logical_cores"],
    }


def _layer_macs(layer) -> int:
    """MACs of one call of a Conv2D, DepthwiseConv2D or Dense layer per image; 0 for others."""
    import keras

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
                                  f"({layer.name}); extend lightcnn.benchmark._layer_macs")
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
    import keras

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
