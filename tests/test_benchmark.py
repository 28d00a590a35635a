"""Latency benchmark in LiteRT, and the multiply-accumulate counter against a hand count."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from lightcnn.benchmark import cpu_info, latency
from lightcnn.models import count_macs
from lightcnn.export import VARIANTS, convert


def _tiny_classifier() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, layers.Activation("softmax", name="predictions")(x))


@pytest.fixture(scope="module")
def tiny_tflite_variants() -> dict[str, bytes]:
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    calibration = np.random.default_rng(0).random((32, 16, 16, 3), dtype=np.float32)
    return {variant: convert(model, variant, calibration) for variant in VARIANTS}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_latency_reports_median_and_p90_per_variant_and_thread_count(tiny_tflite_variants, variant, threads):
    result = latency(tiny_tflite_variants[variant], threads=threads, warmup=5, runs=200)

    assert result["runs"] == 200 and result["threads"] == threads and result["warmup"] == 5
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["min_ms"] <= result["mean_ms"] <= result["max_ms"]
    assert result["xnnpack"] is True, "LiteRT's default XNNPACK delegate should run the model"
    assert result["input_dtype"] == variant.replace("float16", "float32")
    assert result["min_ms"] <= result["ci95_low_ms"] <= result["ci95_high_ms"] <= result["max_ms"]
    assert result["cpu"] == cpu_info()["model_name"]


def test_latency_reads_a_tflite_file_too(tiny_tflite_variants, tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_tflite_variants["float32"])
    assert latency(path, threads=1, warmup=0, runs=3)["runs"] == 3


@pytest.mark.parametrize("bad", [{"runs": 0}, {"threads": 0}, {"warmup": -1}, {"runs": 2.5}, {"threads": True}])
def test_latency_rejects_bad_arguments(tiny_tflite_variants, bad):
    arguments = {"threads": 1, "warmup": 0, "runs": 1, **bad}
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        latency(tiny_tflite_variants["float32"], **arguments)


def test_latency_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        latency(tmp_path / "missing.tflite", threads=1)


def test_cpu_info_names_the_cpu_and_counts_cores():
    info = cpu_info()
    assert isinstance(info["model_name"], str) and info["model_name"]
    assert info["logical_cores"] >= 1


def test_count_macs_matches_a_hand_count():
    inputs = keras.Input((16, 16, 3))
    # 3x3 conv, stride 2, same padding: 16x16x3 -> 8x8x8.
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    # 3x3 depthwise, valid padding, depth multiplier 2: 8x8x8 -> 6x6x16.
    x = layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(x)
    # 1x1 grouped conv, 4 groups: 6x6x16 -> 6x6x4, each output reading 16 / 4 = 4 channels.
    x = layers.Conv2D(4, 1, groups=4)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)  # 4 -> 10
    model = keras.Model(inputs, outputs)

    conv = 8 * 8 * 8 * (3 * 3 * 3)          # out_h * out_w * out_c * (k_h * k_w * in_c) = 13,824
    depthwise = 6 * 6 * 16 * (3 * 3)        # out_h * out_w * out_c * (k_h * k_w)        = 5,184
    grouped = 6 * 6 * 4 * (1 * 1 * 16 // 4)  # ... * (k_h * k_w * in_c / groups)          = 576
    dense = 4 * 10                          # in_features * units                        = 40
    assert count_macs(model) == conv + depthwise + grouped + dense == 19_624


def test_count_macs_walks_nested_models_and_dense_over_positions():
    inner_inputs = keras.Input((8, 8, 4))
    inner = keras.Model(inner_inputs, layers.Conv2D(6, 3, padding="same")(inner_inputs), name="inner")
    inputs = keras.Input((8, 8, 4))
    x = inner(inputs)
    outputs = layers.Dense(2)(x)  # applied at each of the 8 x 8 positions
    model = keras.Model(inputs, outputs)

    assert count_macs(model) == 8 * 8 * 6 * (3 * 3 * 4) + 8 * 8 * (6 * 2)


def test_count_macs_refuses_layers_it_cannot_count():
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layers.SeparableConv2D(4, 3)(inputs))
    with pytest.raises(NotImplementedError, match="SeparableConv2D"):
        count_macs(model)
