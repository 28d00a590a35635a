"""Removing the initial values' weight from BatchNorm moving statistics (lightcnn/training/batchnorm.py).
train_model applies it in a real run: tests/test_training.py checks the saved model's statistics."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from lightcnn.training.batchnorm import batch_norm_layers, remove_initial_bias


def _model_with_batch_norm() -> keras.Model:
    inputs = keras.Input((4, 4, 3))
    inner = keras.Sequential([keras.layers.Conv2D(5, 1), keras.layers.BatchNormalization(name="inner_bn")],
                             name="inner")
    x = keras.layers.BatchNormalization(name="outer_bn")(inner(inputs))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_the_correction_recovers_the_average_of_the_batches_seen():
    model = _model_with_batch_norm()
    layers = batch_norm_layers(model)
    assert [layer.name for layer in layers] == ["inner_bn", "outer_bn"]  # nested models included
    rng = np.random.default_rng(0)
    batch_means, batch_variances = rng.normal(size=(3, 5)), rng.uniform(1e-4, 1e-2, size=(3, 5))
    for layer in layers:
        # What three training steps leave from the initial (0, 1), in float32 as Keras computes it.
        momentum = np.float32(layer.momentum)
        mean, variance = np.zeros(5, np.float32), np.ones(5, np.float32)
        for batch_mean, batch_variance in zip(batch_means.astype(np.float32), batch_variances.astype(np.float32)):
            mean = mean * momentum + batch_mean * (np.float32(1) - momentum)
            variance = variance * momentum + batch_variance * (np.float32(1) - momentum)
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
        assert np.all(keras.ops.convert_to_numpy(layer.moving_variance) > 0.97)  # the bias: ~1, not ~1e-3
    weights = momentum ** np.arange(2, -1, -1) * (1 - momentum)  # the EMA's weights of steps 1, 2, 3
    expected_mean = weights @ batch_means / weights.sum()
    expected_variance = weights @ batch_variances / weights.sum()

    assert remove_initial_bias(model, steps=3) == 2
    for layer in layers:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), expected_mean, rtol=1e-4, atol=1e-6)
        # float32 rounding of ~1.0 before the division: absolute error ~1e-6, far below BatchNorm's epsilon (1e-3)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), expected_variance, atol=1e-5)


def test_nothing_changes_before_the_first_step_and_no_variance_goes_negative():
    model = _model_with_batch_norm()
    assert remove_initial_bias(model, steps=0) == 0
    layer = model.get_layer("outer_bn")
    assert np.array_equal(keras.ops.convert_to_numpy(layer.moving_variance), np.ones(5, np.float32))
    # A true variance of 0 seen once: rounding may put the stored value a hair below the bias.
    layer.moving_variance.assign(np.full(5, np.float32(layer.momentum) - np.float32(1e-7)))
    remove_initial_bias(model, steps=1)
    assert np.all(keras.ops.convert_to_numpy(layer.moving_variance) >= 0)


@pytest.mark.parametrize("steps", [1, 125, 10_000])
def test_the_initial_values_alone_correct_to_what_the_batches_gave(steps):
    """Batches of mean 0 and variance 1 are indistinguishable from the initial values: nothing moves."""
    model = _model_with_batch_norm()
    remove_initial_bias(model, steps=steps)
    for layer in batch_norm_layers(model):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), 1.0, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), 0.0, atol=1e-6)
