"""BatchNorm moving statistics without the weight of their initial values.

Keras starts every BatchNormalization's moving mean at 0 and moving variance at 1 and moves
them by `momentum` (0.99) per training step: after t steps the initial values still weigh
momentum**t. The study's kernels are small (random-uniform ±0.05), so the true variances
are far below 1 (about 1e-3 after the stem): the moving variance of a fresh run sits
hundreds of times too high for about 700 steps, inference-mode activations shrink layer
after layer, and the model predicts one class for every image. With 125 steps per epoch
that showed as exactly 10% validation accuracy for the first three or four epochs while the
weights had learnt: mobilenetv3_large after 2 epochs (250 steps) predicted one class for all
of 500 CIFAR-10 test images (10%), and 32% once its statistics were recomputed from 500
training images; its stem's moving variance was 0.08 (0.99**250 = 0.081 of it the initial
1.0) against a true 0.0003 to 0.002.

The correction is the one Adam applies to its moments: divide out the initial values'
weight once, `moving <- (moving - momentum**t * initial) / (1 - momentum**t)`, after the
first epoch's t training steps, before its validation. From then on the moving averages
weigh only batches actually seen. Training itself never reads the moving statistics
(training-mode BatchNorm uses the batch's), so the weights are exactly those of an
uncorrected run; what changes is every inference-mode output: validation curves, the
choice of best epoch, the saved model.
"""
from __future__ import annotations

import keras
import numpy as np

INITIAL_MEAN, INITIAL_VARIANCE = 0.0, 1.0  # Keras' moving_mean / moving_variance initialisers


def batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization in the model, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found


def remove_initial_bias(model: keras.Model, steps: int) -> int:
    """Divide the initial values' weight out of every BatchNorm's moving statistics after
    `steps` training updates from the initial values. Returns the number of layers corrected."""
    if steps < 1:
        return 0
    layers = batch_norm_layers(model)
    for layer in layers:
        # The update runs in the variables' dtype (float32): use its momentum, not 0.99 exactly.
        dtype = np.dtype(keras.backend.standardize_dtype(layer.moving_mean.dtype))
        momentum = np.float64(dtype.type(layer.momentum))
        remaining = momentum ** steps
        mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
        variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
        mean = (mean - remaining * INITIAL_MEAN) / (1.0 - remaining)
        # Rounding can leave a tiny negative where the true variance is ~0.
        variance = np.maximum((variance - remaining * INITIAL_VARIANCE) / (1.0 - remaining), 0.0)
        layer.moving_mean.assign(mean.astype(dtype))
        layer.moving_variance.assign(variance.astype(dtype))
    return len(layers)


class UnbiasedBatchNormStatistics(keras.callbacks.Callback):
    """Apply `remove_initial_bias` once, at the first validation of a run that started from the
    initial statistics (a fresh run, not a resumed one: its checkpoint holds corrected ones)."""

    def __init__(self, fresh_start: bool):
        super().__init__()
        self.pending = fresh_start

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self.pending:
            self.pending = False
            remove_initial_bias(self.model, int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
