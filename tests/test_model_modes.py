"""Model modes: "faithful" builds the study's models as its TF 2.8 code really behaved,
"corrected" the intended design. Initialiser spreads, the stochastic-depth draw, the study's
CBAM and CA, the CSP part-2 activation, save/load and TFLite conversion of faithful models."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import keras
import numpy as np
import pytest
from keras import layers

from lightcnn.export import TFLiteModel, convert
from lightcnn.models import MODEL_MODES, ModelOptions, StochasticDepth, build_model
from lightcnn.models.blocks import (
    LayerFactory,
    cbam,
    cbam_study,
    coordinate_attention,
    coordinate_attention_study,
    study_cbam_kernel,
)
from lightcnn.study import STUDY_MODELS

MODES = ("corrected", "faithful")
ATTENTION_TAGS = ("_se_", "_cbam_", "_ca_")

# What the study's code gave each kind of kernel under tf.keras 2.8 (seed-models.md), written
# out here rather than read from MODEL_MODES so that the test checks the preset itself.
STUDY_INITIALIZERS = {
    "conv": "random_uniform",  # kernel_initializer honoured by Conv2D
    "depthwise": "glorot_uniform",  # kernel_initializer ignored by DepthwiseConv2D
    "attention": "glorot_uniform",  # no initializer passed
    "head": "glorot_uniform",  # no initializer passed
}


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], keras.Model]:
    """Each model once per mode, at CIFAR-10 size (building the large ones is slow)."""
    keras.utils.set_random_seed(0)
    return {(name, mode): build_model(name, 10, mode=mode) for mode in MODES for name in STUDY_MODELS}


# ----------------------------------------------------------------------------- initialisers


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in, fan_out as Keras (2 and 3) count them: kernel (k, k, in, out) or (in, out)."""
    receptive_field = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


# U(-limit, limit) of each uniform Keras initializer, from the kernel shape.
UNIFORM_LIMITS = {
    "random_uniform": lambda shape: 0.05,
    "glorot_uniform": lambda shape: math.sqrt(6 / sum(_fans(shape))),
    "he_uniform": lambda shape: math.sqrt(6 / _fans(shape)[0]),
    "lecun_uniform": lambda shape: math.sqrt(3 / _fans(shape)[0]),
}


def _kernels_by_role(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Every kernel, grouped as the options group initialisers (conv/depthwise/attention/head)."""
    roles: dict[str, list[np.ndarray]] = {"conv": [], "depthwise": [], "attention": [], "head": []}
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            roles["depthwise"].append(np.asarray(layer.kernel))  # (k, k, C, 1), as in tf.keras 2
        elif isinstance(layer, (layers.Conv2D, layers.Dense)):
            if layer.name == "logits":
                role = "head"
            elif any(tag in layer.name for tag in ATTENTION_TAGS):
                role = "attention"
            else:
                role = "conv"
            roles[role].append(np.asarray(layer.kernel))
    return roles


def _assert_uniform_spread(kernels: list[np.ndarray], initializer: str, what: str) -> None:
    """Each kernel lies within its U(-limit, limit), and the pooled kernel/limit has the std of
    U(-1, 1), 1/sqrt(3), within 15% (a loose bound: the pooled counts are thousands or more)."""
    if initializer not in UNIFORM_LIMITS:
        pytest.fail(f"{what}: this test knows the uniform initializers {sorted(UNIFORM_LIMITS)}, "
                    f"not {initializer!r}; teach it the new one's spread")
    scaled = []
    for kernel in kernels:
        limit = UNIFORM_LIMITS[initializer](kernel.shape)
        assert np.abs(kernel).max() <= limit * (1 + 1e-6), f"{what}: a {kernel.shape} kernel exceeds ±{limit:.4g}"
        scaled.append((kernel / limit).ravel())
    pooled = np.concatenate(scaled)
    assert pooled.size >= 1000
    assert pooled.std() == pytest.approx(1 / math.sqrt(3), rel=0.15), (
        f"{what}: pooled std {pooled.std() * math.sqrt(3):.3f} x the {initializer} std"
    )


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_faithful_initializers_are_the_studys(models, name):
    roles = _kernels_by_role(models[name, "faithful"])
    # Every model has SE rows, so all four roles are present.
    for role, initializer in STUDY_INITIALIZERS.items():
        assert roles[role], f"{name}: no {role} kernels found"
        _assert_uniform_spread(roles[role], initializer, f"{name} faithful {role}")


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_corrected_initializers_follow_the_corrected_options(models, name):
    options = MODEL_MODES["corrected"]
    roles = _kernels_by_role(models[name, "corrected"])
    for role in ("conv", "depthwise", "attention", "head"):
        initializer = getattr(options, f"{role}_initializer")
        _assert_uniform_spread(roles[role], initializer, f"{name} corrected {role}")


def test_the_spread_check_tells_glorot_from_random_uniform(models):
    # The faithful depthwise kernels fail the random-uniform check and vice versa: the test
    # above can fail. (Only meaningful while corrected keeps random-uniform depthwise kernels.)
    faithful = _kernels_by_role(models["our_small", "faithful"])["depthwise"]
    with pytest.raises(AssertionError):
        _assert_uniform_spread(faithful, "random_uniform", "faithful as random_uniform")
    if MODEL_MODES["corrected"].depthwise_initializer == "random_uniform":
        corrected = _kernels_by_role(models["our_small", "corrected"])["depthwise"]
        with pytest.raises(AssertionError):
            _assert_uniform_spread(corrected, "glorot_uniform", "corrected as glorot_uniform")


def test_l2_placement_in_faithful_mode():
    # The study passed L2 to conv, depthwise (as depthwise_regularizer, which tf.keras 2
    # reads), SE and head kernels, and none to its CBAM / CA layers.
    model = build_model("our_small", 10, attention="cbam", mode="faithful")
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            penalty = layer.depthwise_regularizer
        elif isinstance(layer, (layers.Conv2D, layers.Dense)):
            penalty = layer.kernel_regularizer
        else:
            continue
        if "_cbam_" in layer.name:
            assert penalty is None, layer.name
        else:
            assert isinstance(penalty, keras.regularizers.L2) and penalty.l2 == pytest.approx(5e-5), layer.name
    se = build_model("our_small", 10, mode="faithful").get_layer("stage1_part1_block1_se_reduce")
    assert se.kernel_regularizer.l2 == pytest.approx(5e-5)


# ----------------------------------------------------------------------------- stochastic depth


def _branches(batch: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    shortcut = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
    residual = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32) + 2.0  # no zeros: kept/dropped is visible
    return shortcut, residual


def _kept_per_sample(layer: StochasticDepth, shortcut, residual) -> np.ndarray:
    out = np.asarray(layer([shortcut, residual], training=True))
    kept = np.all(np.isclose(out, shortcut + residual), axis=(1, 2, 3))
    dropped = np.all(out == shortcut, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # each sample is exactly one of the two
    return kept


def test_per_batch_draw_is_shared_by_the_whole_batch():
    shortcut, residual = _branches(64)
    layer = StochasticDepth(0.5, seed=11, per_batch=True)
    outcomes = [_kept_per_sample(layer, shortcut, residual) for _ in range(24)]
    assert all(kept.all() or not kept.any() for kept in outcomes)
    # 24 fair draws: all equal has probability 2 * 0.5**24.
    assert any(kept.all() for kept in outcomes) and any(not kept.any() for kept in outcomes)


def test_per_sample_draw_varies_within_a_batch():
    shortcut, residual = _branches(64)
    kept = _kept_per_sample(StochasticDepth(0.5, seed=11, per_batch=False), shortcut, residual)
    assert kept.any() and not kept.all()  # all 64 equal has probability 2 * 0.5**64


def test_per_batch_inference_is_the_expected_value():
    shortcut, residual = _branches(8)
    out = StochasticDepth(0.7, per_batch=True)([shortcut, residual], training=False)
    np.testing.assert_allclose(np.asarray(out), shortcut + 0.7 * residual, rtol=1e-6)


def test_per_batch_serialises_and_old_configs_default_to_per_sample():
    layer = StochasticDepth(0.6, seed=7, per_batch=True, name="sd")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.per_batch is True
    old_config = {key: value for key, value in layer.get_config().items() if key != "per_batch"}
    assert StochasticDepth.from_config(old_config).per_batch is False  # models saved before the option
    with pytest.raises(ValueError, match="per_batch must be True or False"):
        StochasticDepth(0.5, per_batch="yes")


@pytest.mark.parametrize(("mode", "per_batch"), [("faithful", True), ("corrected", False)])
def test_modes_choose_the_draw(models, mode, per_batch):
    for name in STUDY_MODELS:
        drops = [layer for layer in models[name, mode].layers if isinstance(layer, StochasticDepth)]
        assert drops and all(layer.per_batch is per_batch for layer in drops), name


# ----------------------------------------------------------------------------- attention


def _attention_model(block, options: ModelOptions, shape=(8, 8, 32)) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, block(inputs, "blk_att", LayerFactory(options, 5e-5)))


def _layer_types(model: keras.Model) -> Counter:
    return Counter(type(layer).__name__ for layer in model.layers if not isinstance(layer, layers.InputLayer))


def _activations(model: keras.Model) -> Counter:
    return Counter(layer.activation.__name__ for layer in model.layers if isinstance(layer, layers.Activation))


def test_study_cbam_matches_the_studys_structure():
    model = _attention_model(cbam_study, MODEL_MODES["faithful"])
    # The study's CBAM_block on 8x8x32, layer by layer (Keras 3 names; its HardSigmoid /
    # HardSwish layers are Activation layers here, its reduce_mean + reduce_max +
    # Concatenate is one ChannelPool, the shared Dense layers are listed once):
    # GMP, GAP, shared Dense(16) -> hard-sigmoid (x2), shared Dense(32) -> hard-swish (x2),
    # Add -> hard-sigmoid -> Reshape(1, 1, 32) -> Multiply; channel mean/max -> Conv2D(1, 4)
    # -> hard-sigmoid -> Multiply.
    assert _layer_types(model) == Counter({
        "GlobalMaxPooling2D": 1, "GlobalAveragePooling2D": 1, "Dense": 2, "Activation": 6, "Add": 1,
        "Reshape": 1, "Multiply": 2, "ChannelPool": 1, "Conv2D": 1,
    })
    assert _activations(model) == Counter({"hard_sigmoid": 4, "hard_silu": 2})
    # Parameters, C = 32, width 8 (divides by 4, not 7: kernel 4), biases everywhere, no BN:
    #   Dense(C//2 = 16):  32 * 16 + 16 =  528
    #   Dense(C = 32):     16 * 32 + 32 =  544
    #   Conv2D(1, 4x4) on 2 channels: 4 * 4 * 2 * 1 + 1 = 33
    #   total 528 + 544 + 33 = 1105
    assert model.count_params() == 1105
    assert model.get_layer("blk_att_spatial_conv").kernel_size == (4, 4)


def test_study_ca_matches_the_studys_structure():
    model = _attention_model(coordinate_attention_study, MODEL_MODES["faithful"])
    # The study's CA_block on 8x8x32: two average pools (its AdaptiveAveragePooling2D to
    # (h, 1) and (1, w)), Permute x3, Concatenate, Conv2D(mip, 1) -> BN -> hard-sigmoid,
    # split in two (two Cropping2D here), Conv2D(C, 1) -> hard-sigmoid for each, Multiply x2.
    assert _layer_types(model) == Counter({
        "AveragePooling2D": 2, "Permute": 3, "Concatenate": 1, "Conv2D": 3, "BatchNormalization": 1,
        "Activation": 3, "Cropping2D": 2, "Multiply": 2,
    })
    assert _activations(model) == Counter({"hard_sigmoid": 3})
    # Parameters, C = 32, mip = max(8, 32 // 2) = 16:
    #   Conv2D(16, 1):   32 * 16 + 16 = 528
    #   BatchNorm(16):   4 * 16       =  64  (gamma, beta, moving mean, moving variance)
    #   Conv2D(32, 1) x2: 2 * (16 * 32 + 32) = 1088
    #   total 528 + 64 + 1088 = 1680
    assert model.count_params() == 1680


def test_study_ca_gates_along_the_width_axis_only():
    # The study's layout puts both gates on the width axis: out / x depends on the column
    # and the channel, never on the row. The paper flavour gates rows too.
    images = np.random.default_rng(3).uniform(0.5, 1.5, size=(2, 8, 8, 32)).astype(np.float32)
    images[:, :4] *= 3.0  # rows differ, so a row gate would differ too
    for block, row_invariant in ((coordinate_attention_study, True), (coordinate_attention, False)):
        keras.utils.set_random_seed(4)
        model = _attention_model(block, MODEL_MODES["faithful"])
        ratio = np.asarray(model(images, training=False)) / images
        spread_over_rows = np.abs(ratio - ratio[:, :1]).max()
        if row_invariant:
            assert spread_over_rows < 1e-5
        else:
            assert spread_over_rows > 1e-3


def test_paper_flavour_keeps_the_projects_blocks():
    # Ours: CBAM MLP C//4 with ReLU, 7x7 sigmoid spatial gate: (32*8+8) + (8*32+32) + (7*7*2+1) = 651.
    assert _attention_model(cbam, MODEL_MODES["corrected"]).count_params() == 651
    # Ours: CA width max(8, C//32) = 8, conv + BN(4*8) + two gates: 264 + 32 + 2 * 288 = 872.
    assert _attention_model(coordinate_attention, MODEL_MODES["corrected"]).count_params() == 872
    corrected = build_model("our_small", 10, attention="cbam", mode="corrected")
    assert any(layer.name.endswith("_cbam_spatial_gate") and isinstance(layer, layers.Conv2D)
               for layer in corrected.layers)


@pytest.mark.parametrize(("width", "kernel"), [(8, 4), (32, 4), (7, 7), (14, 7), (28, 7), (224, 7)])
def test_study_cbam_kernel_size(width, kernel):
    assert study_cbam_kernel(width, "blk") == kernel


def test_study_attention_input_limits_are_clear_errors():
    with pytest.raises(ValueError, match="width divisible by 7 or 4, got 6"):
        _attention_model(cbam_study, MODEL_MODES["faithful"], shape=(6, 6, 16))
    with pytest.raises(ValueError, match="needs a square feature map, got 8x4"):
        _attention_model(coordinate_attention_study, MODEL_MODES["faithful"], shape=(8, 4, 16))


# ----------------------------------------------------------------------------- CSP part 2


def _input_layer_names(model: keras.Model, layer_name: str) -> set[str]:
    inputs = model.get_layer(layer_name).input
    return {tensor._keras_history.operation.name for tensor in (inputs if isinstance(inputs, list) else [inputs])}


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_modes_differ_in_no_weight(models, name):
    """Modes change initialisers, the stochastic-depth draw and parameter-free layers only: the
    same weights (names aside: a faithful CSP part 2 lacks two activation layers), so the
    study's parameter counts (test_models.py, default mode) hold in both."""
    corrected, faithful = models[name, "corrected"], models[name, "faithful"]

    def shapes(weights) -> list[tuple[int, ...]]:
        return sorted(tuple(weight.shape) for weight in weights)

    assert shapes(faithful.weights) == shapes(corrected.weights)
    assert shapes(faithful.trainable_weights) == shapes(corrected.trainable_weights)


def test_csp_part2_activation_present_in_corrected_absent_in_faithful(models):
    corrected, faithful = models["our_large", "corrected"], models["our_large", "faithful"]
    # Stage 3: hard-swish, stride 2 (part 2 = 2x2 depthwise row, then 1x1 conv row).
    for name in ("stage3_part2_dw_conv_act", "stage3_part2_conv_act"):
        assert corrected.get_layer(name).activation is keras.activations.hard_silu
    faithful_names = {layer.name for layer in faithful.layers}
    assert not {"stage3_part2_dw_conv_act", "stage3_part2_conv_act"} & faithful_names
    # In the faithful graph BN feeds the next layer directly.
    assert _input_layer_names(faithful, "stage3_part2_conv") == {"stage3_part2_dw_conv_bn"}
    assert "stage3_part2_conv_bn" in _input_layer_names(faithful, "stage3_concat")
    assert "stage3_part2_conv_act" in _input_layer_names(corrected, "stage3_concat")
    # ReLU stages keep their activation in both modes (the study's ReLU branch compared the argument).
    for model in (corrected, faithful):
        assert model.get_layer("stage1_part2_conv_act").activation is keras.activations.relu
    # our_small stage 2: ReLU, stride 2 at CIFAR size, so part 2 has its depthwise row too.
    assert models["our_small", "faithful"].get_layer("stage2_part2_dw_conv_act").activation is keras.activations.relu


# ----------------------------------------------------------------------------- options, API


def test_mode_accepts_a_model_options_instance():
    options = dataclasses.replace(MODEL_MODES["corrected"], stochastic_depth_draw="batch")
    model = build_model("mobilenetv3_small", 10, mode=options)
    assert all(layer.per_batch for layer in model.layers if isinstance(layer, StochasticDepth))
    assert model.get_layer("stage3_block1_dw_conv").depthwise_initializer.__class__.__name__ == "RandomUniform"


def test_faithful_preset_is_the_study():
    faithful = MODEL_MODES["faithful"]
    assert (faithful.stochastic_depth_draw, faithful.csp_part2_activation, faithful.attention_flavour,
            faithful.attention_l2) == ("batch", False, "study", False)
    assert {role: getattr(faithful, f"{role}_initializer") for role in STUDY_INITIALIZERS} == STUDY_INITIALIZERS
    corrected = MODEL_MODES["corrected"]
    assert (corrected.stochastic_depth_draw, corrected.csp_part2_activation, corrected.attention_flavour,
            corrected.attention_l2) == ("sample", True, "paper", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        faithful.attention_l2 = True


@pytest.mark.parametrize(("change", "message"), [
    ({"conv_initializer": "glorot_unifrom"}, "conv_initializer: 'glorot_unifrom' is not a Keras initializer name"),
    ({"head_initializer": 0.05}, "head_initializer must be a Keras initializer name"),
    ({"stochastic_depth_draw": "layer"}, "unknown 'layer'; choose one of: batch, sample"),
    ({"attention_flavour": "timm"}, "unknown 'timm'; choose one of: study, paper"),
    ({"csp_part2_activation": "no"}, "csp_part2_activation must be True or False"),
])
def test_bad_options_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        ModelOptions(**change)


def test_unknown_mode_lists_the_choices():
    expected = "unknown mode 'study'; choose one of: corrected, faithful, or pass a ModelOptions"
    with pytest.raises(ValueError, match=expected):
        build_model("our_small", 10, mode="study")


# ----------------------------------------------------------------------------- save / load, TFLite


def _set_batchnorm_statistics(model: keras.Model, images: np.ndarray) -> None:
    """Moving statistics of `images`, so outputs differ between images (fresh ones collapse)."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.0
    model(images, training=True)


@pytest.mark.parametrize("attention", ["cbam", "ca"])
def test_faithful_model_saves_loads_and_converts_to_tflite(tmp_path, attention):
    """The faithful layers (the study's CBAM and CA, the per-batch drop path) through save, load
    without custom objects, and conversion. On the smoke network (one block of each kind,
    CSP's included, built with the same blocks and options): about 3 s each, where
    mobilenetv3_small took 12 to 14 s for the same claim. Each study network's conversion is
    test_export's."""
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)
    model = build_model("smoke", 10, attention=attention, mode="faithful")
    _set_batchnorm_statistics(model, images)
    expected = np.asarray(model(images, training=False))
    assert expected.std(axis=0).max() > 1e-3, "the outputs should differ between images"

    path = tmp_path / "faithful.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), expected)
    drops = [layer for layer in loaded.layers if isinstance(layer, StochasticDepth)]
    assert drops and all(layer.per_batch for layer in drops)

    actual = TFLiteModel(convert(loaded, "float32")).predict(images)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
