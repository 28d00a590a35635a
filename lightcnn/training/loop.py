"""train_model: build a model, train it (resuming a killed run exactly) and keep its files.

out_dir receives:
- best.keras   the model of the epoch with the best validation accuracy (a plain float32
               model whatever the training precision, loadable on any backend);
- history.csv  one row per finished epoch (rewritten after each epoch, usable by DVC plots);
- checkpoint/  the last finished epoch and the best epoch's model, for resuming a killed run
               (see checkpoint.py). It stays after a finished run (marked finished).

The input is either a tf.data.Dataset (lightcnn.data.make_dataset; TensorFlow installed,
any backend) or an in-memory lightcnn.data.arrays.ImageArrays (no TensorFlow needed: the
batches are shuffled, augmented and converted on the device from config's settings).
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lightcnn.data.arrays import ImageArrays, evaluation_batches, training_batches
from lightcnn.models import build_model
from lightcnn.models.specs import ModelSpec
from lightcnn.training.backend import (
    Placement,
    dtype_policy,
    keep_output_float32,
    make_placement,
    prepare_process,
    synchronize_batch_norm,
)
from lightcnn.training.batchnorm import UnbiasedBatchNormStatistics
from lightcnn.training.callbacks import EpochRecorder
from lightcnn.training.checkpoint import Checkpoint, fingerprint, identity_changes, run_identity, write_outputs
from lightcnn.training.config import TrainConfig
from lightcnn.training.optimizer import compile_model


def _is_tf_dataset(data: Any) -> bool:
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def count_batches(dataset: Any, name: str) -> int:
    """Batches in one pass of a tf.data.Dataset (a full pass if its cardinality is unknown)."""
    import tensorflow as tf

    batches = int(dataset.cardinality())
    if batches == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{name} repeats forever; pass one epoch of data (train_model repeats it itself)")
    if batches == tf.data.UNKNOWN_CARDINALITY:
        # One pass; dataset.apply(tf.data.experimental.assert_cardinality(n)) avoids it.
        batches = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    if batches == 0:
        raise ValueError(f"{name} is empty")
    return batches


def check_dataset(dataset: Any, name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """The input is an ImageArrays of input_shape images and num_classes classes, or a
    tf.data.Dataset yielding (images (B, *input_shape), one-hot labels (B, num_classes))."""
    if isinstance(dataset, ImageArrays):
        if dataset.image_shape != tuple(input_shape) or dataset.num_classes != num_classes:
            raise ValueError(f"{name} holds {dataset.image_shape} images of {dataset.num_classes} classes; the model "
                             f"expects {tuple(input_shape)} and {num_classes}")
        return
    if not _is_tf_dataset(dataset):
        raise TypeError(f"{name} must be a tf.data.Dataset or a lightcnn.data.arrays.ImageArrays; "
                        f"got {type(dataset).__name__}")
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"{name} must yield (images, one-hot labels) pairs; its elements are {spec}")
    images, labels = spec
    if images.shape.rank is not None and (
        images.shape.rank != 1 + len(input_shape)
        or any(size is not None and size != want for size, want in zip(images.shape[1:], input_shape))
    ):
        raise ValueError(f"{name} images have shape {images.shape}; the model expects (batch, "
                         f"{', '.join(map(str, input_shape))})")
    if labels.shape.rank is not None and (labels.shape.rank != 2 or labels.shape[-1] not in (None, num_classes)):
        raise ValueError(f"{name} labels have shape {labels.shape}; expected one-hot (batch, {num_classes})")


def seed_everything(config: TrainConfig) -> None:
    """Seed Python, NumPy, Keras (and TensorFlow, when it is loaded) with config.seed and,
    with config.deterministic, turn on TensorFlow's op determinism (for the whole process:
    TF has no public switch to turn it off again; JAX's deterministic GPU kernels are set by
    prepare_process, before JAX starts).

    train_model calls it; call it before building tf.data datasets too, because tf.data's
    seeded shuffles and random streams mix TF's global seed into their own.
    """
    random.seed(config.seed)
    keras.utils.set_random_seed(config.seed)  # also TF's global seed when TF is installed
    if config.deterministic and "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _build(model_name: str, num_classes: int, input_shape: tuple, config: TrainConfig,
           placement: Placement, spec: ModelSpec | None) -> keras.Model:
    with dtype_policy(config.precision):
        model = build_model(model_name, num_classes, input_shape, attention=config.attention, l2=config.l2,
                            dropout=config.dropout, stochastic_depth=config.stochastic_depth,
                            mode=config.model_mode, spec=spec)
    if config.precision != "float32":
        keep_output_float32(model)
    synchronize_batch_norm(model, placement)
    return model


def train_model(
    model_name: str,
    num_classes: int,
    input_shape: Sequence[int],
    train_ds: Any,
    val_ds: Any,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    spec: ModelSpec | None = None,
) -> dict:
    """Train `model_name` on train_ds (one epoch of data), validating on val_ds each epoch.

    train_ds / val_ds: tf.data.Datasets (batched with config.batch_size; the training one
    shuffled and augmented by its builder), or ImageArrays (batched, shuffled and, with
    config.augment, augmented here from config.seed; an epoch is the full batches of a new
    shuffle). Both in the same form.

    Resumes from out_dir/checkpoint/ when it holds an unfinished run of the same model,
    settings and data size; the resumed run then ends exactly as an uninterrupted one would
    (same weights, same history) when the data are built the same way (tf.data: after
    seed_everything(config)), in a fresh process or not. A checkpoint of other settings, or
    of a finished run, is discarded and training starts from scratch; both are printed.
    The caller's `callbacks` get the Keras epoch logs plus "lr" and "epoch_seconds".
    `verbose` is Keras': 1 a progress bar per epoch, 2 one line per epoch, 0 silent.
    `spec`: train a table of your own (see build_model) named `model_name`.

    Every process of a multi-host launch calls it alike, each with its own out_dir (a
    local disk: processes must not share one); they end with the same weights.

    Returns best_epoch, best_val_accuracy, epochs_run (epochs in history.csv),
    train_seconds (all epochs, validation included, over all resumed sessions),
    images_per_second (training steps only, counted as steps x batch_size),
    steady_images_per_second (the same without each process's first epoch, which traces and
    compiles the step; None when there was no later epoch), params,
    resumed_from_epoch (0 for a fresh start), replicas (devices the batch was split over)
    and seconds_per_epoch: the mean training-step, validation and file-write seconds per epoch.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see resolve_config); got {type(config).__name__}")
    prepare_process(config)
    input_shape = tuple(input_shape)
    check_dataset(train_ds, "train_ds", input_shape, num_classes)
    check_dataset(val_ds, "val_ds", input_shape, num_classes)
    arrays_input = isinstance(train_ds, ImageArrays)
    if arrays_input != isinstance(val_ds, ImageArrays):
        raise TypeError("train_ds and val_ds must be of the same kind (both tf.data or both ImageArrays)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config)
    placement = make_placement(config, arrays_input=arrays_input)

    with placement.scope():
        model = _build(model_name, num_classes, input_shape, config, placement, spec)
        if arrays_input:
            train_batches = training_batches(
                train_ds, config.batch_size, seed=config.seed, augment=config.augment,
                shift_fraction=config.shift_fraction, flip=config.flip,
                # Full batches only: one compiled step shape, and every batch splits over the
                # devices; the images left out differ from epoch to epoch (new shuffle).
                drop_remainder=True,
                process_index=placement.process_index, process_count=placement.process_count)
            steps_per_epoch = len(train_batches)
        else:
            steps_per_epoch = count_batches(train_ds, "train_ds")
        compile_model(model, config, steps_per_epoch)
    identity = run_identity(model_name, num_classes, input_shape, config, steps_per_epoch, model, spec)
    run_fingerprint = fingerprint(identity)

    checkpoint = Checkpoint(out_dir / "checkpoint")
    state = checkpoint.load_state()
    if state is not None and state["fingerprint"] != run_fingerprint:
        print(f"Checkpoint in {checkpoint.directory} is from other settings "
              f"({identity_changes(state.get('identity', {}), identity)}): training from scratch.")
        state = None
    elif state is not None and state.get("finished"):
        print(f"Checkpoint in {checkpoint.directory} is from a finished run: training again from scratch.")
        state = None
    if state is None:
        # Nothing of an earlier run may be mistaken for this one's.
        checkpoint.remove()
        for name in ("best.keras", "history.csv"):
            (out_dir / name).unlink(missing_ok=True)
        state = {"fingerprint": run_fingerprint, "identity": identity, "epoch": 0, "best_epoch": 0,
                 "best_val_accuracy": 0.0, "best_file": None, "train_seconds": 0.0, "train_step_seconds": 0.0,
                 "history": [], "finished": False}
    else:
        with placement.scope():
            checkpoint.restore(model, state)
        print(f"Resuming from the checkpoint of epoch {state['epoch']} in {checkpoint.directory}.")
        # best.keras and history.csv may be missing (deleted by DVC) or ahead of the
        # checkpoint (written for an epoch cut short): rewrite them from it.
        write_outputs(out_dir, checkpoint, state)
    resumed_from_epoch = state["epoch"]

    if arrays_input:
        # Batch i of epoch e is a function of (seed, e, i): the recorder tells the batches
        # their epoch, so a resumed run needs no replay of the epochs before.
        train_stream: Any = train_batches
        train_batches.epoch = resumed_from_epoch
        validation = evaluation_batches(val_ds, config.batch_size, pad_to_multiple_of=placement.replicas)

        def on_epoch_start(epoch: int) -> None:
            train_batches.epoch = epoch
    else:
        # One endless stream of epochs, skipped forward to where the checkpoint stopped: the
        # shuffle order and augmentation of each epoch then match an uninterrupted run's.
        train_stream = train_ds.repeat().skip(resumed_from_epoch * steps_per_epoch)
        validation = val_ds
        on_epoch_start = None
        if 0 < resumed_from_epoch < config.epochs:
            print(f"Skipping the training data forward through {resumed_from_epoch} epochs (one data pass each), "
                  "so that the resumed run sees the batches an uninterrupted run would.")
    if resumed_from_epoch < config.epochs:
        recorder = EpochRecorder(out_dir, checkpoint, state, on_epoch_start=on_epoch_start)
        # A resumed run's checkpoint holds statistics corrected in its first epoch already.
        batch_norm = UnbiasedBatchNormStatistics(fresh_start=resumed_from_epoch == 0)
        with placement.scope():
            model.fit(train_stream, validation_data=validation, epochs=config.epochs,
                      initial_epoch=resumed_from_epoch, steps_per_epoch=steps_per_epoch,
                      callbacks=[recorder, batch_norm, *callbacks], verbose=verbose,
                      shuffle=False)  # the data shuffle themselves
    checkpoint.mark_finished()

    epochs_run = state["epoch"]
    images = epochs_run * steps_per_epoch * config.batch_size
    timing = state.get("timing", {})
    timed_epochs = max(1, timing.get("epochs", 0))
    return {
        "best_epoch": state["best_epoch"],
        "best_val_accuracy": state["best_val_accuracy"],
        "epochs_run": epochs_run,
        "train_seconds": state["train_seconds"],
        "images_per_second": images / state["train_step_seconds"] if state["train_step_seconds"] > 0 else 0.0,
        # Without the first epoch of each process (tracing, compilation): what benchmarks/
        # bench_train.py measures; None when no later epoch ran.
        "steady_images_per_second": (timing["steady_epochs"] * steps_per_epoch * config.batch_size
                                     / timing["steady_train_steps"]) if timing.get("steady_train_steps") else None,
        "params": model.count_params(),
        "resumed_from_epoch": resumed_from_epoch,
        "replicas": placement.replicas,
        "seconds_per_epoch": {part: timing.get(part, 0.0) / timed_epochs
                              for part in ("train_steps", "validation", "writes")},
    }

