"""evaluate_model against hand-computed numbers, and the confusion-matrix outputs."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lightcnn.evaluation import (
    confusion_matrix_rows, evaluate_model, per_class_accuracy_rows, save_confusion_matrix_png,
)

CLASS_NAMES = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]

# Known predictions: the model below outputs its input, so these rows are its probabilities.
# True class of each example, and where it ranks among the 7 classes:
PROBABILITIES = np.array([
    [0.70, 0.10, 0.05, 0.05, 0.04, 0.03, 0.03],  # true 0: rank 1 (right)
    [0.10, 0.60, 0.10, 0.05, 0.05, 0.05, 0.05],  # true 1: rank 1 (right)
    [0.40, 0.05, 0.30, 0.10, 0.05, 0.05, 0.05],  # true 2: rank 2 (predicted 0)
    [0.02, 0.03, 0.05, 0.10, 0.20, 0.25, 0.35],  # true 3: rank 4 (predicted 6)
    [0.30, 0.25, 0.20, 0.12, 0.08, 0.03, 0.02],  # true 5: rank 6 (predicted 0), outside the top 5
    [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.70],  # true 6: rank 1 (right)
    [0.05, 0.50, 0.05, 0.05, 0.05, 0.05, 0.25],  # true 6: rank 2 (predicted 1)
], dtype=np.float32)
TRUE_CLASSES = np.array([0, 1, 2, 3, 5, 6, 6])


def identity_model() -> keras.Model:
    inputs = keras.Input((len(CLASS_NAMES),))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def dataset(batch_size: int) -> tf.data.Dataset:
    one_hot = np.eye(len(CLASS_NAMES), dtype=np.float32)[TRUE_CLASSES]
    return tf.data.Dataset.from_tensor_slices((PROBABILITIES, one_hot)).batch(batch_size)


@pytest.mark.parametrize("batch_size", [7, 3])  # one batch, and batches with a short last one
def test_evaluate_model_matches_hand_computation(batch_size):
    result = evaluate_model(identity_model(), dataset(batch_size), CLASS_NAMES)

    assert result["num_examples"] == 7
    assert result["top1"] == pytest.approx(3 / 7)  # examples 0, 1 and 5
    assert result["top5"] == pytest.approx(6 / 7)  # all but example 4 (true class ranked 6th)
    true_probabilities = [0.70, 0.60, 0.30, 0.10, 0.03, 0.70, 0.25]
    assert result["loss"] == pytest.approx(-sum(math.log(p) for p in true_probabilities) / 7, rel=1e-6)

    expected_cm = np.zeros((7, 7), dtype=int)
    for true, predicted in [(0, 0), (1, 1), (2, 0), (3, 6), (5, 0), (6, 6), (6, 1)]:
        expected_cm[true, predicted] += 1
    assert result["confusion_matrix"] == expected_cm.tolist()
    assert result["per_class_accuracy"] == {"c0": 1.0, "c1": 1.0, "c2": 0.0, "c3": 0.0, "c4": None,
                                            "c5": 0.0, "c6": 0.5}


def test_loss_is_keras_plain_categorical_cross_entropy():
    """Same number as Keras' cross-entropy without label smoothing, on a real softmax model."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    images = np.random.default_rng(0).random((20, 4, 4, 3), dtype=np.float32)
    labels = np.eye(5, dtype=np.float32)[np.arange(20) % 5]
    result = evaluate_model(model, tf.data.Dataset.from_tensor_slices((images, labels)).batch(6), list("abcde"))

    predictions = model.predict(images, verbose=0)
    expected_loss = float(keras.losses.CategoricalCrossentropy()(labels, predictions))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["top1"] == pytest.approx(np.mean(predictions.argmax(1) == np.arange(20) % 5))
    assert result["top5"] == 1.0  # five classes: the true one is always among the top five


def test_evaluate_model_rejects_mismatched_class_names():
    with pytest.raises(ValueError, match="7 classes but 3 class names"):
        evaluate_model(identity_model(), dataset(7), ["a", "b", "c"])


def test_per_class_accuracy_rows_keep_class_order_and_absent_classes():
    """The records DVC's bar plot reads: one per class, in class order, None for a class without test images."""
    assert per_class_accuracy_rows({"cat": 0.5, "ant": None, "dog": 1.0}) == [
        {"class": "cat", "accuracy": 0.5}, {"class": "ant", "accuracy": None}, {"class": "dog", "accuracy": 1.0}]


def test_confusion_matrix_rows_one_per_example():
    cm = [[2, 1, 0], [0, 0, 3], [1, 0, 0]]
    rows = confusion_matrix_rows(cm, ["cat", "dog", "eel"])
    assert len(rows) == 7
    pairs = [(row["actual"], row["predicted"]) for row in rows]
    assert pairs == [("cat", "cat"), ("cat", "cat"), ("cat", "dog"), ("dog", "eel"), ("dog", "eel"),
                     ("dog", "eel"), ("eel", "cat")]
    with pytest.raises(ValueError, match="does not match 2 class names"):
        confusion_matrix_rows(cm, ["cat", "dog"])


@pytest.mark.parametrize("num_classes", [3, 100])
def test_save_confusion_matrix_png(tmp_path, num_classes):
    rng = np.random.default_rng(num_classes)
    cm = rng.integers(0, 20, (num_classes, num_classes))
    cm[0] = 0  # a class with no examples must not break the row normalisation
    path = tmp_path / "plots" / "confusion.png"
    save_confusion_matrix_png(cm, [f"class {i}" for i in range(num_classes)], path)

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 300
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temporary file left
