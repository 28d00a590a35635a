"""Training: the two recipes and train_model.

Recipes:
- "study": the original study's protocol (Adam at a constant 1e-3, batch 128, 150 epochs).
- "default": a modern short schedule (AdamW, linear warm-up then cosine decay, 30 epochs)
  meant to reach the study's CIFAR-10 accuracy in a fifth of the epochs.

train_model(...) builds a model with lightcnn.models.build_model, trains it and keeps in
out_dir:
- best.keras   the model of the epoch with the best validation accuracy;
- history.csv  one row per finished epoch (rewritten after each epoch, usable by DVC plots);
- checkpoint/  the last finished epoch (weights with optimizer state, the layers' random
               seed states, the run's history) and the best epoch's model, for resuming a
               killed run. It stays after a finished run (marked finished).

Every file is written under a temporary name and then renamed, so a killed run never leaves
a half-written file behind. checkpoint/state.json is renamed last: it is the commit point
of an epoch, and everything else can be rebuilt from it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lightcnn.io import atomic_path, write_text
from lightcnn.models import ATTENTIONS, build_model

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5", "lr",
                   "epoch_seconds")
CHECKPOINT_FORMAT = 1

# One-cycle as in fastai (without the momentum cycle): start at peak/25, end at peak/(25 * 1e4).
ONECYCLE_START_DIVISOR = 25.0
ONECYCLE_END_FRACTION = 1.0 / (25.0 * 1e4)


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting. Build it with resolve_config(recipe, **overrides)."""

    recipe: str             # the recipe the values started from: "default" or "study"
    epochs: int
    batch_size: int         # the datasets passed to train_model must be batched with it
    optimizer: str          # "adamw" | "adam" | "sgd"
    learning_rate: float    # peak learning rate (the constant one for schedule="constant")
    weight_decay: float     # decoupled weight decay on kernels (AdamW/SGD), Keras style: w -= lr * wd * w
    momentum: float         # SGD only
    nesterov: bool          # SGD only
    schedule: str           # "constant" | "cosine" | "onecycle"
    warmup_epochs: float    # linear warm-up to learning_rate (cosine/onecycle), may be fractional
    label_smoothing: float
    l2: float               # L2 penalty on conv/depthwise/dense kernels, added to the loss
    dropout: float          # before the classifier
    stochastic_depth: bool
    attention: str          # "se" | "cbam" | "ca" | "none"
    augment: bool           # random shifts and flips of the training images
    shift_fraction: float
    flip: bool
    seed: int
    deterministic: bool     # TF op determinism: identical runs on the same machine, a little slower

    def __post_init__(self) -> None:
        _validate(self)


RECIPES: dict[str, dict] = {
    # Modern short schedule: AdamW, 2 epochs of linear warm-up to 2e-3 (batch 128), cosine
    # decay to 0 at epoch 30, decoupled weight decay 0.05 on kernels (not biases or
    # BatchNorm). The L2 penalty is off (l2=0): through Adam an L2 gradient is rescaled per
    # weight by the adaptive denominator (weights with noisy gradients are hardly
    # regularised), and with the decoupled decay it would count twice. Adam-type updates
    # also don't depend on the weight scale, which matters here: the models start from
    # small random-uniform kernels, and in a short check on 5,000 CIFAR-10 images SGD
    # (Nesterov, lr 0.1, L2 2.5e-4) learned more slowly than Adam and AdamW. Shifts of 1/8
    # of the size are the usual 4-pixel pad-and-crop of CIFAR training.
    # momentum/nesterov are used by optimizer "sgd" only; for SGD set learning_rate 0.1
    # (x batch/128), weight_decay 0 and l2 2.5e-4 (= PyTorch's coupled weight decay 5e-4).
    "default": dict(
        epochs=30, batch_size=128, optimizer="adamw", learning_rate=2e-3, weight_decay=0.05,
        momentum=0.9, nesterov=True, schedule="cosine", warmup_epochs=2.0, label_smoothing=0.1,
        l2=0.0, dropout=0.5, stochastic_depth=True, attention="se", augment=True,
        shift_fraction=0.125, flip=True, seed=0, deterministic=True,
    ),
    # The study's protocol for its published results (shared/docs/seed-models.md).
    "study": dict(
        epochs=150, batch_size=128, optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
        momentum=0.0, nesterov=False, schedule="constant", warmup_epochs=0.0, label_smoothing=0.1,
        l2=5e-5, dropout=0.5, stochastic_depth=True, attention="se", augment=True,
        shift_fraction=0.2, flip=True, seed=0, deterministic=True,
    ),
}

CONFIG_KEYS = tuple(field.name for field in dataclasses.fields(TrainConfig))


def resolve_config(recipe: str, **overrides) -> TrainConfig:
    """The recipe's values with the non-None overrides applied, validated."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(map(repr, RECIPES))}; got {recipe!r}")
    unknown = sorted(set(overrides) - set(CONFIG_KEYS) - {"recipe"})
    if "recipe" in overrides or unknown:
        bad = unknown or ["recipe"]
        raise ValueError(f"unknown training setting(s) {', '.join(bad)} (the recipe is the first argument); "
                         f"valid settings: {', '.join(key for key in CONFIG_KEYS if key != 'recipe')}")
    values = {**RECIPES[recipe], **{key: value for key, value in overrides.items() if value is not None}}
    return TrainConfig(recipe=recipe, **values)


def _require(ok: bool, key: str, expected: str, value) -> None:
    if ok:
        return
    hint = ""
    if isinstance(value, str) and expected.startswith(("a number", "an integer")):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
    raise ValueError(f"training setting {key} must be {expected}; got {value!r}{hint}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(c: TrainConfig) -> None:
    def one_of(key: str, allowed: Sequence[str]) -> None:
        _require(getattr(c, key) in allowed, key, f"one of {', '.join(map(repr, allowed))}", getattr(c, key))

    def flag(key: str) -> None:
        _require(isinstance(getattr(c, key), bool), key, "true or false", getattr(c, key))

    def number(key: str, low: float, high: float | None = None, *, low_open: bool = False) -> None:
        """low <= value (low < value if low_open), and value < high when high is given."""
        value = getattr(c, key)
        ok = _is_number(value) and (value > low if low_open else value >= low) and (high is None or value < high)
        expected = (f"a number {'>' if low_open else '>='} {low}" if high is None
                    else f"a number in {'(' if low_open else '['}{low}, {high})")
        _require(ok, key, expected, value)

    one_of("recipe", tuple(RECIPES))
    _require(_is_int(c.epochs) and c.epochs >= 1, "epochs", "an integer >= 1", c.epochs)
    _require(_is_int(c.batch_size) and c.batch_size >= 1, "batch_size", "an integer >= 1", c.batch_size)
    one_of("optimizer", OPTIMIZERS)
    number("learning_rate", 0, low_open=True)
    number("weight_decay", 0)
    number("momentum", 0, 1)
    flag("nesterov")
    one_of("schedule", SCHEDULES)
    number("warmup_epochs", 0)
    number("label_smoothing", 0, 1)
    number("l2", 0)
    number("dropout", 0, 1)
    flag("stochastic_depth")
    one_of("attention", ATTENTIONS)
    flag("augment")
    number("shift_fraction", 0, 1)
    flag("flip")
    _require(_is_int(c.seed) and c.seed >= 0, "seed", "an integer >= 0", c.seed)
    flag("deterministic")
    # Combinations.
    if c.optimizer == "adam" and c.weight_decay > 0:
        raise ValueError("training setting weight_decay must be 0 with optimizer 'adam'; "
                         "use optimizer 'adamw' for decoupled weight decay")
    if c.schedule == "constant" and c.warmup_epochs > 0:
        raise ValueError("training setting warmup_epochs must be 0 with schedule 'constant'; "
                         "use schedule 'cosine' or 'onecycle' for a warm-up")
    if c.warmup_epochs >= c.epochs:
        raise ValueError(f"training setting warmup_epochs must be below epochs ({c.epochs}); got {c.warmup_epochs} "
                         "(for a short run, lower warmup_epochs too)")


# ----------------------------------------------------------------------------- optimiser


def make_learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's learning rate: a float, or a (serialisable) Keras schedule over optimizer steps.

    cosine:   linear warm-up from 0 to learning_rate, then cosine decay to 0 at the last step;
    onecycle: linear warm-up from learning_rate / 25, then cosine decay to learning_rate / 25e4.
    """
    if config.schedule == "constant":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    decay_steps = max(1, total_steps - warmup_steps)
    if config.schedule == "cosine":
        start, end_fraction = 0.0, 0.0
    else:
        start, end_fraction = config.learning_rate / ONECYCLE_START_DIVISOR, ONECYCLE_END_FRACTION
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps, alpha=end_fraction)
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps, alpha=end_fraction, warmup_target=config.learning_rate, warmup_steps=warmup_steps)


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
    num_classes = model.output_shape[-1]
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
    )


def current_learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


# ----------------------------------------------------------------------------- files


def write_history_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def copy_atomic(source: Path, destination: Path) -> None:
    with atomic_path(destination, suffix=destination.suffix) as tmp:
        shutil.copyfile(source, tmp)


# ----------------------------------------------------------------------------- checkpoint


def _rng_variables(model: keras.Model) -> list:
    """Variables that save_weights leaves out: the layers' random seed states (dropout,
    stochastic depth). Restoring them makes a resumed run draw the same masks."""
    saved = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


def _run_identity(model_name, num_classes, input_shape, config, steps_per_epoch, model) -> dict:
    """What a checkpoint must match to be resumed: the settings, the data size and the model."""
    return {
        "model_name": model_name,
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "steps_per_epoch": steps_per_epoch,
        "config": dataclasses.asdict(config),
        "weight_shapes": hashlib.sha256(json.dumps([list(w.shape) for w in model.weights]).encode()).hexdigest(),
    }


def _fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _identity_changes(old: dict, new: dict) -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "config":
            old_config, new_config = old.get(key, {}), new[key]
            changes += [f"{k}: {old_config.get(k)!r} -> {new_config.get(k)!r}"
                        for k in sorted(set(old_config) | set(new_config)) if old_config.get(k) != new_config.get(k)]
        elif old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return "; ".join(changes)


class Checkpoint:
    """out_dir/checkpoint/: state.json, the last epoch's weights (with the optimizer state)
    and the best epoch's model. state.json names both files and is written last: it is the
    commit point of an epoch. The best model lives here too so that out_dir/best.keras can
    be restored on resume (DVC deletes a stage's outputs before running it again)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.state_path = directory / "state.json"

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            _ = state["fingerprint"], state["identity"]["config"], state["epoch"], state["weights_file"], state["best_file"]
        except (ValueError, KeyError, TypeError) as error:
            raise RuntimeError(f"checkpoint state {self.state_path} is unreadable ({error!r}); delete "
                               f"{self.directory} to train from scratch") from error
        return state

    def save(self, model: keras.Model, state: dict, improved: bool) -> None:
        """Write the epoch state["epoch"] (state gains the file names and seed states)."""
        epoch = state["epoch"]
        weights_file = f"epoch-{epoch:04d}.weights.h5"
        with atomic_path(self.directory / weights_file, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)  # model weights and optimizer state
        if improved:
            state["best_file"] = f"best-epoch-{epoch:04d}.keras"
            with atomic_path(self.directory / state["best_file"], suffix=".keras") as tmp:
                model.save(tmp)
        state.update(format=CHECKPOINT_FORMAT, weights_file=weights_file,
                     rng_states=[keras.ops.convert_to_numpy(v).tolist() for v in _rng_variables(model)])
        write_text(self.state_path, json.dumps(state, indent=1))
        for stale in self.directory.iterdir():  # earlier epochs, leftovers of killed writes
            if stale.name not in (self.state_path.name, weights_file, state["best_file"]):
                stale.unlink()

    def restore(self, model: keras.Model, state: dict) -> None:
        for name in (state["weights_file"], state["best_file"]):
            if not (self.directory / name).exists():
                raise RuntimeError(f"checkpoint {self.state_path} names {self.directory / name}, which is missing; "
                                   f"delete {self.directory} to train from scratch")
        model.optimizer.build(model.trainable_variables)  # so its state loads too
        model.load_weights(self.directory / state["weights_file"])
        rng_variables = _rng_variables(model)
        if len(rng_variables) != len(state["rng_states"]):
            raise RuntimeError(f"checkpoint {self.state_path} holds {len(state['rng_states'])} random seed states, "
                               f"the model has {len(rng_variables)}; delete {self.directory} to train from scratch")
        for variable, value in zip(rng_variables, state["rng_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def mark_finished(self) -> None:
        state = self.load_state()
        if state is not None:
            write_text(self.state_path, json.dumps({**state, "finished": True}, indent=1))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def checkpoint_epoch(out_dir: str | os.PathLike, config: TrainConfig) -> int:
    """The epoch train_model would resume from in out_dir with these settings: the last
    finished epoch of an unfinished checkpoint of the same config, else 0. (train_model
    also checks the model and the data size, which need the model built.)"""
    state = Checkpoint(Path(out_dir) / "checkpoint").load_state()
    if state is None or state.get("finished") or state["identity"]["config"] != dataclasses.asdict(config):
        return 0
    return state["epoch"]


def write_outputs(out_dir: Path, checkpoint: Checkpoint, state: dict) -> None:
    """out_dir/best.keras and history.csv as of the checkpoint's state."""
    copy_atomic(checkpoint.directory / state["best_file"], out_dir / "best.keras")
    write_history_csv(out_dir / "history.csv", state["history"])


class _EpochRecorder(keras.callbacks.Callback):
    """At each epoch end: add lr and epoch_seconds to the logs, commit the checkpoint, then
    update best.keras and history.csv. Runs before the caller's callbacks, which therefore
    see "lr" in the logs (and the epoch is safely on disk when they run)."""

    def __init__(self, out_dir: Path, checkpoint: Checkpoint, state: dict):
        super().__init__()
        self.out_dir = out_dir
        self.checkpoint = checkpoint
        self.state = state
        self.epoch_start = self.validation_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.validation_start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.validation_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["lr"] = current_learning_rate(self.model)
        logs["epoch_seconds"] = time.perf_counter() - self.epoch_start
        row = {"epoch": epoch + 1, **{key: float(logs[key]) for key in HISTORY_COLUMNS[1:]}}
        state = self.state
        improved = state["best_epoch"] == 0 or row["val_accuracy"] > state["best_val_accuracy"]
        if improved:
            state["best_epoch"], state["best_val_accuracy"] = row["epoch"], row["val_accuracy"]
        state["epoch"] = row["epoch"]
        state["history"].append(row)
        state["train_seconds"] += row["epoch_seconds"]
        state["train_step_seconds"] += self.validation_start - self.epoch_start
        self.checkpoint.save(self.model, state, improved)
        write_outputs(self.out_dir, self.checkpoint, state)


# ----------------------------------------------------------------------------- training


def count_batches(dataset: tf.data.Dataset, name: str) -> int:
    """Batches in one pass of `dataset` (a full pass if its cardinality is unknown)."""
    batches = int(dataset.cardinality())
    if batches == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{name} repeats forever; pass one epoch of data (train_model repeats it itself)")
    if batches == tf.data.UNKNOWN_CARDINALITY:
        # One pass; dataset.apply(tf.data.experimental.assert_cardinality(n)) avoids it.
        batches = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    if batches == 0:
        raise ValueError(f"{name} is empty")
    return batches


def check_dataset(dataset: tf.data.Dataset, name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """The dataset yields (images (B, *input_shape), one-hot labels (B, num_classes))."""
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
    """Seed Python, NumPy, TensorFlow and Keras with config.seed and, with
    config.deterministic, turn on TF op determinism (for the whole process: TF cannot
    switch it off again).

    train_model calls it; call it before building the datasets too, because tf.data's
    seeded shuffles and random streams mix TF's global seed into their own.
    """
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def train_model(
    model_name: str,
    num_classes: int,
    input_shape: Sequence[int],
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> dict:
    """Train `model_name` on train_ds (one epoch of batches), validating on val_ds each epoch.

    Resumes from out_dir/checkpoint/ when it holds an unfinished run of the same model,
    settings and data size; the resumed run then ends exactly as an uninterrupted one would
    (same weights, same history) when the datasets are built the same way, after
    seed_everything(config), in a fresh process or not. A checkpoint of other settings, or
    of a finished run, is discarded and training starts from scratch; both are printed.
    The caller's `callbacks` get the Keras epoch logs plus "lr" and "epoch_seconds".
    `verbose` is Keras': 1 a progress bar per epoch, 2 one line per epoch, 0 silent.

    Returns best_epoch, best_val_accuracy, epochs_run (epochs in history.csv),
    train_seconds (all epochs, validation included, over all resumed sessions),
    images_per_second (training steps only, counted as steps x batch_size), params and
    resumed_from_epoch (0 for a fresh start).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see resolve_config); got {type(config).__name__}")
    input_shape = tuple(input_shape)
    check_dataset(train_ds, "train_ds", input_shape, num_classes)
    check_dataset(val_ds, "val_ds", input_shape, num_classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config)

    model = build_model(model_name, num_classes, input_shape, attention=config.attention, l2=config.l2,
                        dropout=config.dropout, stochastic_depth=config.stochastic_depth)
    steps_per_epoch = count_batches(train_ds, "train_ds")
    compile_model(model, config, steps_per_epoch)
    identity = _run_identity(model_name, num_classes, input_shape, config, steps_per_epoch, model)
    fingerprint = _fingerprint(identity)

    checkpoint = Checkpoint(out_dir / "checkpoint")
    state = checkpoint.load_state()
    if state is not None and state["fingerprint"] != fingerprint:
        print(f"Checkpoint in {checkpoint.directory} is from other settings "
              f"({_identity_changes(state.get('identity', {}), identity)}): training from scratch.")
        state = None
    elif state is not None and state.get("finished"):
        print(f"Checkpoint in {checkpoint.directory} is from a finished run: training again from scratch.")
        state = None
    if state is None:
        # Nothing of an earlier run may be mistaken for this one's.
        checkpoint.remove()
        for name in ("best.keras", "history.csv"):
            (out_dir / name).unlink(missing_ok=True)
        state = {"fingerprint": fingerprint, "identity": identity, "epoch": 0, "best_epoch": 0,
                 "best_val_accuracy": 0.0, "best_file": None, "train_seconds": 0.0, "train_step_seconds": 0.0,
                 "history": [], "finished": False}
    else:
        checkpoint.restore(model, state)
        print(f"Resuming from the checkpoint of epoch {state['epoch']} in {checkpoint.directory}.")
        # best.keras and history.csv may be missing (deleted by DVC) or ahead of the
        # checkpoint (written for an epoch cut short): rewrite them from it.
        write_outputs(out_dir, checkpoint, state)
    resumed_from_epoch = state["epoch"]

    # One endless stream of epochs, skipped forward to where the checkpoint stopped: the
    # shuffle order and augmentation of each epoch then match an uninterrupted run's.
    train_stream = train_ds.repeat().skip(resumed_from_epoch * steps_per_epoch)
    if 0 < resumed_from_epoch < config.epochs:
        print(f"Skipping the training data forward through {resumed_from_epoch} epochs (one data pass each), "
              "so that the resumed run sees the batches an uninterrupted run would.")
    if resumed_from_epoch < config.epochs:
        recorder = _EpochRecorder(out_dir, checkpoint, state)
        model.fit(train_stream, validation_data=val_ds, epochs=config.epochs, initial_epoch=resumed_from_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=[recorder, *callbacks], verbose=verbose,
                  shuffle=False)  # the dataset shuffles itself
    checkpoint.mark_finished()

    epochs_run = state["epoch"]
    images = epochs_run * steps_per_epoch * config.batch_size
    return {
        "best_epoch": state["best_epoch"],
        "best_val_accuracy": state["best_val_accuracy"],
        "epochs_run": epochs_run,
        "train_seconds": state["train_seconds"],
        "images_per_second": images / state["train_step_seconds"] if state["train_step_seconds"] > 0 else 0.0,
        "params": model.count_params(),
        "resumed_from_epoch": resumed_from_epoch,
    }
