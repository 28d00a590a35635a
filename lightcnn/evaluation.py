"""Test-set evaluation: accuracy, loss, per-class accuracy and the confusion matrix.

The numbers come from one pass over the test set with numpy, so they are exact counts
(no per-batch averaging), and the loss is the plain categorical cross-entropy of the
predicted probabilities: no label smoothing and no L2 penalty, unlike Keras' training loss.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightcnn.io import atomic_path

# Probabilities are normalised and clipped to [EPSILON, 1 - EPSILON] before the log, as in
# Keras' categorical cross-entropy.
EPSILON = 1e-7
TOP_K = 5


def predict_with_labels(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), true class indices (N,)) over one pass of (images, one-hot labels)."""
    probabilities, labels = [], []
    for images, one_hot in dataset:
        batch_probabilities = np.asarray(model.predict_on_batch(images), dtype=np.float64)
        if tuple(one_hot.shape) != batch_probabilities.shape:
            raise ValueError(f"the dataset's labels have shape {one_hot.shape}, the model's predictions "
                             f"{batch_probabilities.shape}: labels must be one-hot over the model's classes")
        probabilities.append(batch_probabilities)
        labels.append(np.argmax(one_hot.numpy(), axis=-1))
    if not probabilities:
        raise ValueError("the test dataset is empty")
    return np.concatenate(probabilities), np.concatenate(labels)


def confusion_matrix(true_classes: np.ndarray, predicted_classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): rows = true class, columns = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (true_classes, predicted_classes), 1)
    return counts


def evaluate_model(model: keras.Model, test_ds: tf.data.Dataset, class_names: Sequence[str]) -> dict:
    """top1, top5, loss, per_class_accuracy {class: accuracy or None if absent},
    confusion_matrix (list of lists, rows = true, columns = predicted) and num_examples.

    top5 counts an example as right when fewer than 5 classes have a strictly higher
    probability than its true class (top-k with k = min(5, classes)).
    """
    class_names = list(class_names)
    probabilities, true_classes = predict_with_labels(model, test_ds)
    if probabilities.shape[1] != len(class_names):
        raise ValueError(f"the model predicts {probabilities.shape[1]} classes but {len(class_names)} class names "
                         "were given")
    rows = np.arange(len(true_classes))
    true_probability = probabilities[rows, true_classes]
    predicted_classes = np.argmax(probabilities, axis=1)
    higher = (probabilities > true_probability[:, None]).sum(axis=1)
    top_k = min(TOP_K, len(class_names))
    loss = -np.log(np.clip(true_probability / probabilities.sum(axis=1), EPSILON, 1.0 - EPSILON))

    counts = confusion_matrix(true_classes, predicted_classes, len(class_names))
    per_class_total = counts.sum(axis=1)
    per_class_accuracy = {
        name: (float(counts[index, index] / per_class_total[index]) if per_class_total[index] else None)
        for index, name in enumerate(class_names)
    }
    return {
        "top1": float(np.mean(predicted_classes == true_classes)),
        "top5": float(np.mean(higher < top_k)),
        "loss": float(np.mean(loss)),
        "per_class_accuracy": per_class_accuracy,
        "confusion_matrix": counts.tolist(),
        "num_examples": int(len(true_classes)),
    }


def per_class_accuracy_rows(per_class_accuracy: dict[str, float | None]) -> list[dict]:
    """One {"class": name, "accuracy": value} row per class (None: no test image of it), in
    class order, for DVC's bar plot templates."""
    return [{"class": name, "accuracy": accuracy} for name, accuracy in per_class_accuracy.items()]


def confusion_matrix_rows(cm: Sequence[Sequence[int]], class_names: Sequence[str]) -> list[dict]:
    """One {"actual": name, "predicted": name} row per test example, for DVC's "confusion"
    plot template (which counts rows itself), ordered by actual then predicted class."""
    counts = np.asarray(cm, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(class_names)} class names")
    return [
        {"actual": actual, "predicted": predicted}
        for actual, row in zip(class_names, counts)
        for predicted, count in zip(class_names, row)
        for _ in range(int(count))
    ]


def save_confusion_matrix_png(cm: Sequence[Sequence[int]], class_names: Sequence[str],
                              path: str | os.PathLike) -> None:
    """Heat map of the row-normalised matrix (each true class's share of predictions), with
    the counts written in the cells and class names on the axes when there are few classes."""
    counts = np.asarray(cm, dtype=np.int64)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {num_classes} class names")
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    size = min(4.0 + 0.45 * num_classes, 30.0)
    figure = Figure(figsize=(size, size * 0.9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if num_classes <= 30:
        axes.set_xticks(range(num_classes), labels=class_names, rotation=45, ha="right")
        axes.set_yticks(range(num_classes), labels=class_names)
    if num_classes <= 20:
        for true_index in range(num_classes):
            for predicted_index in range(num_classes):
                color = "white" if shares[true_index, predicted_index] > 0.5 else "black"
                axes.text(predicted_index, true_index, str(counts[true_index, predicted_index]),
                          ha="center", va="center", fontsize=8, color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix ({int(counts.sum())} examples)")
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
