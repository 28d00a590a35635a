"""Grad-CAM heat maps (Selvaraju et al., 2017) for the classifiers, and a PNG grid of them.

For each image: take the class (the model's top prediction unless given), the gradient of
that class's score (the pre-softmax logit) with respect to a conv layer's activations,
average it over space to weight each channel, sum the weighted activations, ReLU, resize to
the input size and scale to [0, 1].
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from lightcnn import io

DEFAULT_LAYER = "top_conv_act"
LOGITS_LAYER = "logits"


def _score_model(model, layer_name: str):
    """A model mapping images to (the conv layer's activations, the class scores).

    The scores are the "logits" layer's output when the model has one: the gradient of a
    softmax probability also depends on every other class, the logit's does not.
    """
    import keras

    layer_names = [layer.name for layer in model.layers]
    if layer_name not in layer_names:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r} for Grad-CAM; pick a conv "
                         f"activation from its top-level layers, e.g. one of {layer_names[-8:]}")
    activations = model.get_layer(layer_name).output
    if len(activations.shape) != 4:
        raise ValueError(f"Grad-CAM needs a spatial (N, H, W, C) layer; {layer_name!r} outputs "
                         f"{activations.shape}")
    scores = model.get_layer(LOGITS_LAYER).output if LOGITS_LAYER in layer_names else model.outputs[0]
    return keras.Model(model.inputs, [activations, scores])


def gradcam(model, images: np.ndarray, layer_name: str = DEFAULT_LAYER,
            class_index: int | np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM heat maps (N, H, W) float32 in [0, 1] at the input images' size.

    `images`: (N, H, W, C) float32 in [0, 1]. `class_index`: None for each image's predicted
    class (argmax of the model's output), an int for the same class on every image, or one
    index per image. A map that is zero everywhere (no positive evidence) stays zero.
    """
    import tensorflow as tf

    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    score_model = _score_model(model, layer_name)
    inputs = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        activations, scores = score_model(inputs, training=False)
        # The softmax is monotonic, so the top logit is the top prediction.
        if class_index is None:
            classes = tf.argmax(scores, axis=1, output_type=tf.int32)
        else:
            classes = np.broadcast_to(np.asarray(class_index, np.int32), (len(images),))
            if classes.min() < 0 or classes.max() >= scores.shape[-1]:
                raise ValueError(f"class_index must lie in [0, {scores.shape[-1]}), got {class_index}")
            classes = tf.constant(classes)
        class_scores = tf.gather(scores, classes, axis=1, batch_dims=1)
    # Each image's score depends only on its own activations, so one gradient serves the batch.
    gradients = tape.gradient(class_scores, activations)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1, keepdims=True))
    cams = tf.image.resize(cams, images.shape[1:3], method="bilinear")[..., 0].numpy()
    peaks = cams.reshape(len(cams), -1).max(axis=1)
    scale = np.divide(1.0, peaks, out=np.zeros_like(peaks), where=peaks > 0)
    return np.clip(cams * scale[:, None, None], 0.0, 1.0).astype(np.float32)


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (H, W, 1), got {image.shape}")
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45,
            colormap: str = "jet") -> np.ndarray:
    """The heat map in colour blended over the image: (H, W, 3) uint8.

    `image`: (H, W, 3) float in [0, 1] or uint8; `heatmap`: (H, W) in [0, 1].
    """
    import matplotlib

    rgb = _to_uint8_rgb(image).astype(np.float32)
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the image's {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255
    return np.round((1 - alpha) * rgb + alpha * colours).astype(np.uint8)


def save_gradcam_grid(model, images: np.ndarray, class_names: list[str], path: str | os.PathLike,
                      labels: np.ndarray | None = None, layer_name: str = DEFAULT_LAYER,
                      images_per_row: int = 4) -> Path:
    """Write a PNG grid: for each image, the image and its Grad-CAM overlay, titled with the
    predicted class and probability (and the true class when `labels`, indices or one-hot,
    are given). Written atomically; returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    images = np.asarray(images, np.float32)
    heatmaps = gradcam(model, images, layer_name=layer_name)
    probabilities = np.asarray(model(images, training=False))
    if probabilities.shape[-1] != len(class_names):
        raise ValueError(f"the model predicts {probabilities.shape[-1]} classes but {len(class_names)} "
                         "class names were given")
    if labels is not None:
        labels = np.asarray(labels)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
        if len(labels) != len(images):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")

    columns = 2 * min(images_per_row, len(images))
    rows = math.ceil(len(images) / images_per_row)
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, heatmap, probs) in enumerate(zip(images, heatmaps, probabilities)):
        row, column = divmod(i, images_per_row)
        predicted = int(probs.argmax())
        title = f"pred {class_names[predicted]} {probs[predicted]:.2f}"
        if labels is not None:
            title += f"\ntrue {class_names[int(labels[i])]}"
        image_ax, overlay_ax = axes[row, 2 * column], axes[row, 2 * column + 1]
        image_ax.imshow(_to_uint8_rgb(image))
        image_ax.set_title(title, fontsize=7)
        overlay_ax.imshow(overlay(image, heatmap))
        overlay_ax.set_title("Grad-CAM", fontsize=7)
    figure.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return Path(path)
