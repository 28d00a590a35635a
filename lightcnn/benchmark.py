"""Single-image latency of one TFLite model in LiteRT (a quick look).

No Keras here: the benchmark stage times the TFLite files in a process without TensorFlow's
runtime (and its thread pools) loaded. Multiply-accumulates are counted from the Keras model
by lightcnn.models.count_macs.

Comparisons between models or variants take their figures from
lightcnn.latency.interleaved_latency, which times them all in one process, interleaved.
"""
from __future__ import annotations

import os
import time

import numpy as np

from lightcnn.export import TFLiteModel
from lightcnn.latency import cpu_info, litert_version, summarise

__all__ = ["cpu_info", "latency"]


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
