"""lightcnn.models: published parameter counts, forward pass, save/load, stochastic depth,
attention variants, layer names the rest of the project relies on, and bad input."""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from lightcnn.models import ATTENTIONS, MODEL_NAMES, StochasticDepth, build_model, resolve_strides
from lightcnn.study import PUBLISHED_PARAMS, PUBLISHED_TRAINABLE_CIFAR10, STUDY_MODELS

CIFAR_SHAPE = (32, 32, 3)
BIRDS_SHAPE = (224, 224, 3)


@functools.cache
def cifar10_model(name: str) -> keras.Model:
    """`name` for 10 classes at 32x32 in the default options, built once per module: for the
    tests that only read a model (counts, layer names and settings, an inference pass). The
    study's networks take 0.5 to 1.5 s each to build; seven tests read the same ones."""
    return build_model(name, 10, CIFAR_SHAPE)


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def _random_images(count: int, shape=CIFAR_SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_parameter_counts_match_the_study(name):
    """In the default mode; the faithful mode has the very same weights (test_model_modes.py:
    test_modes_differ_in_no_weight), so its counts are these."""
    published = PUBLISHED_PARAMS[name]
    cifar10 = cifar10_model(name)
    assert cifar10.count_params() == published[10]
    assert _trainable_count(cifar10) == PUBLISHED_TRAINABLE_CIFAR10[name]
    assert build_model(name, 100, CIFAR_SHAPE).count_params() == published[100]
    assert build_model(name, 325, BIRDS_SHAPE).count_params() == published[325]


def test_attention_and_stochastic_depth_switches_change_what_they_should():
    se = cifar10_model("our_small")
    assert build_model("our_small", 10, stochastic_depth=False).count_params() == se.count_params()
    # "none" removes exactly the SE layers' weights.
    se_weights = sum(
        int(np.prod(w.shape)) for layer in se.layers if "_se_" in layer.name for w in layer.weights
    )
    assert se_weights > 0
    assert build_model("our_small", 10, attention="none").count_params() == se.count_params() - se_weights


# ----------------------------------------------------------------------------- forward pass, names


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_pass_gives_probabilities(name):
    model = cifar10_model(name)
    probabilities = np.asarray(model(_random_images(3), training=False))
    assert probabilities.shape == (3, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("input_shape", "strides", "feature_size"),
    [(CIFAR_SHAPE, "auto", 4), (BIRDS_SHAPE, "auto", 7), ((64, 64, 3), "auto", 8), ((64, 64, 3), "birds", 2)],
)
def test_strides_set_the_final_feature_map(input_shape, strides, feature_size):
    model = build_model("mobilenetv3_small", 5, input_shape, strides=strides)
    assert model.get_layer("top_conv_act").output.shape[1:3] == (feature_size, feature_size)


def test_resolve_strides():
    assert resolve_strides("auto", (64, 64, 3)) == "cifar"
    assert resolve_strides("auto", (65, 32, 3)) == "birds"
    assert resolve_strides("cifar", (224, 224, 3)) == "cifar"
    with pytest.raises(ValueError, match="unknown strides 'imagenet'; choose one of: cifar, birds, auto"):
        resolve_strides("imagenet", (32, 32, 3))


def test_residuals_follow_the_stride():
    # mobilenetv3_small's first MB (16 -> 16) has stride 1 for CIFAR but 2 for birds.
    cifar = {layer.name for layer in cifar10_model("mobilenetv3_small").layers}
    birds = {layer.name for layer in build_model("mobilenetv3_small", 10, (96, 96, 3), strides="birds").layers}
    assert "stage1_block1_add" in cifar
    assert "stage1_block1_add" not in birds


def test_head_and_grad_cam_layer_names():
    model = cifar10_model("mobilenetv3_large")
    top = model.get_layer("top_conv_act")
    assert top.activation is keras.activations.hard_silu
    assert top.output.shape[-1] == 1280  # the last 1x1 conv row
    logits = model.get_layer("logits")
    assert isinstance(logits, keras.layers.Dense)
    assert logits.activation is keras.activations.linear
    predictions = model.get_layer("predictions")
    assert predictions.activation is keras.activations.softmax
    assert model.layers[-1] is predictions
    assert isinstance(model.get_layer("stage3_block1_expand_conv"), keras.layers.Conv2D)


def test_stochastic_depth_survival_probabilities():
    large = cifar10_model("mobilenetv3_large")
    small = cifar10_model("mobilenetv3_small")
    assert large.get_layer("stage1_block1_add").survival_probability == pytest.approx(1 - 0.083)
    assert large.get_layer("stage6_block3_add").survival_probability == pytest.approx(1 - 0.083 * 6)
    assert small.get_layer("stage5_block3_add").survival_probability == pytest.approx(1 - 0.01 * 5)
    plain = build_model("mobilenetv3_small", 10, stochastic_depth=False)
    assert type(plain.get_layer("stage5_block3_add")) is keras.layers.Add
    assert not any(isinstance(layer, StochasticDepth) for layer in plain.layers)


def test_l2_on_every_kernel_and_zero_disables_it():
    def regularizers(model):
        found = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                found.append(layer.depthwise_regularizer)
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                found.append(layer.kernel_regularizer)
        return found

    with_l2 = regularizers(cifar10_model("our_small"))
    assert with_l2 and all(isinstance(r, keras.regularizers.L2) and r.l2 == pytest.approx(5e-5) for r in with_l2)
    assert all(r is None for r in regularizers(build_model("our_small", 10, l2=0)))


# ----------------------------------------------------------------------------- activations


def test_builtin_hard_swish_and_hard_sigmoid_are_the_spec_formulas():
    x = np.linspace(-8, 8, 2001, dtype=np.float32)
    relu6 = np.clip(x + 3, 0, 6)
    np.testing.assert_allclose(np.asarray(keras.activations.hard_sigmoid(x)), relu6 / 6, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(keras.activations.hard_silu(x)), x * relu6 / 6, rtol=1e-6, atol=1e-6)


def test_csp_part2_gets_the_stage_activation():
    model = cifar10_model("our_large")
    # Stage 3 is a hard-swish stage with stride 2: both part-2 rows end in hard-swish
    # (the original code left them without an activation).
    for name in ("stage3_part2_dw_conv_act", "stage3_part2_conv_act"):
        assert model.get_layer(name).activation is keras.activations.hard_silu
    assert model.get_layer("stage1_part2_conv_act").activation is keras.activations.relu
    # Part 2 has no channel split: it reads the whole previous stage output.
    assert model.get_layer("stage3_part2_dw_conv").input.shape[-1] == 24
    assert model.get_layer("stage3_concat").output.shape[-1] == 40


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(("name", "attention"), [("our_small", "se"), ("mobilenetv3_small", "cbam")])
def test_save_load_round_trip(tmp_path, name, attention):
    model = build_model(name, 10, attention=attention)
    images = _random_images(4, seed=1)
    expected = np.asarray(model(images, training=False))
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.models.load_model(path)  # no custom_objects: the layers are registered
    assert any(isinstance(layer, StochasticDepth) for layer in loaded.layers)
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), expected)


# ----------------------------------------------------------------------------- stochastic depth


def _branches(batch: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    shortcut = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
    residual = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32) + 2.0  # no zeros: kept/dropped is visible
    return shortcut, residual


def test_stochastic_depth_inference_is_the_expected_value():
    shortcut, residual = _branches(8)
    layer = StochasticDepth(0.7)
    np.testing.assert_allclose(
        np.asarray(layer([shortcut, residual], training=False)), shortcut + 0.7 * residual, rtol=1e-6
    )


def test_stochastic_depth_training_drops_whole_samples():
    shortcut, residual = _branches(200)
    out = np.asarray(StochasticDepth(0.5, seed=3)([shortcut, residual], training=True))
    kept = np.all(np.isclose(out, shortcut + residual), axis=(1, 2, 3))
    dropped = np.all(out == shortcut, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # each sample is exactly one of the two
    assert kept.any() and dropped.any()


def test_stochastic_depth_mean_approaches_expected_value():
    p = 0.7
    shortcut, residual = _branches(1)
    layer = StochasticDepth(p, seed=4)
    draws = np.repeat(shortcut, 4000, axis=0), np.repeat(residual, 4000, axis=0)
    mean = np.mean([np.asarray(layer(list(draws), training=True)).mean(axis=0) for _ in range(5)], axis=0)
    # 20,000 Bernoulli(0.7) draws: the kept fraction is within ~0.013 of p at 4 sigma.
    np.testing.assert_allclose(mean, shortcut[0] + p * residual[0], atol=0.013 * np.abs(residual).max())


def test_stochastic_depth_is_seeded_and_serialisable():
    shortcut, residual = _branches(64)
    first = StochasticDepth(0.5, seed=7)([shortcut, residual], training=True)
    second = StochasticDepth(0.5, seed=7)([shortcut, residual], training=True)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    layer = StochasticDepth(0.6, seed=7, name="sd")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, StochasticDepth)
    assert (clone.survival_probability, clone.seed, clone.name) == (0.6, 7, "sd")
    with pytest.raises(ValueError, match="survival_probability"):
        StochasticDepth(0.0)


# ----------------------------------------------------------------------------- attention variants


@pytest.mark.parametrize(("name", "attention"), [("our_small", "cbam"), ("our_small", "ca"), ("mobilenetv3_small", "ca")])
def test_attention_variants_train_one_step(name, attention):
    model = build_model(name, 10, attention=attention)
    names = [layer.name for layer in model.layers]
    assert any(f"_{attention}_" in n for n in names)
    assert not any("_se_" in n for n in names)
    # Only blocks marked SE in the table get the attention (stage 2 has none in both models).
    assert not any(n.startswith("stage2") and f"_{attention}_" in n for n in names)

    attention_weights = [w for w in model.trainable_weights if f"_{attention}_" in w.path]
    before = [np.array(w) for w in attention_weights]

    images = _random_images(4, seed=5)
    labels = keras.utils.to_categorical(np.arange(4) % 10, 10)
    # Eager: one step does not pay for tracing the training graph.
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before, attention_weights))  # it learns
    probabilities = np.asarray(model(images, training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_no_attention_builds_and_runs():
    model = build_model("our_large", 10, attention="none")
    names = [layer.name for layer in model.layers]
    assert not any(tag in n for n in names for tag in ("_se_", "_cbam_", "_ca_"))
    assert np.asarray(model(_random_images(2), training=False)).shape == (2, 10)


def test_a_table_of_ones_own_builds_with_the_same_blocks():
    from lightcnn.models import MODEL_SPECS
    from tests.tiny_model import TINY_SPEC

    copy = build_model("my_small", 10, spec=MODEL_SPECS["our_small"])
    assert copy.name == "my_small" and copy.count_params() == PUBLISHED_PARAMS["our_small"][10]
    tiny = build_model("tiny", 10, spec=TINY_SPEC)
    assert tiny.get_layer("stage2_part1_block1_se_gate") is not None and tiny.get_layer("top_conv") is not None
    assert tiny.count_params() < copy.count_params() / 100
    with pytest.raises(TypeError, match="spec must be a lightcnn.models.specs.ModelSpec"):
        build_model("tiny", 10, spec=TINY_SPEC.rows)
    with pytest.raises(ValueError, match="name must be an identifier"):
        build_model("my model", 10, spec=TINY_SPEC)


# ----------------------------------------------------------------------------- bad input


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError) as error:
        build_model("resnet", 10)
    assert "unknown model 'resnet'" in str(error.value)
    assert all(name in str(error.value) for name in MODEL_NAMES)


def test_unknown_attention_lists_the_choices():
    with pytest.raises(ValueError) as error:
        build_model("our_small", 10, attention="eca")
    assert "unknown attention 'eca'" in str(error.value)
    assert all(attention in str(error.value) for attention in ATTENTIONS)


def test_unknown_strides_lists_the_choices():
    with pytest.raises(ValueError, match="unknown strides 'imagenet'; choose one of: cifar, birds, auto"):
        build_model("our_small", 10, strides="imagenet")


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_int(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("our_small", num_classes)


@pytest.mark.parametrize("input_shape", [(32, 32), (0, 32, 3), (None, 32, 3)])
def test_bad_input_shape(input_shape):
    with pytest.raises(ValueError, match="input_shape must be three positive ints"):
        build_model("our_small", 10, input_shape)


@pytest.mark.parametrize(("option", "message"), [({"l2": -1e-4}, "l2 must be >= 0"), ({"dropout": 1.0}, "dropout must be in")])
def test_bad_regularisation_options(option, message):
    with pytest.raises(ValueError, match=message):
        build_model("our_small", 10, **option)


def test_numpy_ints_are_accepted():
    model = build_model("our_small", np.int64(7), (np.int64(32), 32, 3))
    assert model.output_shape == (None, 7)


def test_public_constants():
    assert MODEL_NAMES == ("mobilenetv3_large", "mobilenetv3_small", "our_large", "our_small", "smoke")
    assert MODEL_NAMES[:4] == STUDY_MODELS
    assert ATTENTIONS == ("se", "cbam", "ca", "none")
