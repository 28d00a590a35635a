"""Grad-CAM points at the evidence: a model whose class only a coloured square decides.

The square's colour (red: class 0, green: class 1) decides the class and its position is
random, so a correct heat map must find it anywhere. (A square whose *position* decides the
class is no good test with a global-average-pooled model: such a model can only tell
positions apart from the image borders, and its heat maps rightly light up the borders.)
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

from lightcnn.gradcam import gradcam, overlay, save_gradcam_grid

SQUARE = 10


def _square_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dim noise with one bright square in the class's colour; returns images, labels, (row, col) corners."""
    images = rng.uniform(0.0, 0.35, (count, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    corners = rng.integers(0, 32 - SQUARE + 1, (count, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        image[row:row + SQUARE, col:col + SQUARE] = 0.0
        image[row:row + SQUARE, col:col + SQUARE, label] = 1.0
    return images, labels, corners


def _small_convnet(logits: bool = True) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 1)(x)
    x = layers.Activation("relu", name="top_conv_act")(x)  # 8 x 8
    x = layers.GlobalAveragePooling2D()(x)
    if not logits:
        return keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    x = layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, layers.Activation("softmax", name="predictions")(x))


@pytest.fixture(scope="module")
def square_model_and_test_set():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train_images, train_labels, _ = _square_images(600, rng)
    model = _small_convnet()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=6, batch_size=32, verbose=0)
    test = _square_images(60, rng)
    accuracy = model.evaluate(test[0], test[1], verbose=0)[1]
    assert accuracy == 1.0, f"the square model should be perfect after training, got {accuracy:.3f}"
    return model, test


def _inside_square(heatmaps: np.ndarray, corners: np.ndarray) -> np.ndarray:
    peaks = [np.unravel_index(heatmap.argmax(), heatmap.shape) for heatmap in heatmaps]
    return np.array([row <= r < row + SQUARE and col <= c < col + SQUARE
                     for (r, c), (row, col) in zip(peaks, corners)])


def test_heat_map_peaks_inside_the_square(square_model_and_test_set):
    model, (images, labels, corners) = square_model_and_test_set
    heatmaps = gradcam(model, images)

    assert heatmaps.shape == images.shape[:3] and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_allclose(heatmaps.reshape(len(images), -1).max(axis=1), 1.0)  # each map scaled to [0, 1]
    assert _inside_square(heatmaps, corners).all()
    # Most of the heat lies on the square, which covers under a tenth of the image.
    inside = [heatmap[r:r + SQUARE, c:c + SQUARE].sum() / heatmap.sum()
              for heatmap, (r, c) in zip(heatmaps, corners)]
    assert np.mean(inside) > 3 * SQUARE**2 / 32**2


def test_gradient_of_the_class_logit_not_of_the_saturated_probability(square_model_and_test_set):
    """Scaling the logits by 100 keeps every prediction but saturates the softmax: the
    probabilities are one-hot to within float32 rounding (how close depends on the CPU's exp
    kernel, so the check has a tolerance), where the probability's gradient all but vanishes;
    the logit's is only scaled, so the normalised maps must stay the same."""
    model, (images, labels, corners) = square_model_and_test_set
    certain = keras.models.clone_model(model)
    certain.set_weights(model.get_weights())
    kernel, bias = certain.get_layer("logits").get_weights()
    certain.get_layer("logits").set_weights([100 * kernel, 100 * bias])
    probabilities = certain.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities, np.round(probabilities), atol=1e-4)

    heatmaps = gradcam(certain, images)
    np.testing.assert_allclose(heatmaps, gradcam(model, images), atol=1e-5)
    assert _inside_square(heatmaps, corners).all()
    np.testing.assert_allclose(gradcam(model, images, class_index=labels), heatmaps, atol=1e-5)


def test_the_other_class_finds_no_evidence_on_the_square(square_model_and_test_set):
    model, (images, labels, corners) = square_model_and_test_set
    own = gradcam(model, images, class_index=labels)
    other = gradcam(model, images, class_index=1 - labels)

    def heat_on_square(heatmaps):
        return np.array([heatmap[r:r + SQUARE, c:c + SQUARE].mean() for heatmap, (r, c) in zip(heatmaps, corners)])

    assert np.all(heat_on_square(own) > heat_on_square(other))


def test_models_without_a_logits_layer_use_their_output_and_bad_layers_are_named():
    keras.utils.set_random_seed(1)
    model = _small_convnet(logits=False)
    images = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    heatmaps = gradcam(model, images)
    assert heatmaps.shape == (3, 32, 32) and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0
    with pytest.raises(ValueError, match="no_such_layer"):
        gradcam(model, images, layer_name="no_such_layer")
    with pytest.raises(ValueError, match="class_index"):
        gradcam(model, images, class_index=2)


def test_overlay_blends_a_colour_map_over_the_image():
    image = np.full((4, 6, 3), 0.5, np.float32)
    heatmap = np.zeros((4, 6), np.float32)
    heatmap[1, 2] = 1.0
    blended = overlay(image, heatmap, alpha=0.5)

    assert blended.shape == (4, 6, 3) and blended.dtype == np.uint8
    assert not np.array_equal(blended[1, 2], blended[0, 0])  # hot and cold pixels get different colours
    assert np.array_equal(overlay(image, heatmap, alpha=0.0), np.full((4, 6, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, heatmap[:3])


def test_grid_png_is_written_and_valid(square_model_and_test_set, tmp_path):
    model, (images, labels, _) = square_model_and_test_set
    path = save_gradcam_grid(model, images[:6], ["red", "green"], tmp_path / "figures" / "gradcam.png",
                             labels=labels[:6])

    assert path == tmp_path / "figures" / "gradcam.png"
    assert [p.name for p in path.parent.iterdir()] == ["gradcam.png"]  # no temporary file left behind
    with Image.open(path) as png:
        png.verify()
        assert png.format == "PNG" and png.size[0] > 400
    with pytest.raises(ValueError, match="class names"):
        save_gradcam_grid(model, images[:2], ["red"], tmp_path / "bad.png")
