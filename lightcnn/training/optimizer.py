"""The optimiser of a TrainConfig: learning-rate schedule, optimizer and compile."""
from __future__ import annotations

import keras

from lightcnn.training.config import TrainConfig

# One-cycle as in fastai (without the momentum cycle): start at peak/25, end at peak/(25 * 1e4).
ONECYCLE_START_DIVISOR = 25.0
ONECYCLE_END_FRACTION = 1.0 / (25.0 * 1e4)


def make_learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's learning rate: a float, or a (serialisable) Keras schedule over optimizer steps.

    The peak is config.peak_learning_rate (learning_rate scaled for the batch size).
    cosine:   linear warm-up from 0 to the peak, then cosine decay to 0 at the last step;
    onecycle: linear warm-up from peak / 25, then cosine decay to peak / 25e4.
    """
    peak = config.peak_learning_rate
    if config.schedule == "constant":
        return peak
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    decay_steps = max(1, total_steps - warmup_steps)
    if config.schedule == "cosine":
        start, end_fraction = 0.0, 0.0
    else:
        start, end_fraction = peak / ONECYCLE_START_DIVISOR, ONECYCLE_END_FRACTION
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=end_fraction)
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps, alpha=end_fraction, warmup_target=peak, warmup_steps=warmup_steps)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate = make_learning_rate(config, steps_per_epoch)
    weight_decay = config.weight_decay or None
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=weight_decay)
    if weight_decay:
        # Decay kernels only, like the L2 penalty: not biases or BatchNorm scales and offsets.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    """Compile with the config's optimiser, loss, metrics, jit_compile and steps_per_execution.

    Under the mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer itself.
    Call it under the distribution's scope: it creates the optimizer's variables.
    """
    num_classes = model.output_shape[-1]
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    # Its slot variables now, not on the first step: variables created inside the first
    # traced step make TensorFlow trace the whole train step a second time (~15 s per run).
    model.optimizer.build(model.trainable_variables)


def current_learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
