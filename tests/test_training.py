"""Training: recipes and their validation, and train_model on a few hundred real CIFAR-10
images (outputs, determinism, resume after SIGKILL, fresh start on changed settings)."""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lightcnn.models import load_model
from lightcnn.training import (
    CONFIG_KEYS, HISTORY_COLUMNS, RECIPES, TrainConfig, checkpoint_epoch, make_learning_rate, resolve_config,
    seed_everything, train_model,
)
from tests.checkpoint_files import checkpoint_arrays
from tests.conftest import PROJECT_ROOT, STAGE_START, turn_op_determinism_off
from tests.tiny_model import TINY_NAME, TINY_SPEC

# ----------------------------------------------------------------------------- recipes


def test_recipes_hold_every_setting():
    for name, values in RECIPES.items():
        assert set(values) == set(CONFIG_KEYS) - {"recipe"}, name
        assert resolve_config(name) == TrainConfig(recipe=name, **values)


def test_study_recipe_is_the_published_protocol():
    config = resolve_config("study")
    assert (config.optimizer, config.learning_rate, config.schedule) == ("adam", 1e-3, "constant")
    assert config.weight_decay == 0 and config.warmup_epochs == 0
    assert (config.epochs, config.batch_size, config.label_smoothing, config.l2) == (150, 128, 0.1, 5e-5)
    assert config.stochastic_depth and config.augment and config.flip and config.shift_fraction == 0.2
    assert (config.dropout, config.attention) == (0.5, "se")


def test_default_recipe_is_a_short_warmup_cosine_schedule():
    config = resolve_config("default")
    assert config.epochs <= 30
    assert config.schedule in ("cosine", "onecycle") and 0 < config.warmup_epochs < config.epochs
    assert config.optimizer in ("sgd", "adamw")


def test_overrides_replace_recipe_values_and_none_keeps_them():
    config = resolve_config("study", epochs=3, optimizer="sgd", momentum=0.9, learning_rate=None, seed=7)
    assert (config.recipe, config.epochs, config.optimizer, config.momentum, config.seed) == ("study", 3, "sgd", 0.9, 7)
    assert config.learning_rate == RECIPES["study"]["learning_rate"]


@pytest.mark.parametrize("recipe, overrides, message", [
    ("fast", {}, r"recipe must be one of 'default', 'study'; got 'fast'"),
    ("study", {"optimizer": "rmsprop"}, r"optimizer must be one of 'adamw', 'adam', 'sgd'; got 'rmsprop'"),
    ("study", {"schedule": "step"}, r"schedule must be one of 'constant', 'cosine', 'onecycle'"),
    ("study", {"attention": "eca"}, r"attention must be one of 'se', 'cbam', 'ca', 'none'"),
    ("study", {"epochs": 0}, r"epochs must be an integer >= 1; got 0"),
    ("study", {"epochs": 2.5}, r"epochs must be an integer >= 1; got 2.5"),
    ("study", {"batch_size": -8}, r"batch_size must be an integer >= 1; got -8"),
    ("study", {"learning_rate": "1e-3"}, r"learning_rate must be a number > 0; got '1e-3' \(YAML"),
    ("study", {"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\); got 1.0"),
    ("study", {"augment": "yes"}, r"augment must be true or false"),
    ("study", {"weight_decay": 0.05}, r"weight_decay must be 0 with optimizer 'adam'; use optimizer 'adamw'"),
    ("default", {"epochs": 2}, r"warmup_epochs must be below epochs \(2\)"),
    ("study", {"epoch": 3}, r"unknown training setting\(s\) epoch .*valid settings: epochs, batch_size"),
])
def test_bad_settings_name_the_key_and_what_is_allowed(recipe, overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(recipe, **overrides)


def test_learning_rate_schedules():
    steps_per_epoch = 10
    settings = dict(epochs=10, warmup_epochs=2, learning_rate=0.1)
    cosine = make_learning_rate(resolve_config("default", schedule="cosine", **settings), steps_per_epoch)
    onecycle = make_learning_rate(resolve_config("default", schedule="onecycle", **settings), steps_per_epoch)
    assert make_learning_rate(resolve_config("study"), steps_per_epoch) == 1e-3

    def lr(schedule, step):
        return float(schedule(step))

    # cosine: linear warm-up 0 -> 0.1 over 20 steps, then cosine down to 0 at step 100
    assert [lr(cosine, step) for step in (0, 10, 20)] == pytest.approx([0.0, 0.05, 0.1])
    assert lr(cosine, 60) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lr(cosine, 100) == pytest.approx(0.0, abs=1e-9)
    # onecycle: from 0.1 / 25 up to 0.1, then down to 0.1 / 25e4
    assert [lr(onecycle, step) for step in (0, 20, 100)] == pytest.approx([0.004, 0.1, 0.1 / 25e4])
    # Serialisable, so best.keras reloads with its optimizer.
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(cosine))
    assert lr(restored, 60) == lr(cosine, 60)


def test_deterministic_seeding_turns_op_determinism_on_and_each_test_ends_with_it_off():
    """seed_everything with deterministic=True turns TensorFlow's op determinism on for the
    whole process; conftest turns it off after every test, so that the xdist worker's next
    files do not run under it (this test starts with it off after any other)."""
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    seed_everything(resolve_config("default", seed=0, deterministic=False))
    assert not tf_config.is_op_determinism_enabled()
    seed_everything(resolve_config("default", seed=0))
    assert tf_config.is_op_determinism_enabled()
    turn_op_determinism_off()
    assert not tf_config.is_op_determinism_enabled()


# ----------------------------------------------------------------------------- train_model

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_SHAPE = (32, 32, 3)
# Two epochs of 4 steps (80 images, batches of 20): the cosine schedule warms up over the first
# half epoch and ends at 0; dropout and stochastic depth are on, so resume must restore their
# random states too. (What these tests cost is mostly TensorFlow tracing the train step once
# per train_model call, in proportion to the network's layers; the steps themselves are cheap.
# Hence tests/tiny_model.py's network, and as few runs as the claims need.)
CONFIG = resolve_config("default", epochs=2, batch_size=20, warmup_epochs=0.5, seed=0)
TRAIN_PER_CLASS, VAL_PER_CLASS = 8, 2


@functools.lru_cache(maxsize=None)
def cifar10_images(archive: Path, split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images of each class of a split of a CIFAR-10 JPEG archive (the
    session's subset of the shared one: conftest.cifar10_subset), as (uint8 images, labels)."""
    images, labels = [], []
    counts = dict.fromkeys(CLASS_NAMES, 0)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != split or not member.isfile() or counts[parts[1]] >= per_class:
                continue
            counts[parts[1]] += 1
            images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
            labels.append(CLASS_NAMES.index(parts[1]))
            if min(counts.values()) >= per_class:
                break
    return np.stack(images), np.array(labels)


def make_datasets(archive: Path, seed: int = 0) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Fresh train/val datasets like lightcnn.data's: a seeded shuffle with a new order each
    pass and random flips keyed by a per-batch random stream, also new on each pass."""
    def as_inputs(images, labels):
        return images.astype(np.float32) / 255.0, np.eye(len(CLASS_NAMES), dtype=np.float32)[labels]

    train_images, train_labels = as_inputs(*cifar10_images(archive, "train", TRAIN_PER_CLASS))
    val_images, val_labels = as_inputs(*cifar10_images(archive, "test", VAL_PER_CLASS))

    def flip_some(batch, key):
        images, labels = batch
        draws = tf.random.stateless_uniform([tf.shape(images)[0]], seed=tf.stack([tf.constant(seed, tf.int64), key]))
        flips = draws < 0.5
        return tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images), labels

    train = tf.data.Dataset.from_tensor_slices((train_images, train_labels)).shuffle(
        len(train_labels), seed=seed, reshuffle_each_iteration=True).batch(CONFIG.batch_size)
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    train = tf.data.Dataset.zip(train, keys).map(flip_some)
    val = tf.data.Dataset.from_tensor_slices((val_images, val_labels)).batch(CONFIG.batch_size)
    return train, val


class EpochLog(keras.callbacks.Callback):
    """Records the epochs a run trains, the logs its callbacks receive and the weights."""

    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []
        self.logs: list[dict] = []
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.logs.append(dict(logs))
        self.weights.append(self.model.get_weights())


def run(out_dir: Path, archive: Path, config=CONFIG, callbacks=()) -> dict:
    """What a pipeline stage does: seed, build the datasets, train."""
    seed_everything(config)
    train, val = make_datasets(archive, config.seed)
    return train_model(TINY_NAME, len(CLASS_NAMES), INPUT_SHAPE, train, val, config, out_dir, callbacks=callbacks,
                       verbose=0, spec=TINY_SPEC)


def read_history(out_dir: Path) -> list[dict]:
    with open(out_dir / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def without_timing(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "epoch_seconds"} for row in rows]


def assert_same_arrays(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not np.array_equal(first[name], second[name])]
    assert not different, f"{len(different)} of {len(first)} arrays differ, e.g. {different[:3]}"


CHILD_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
""" + STAGE_START + """import keras
from tests.test_training import run

class KillAfterFirstEpoch(keras.callbacks.Callback):
    # The caller's callbacks run after train_model has checkpointed the epoch.
    def on_epoch_end(self, epoch, logs=None):
        os.kill(os.getpid(), signal.SIGKILL)

run({out_dir!r}, {archive!r}, callbacks=[KillAfterFirstEpoch()])
"""


@pytest.fixture(scope="module")
def child_killed_after_epoch_1(tmp_path_factory, cifar10_subset):
    """A training process that SIGKILLs itself right after its first epoch, started early
    so that it runs beside the in-process training: (process, its out_dir)."""
    out_dir = tmp_path_factory.mktemp("killed")
    script = out_dir.parent / "train_then_die.py"
    script.write_text(CHILD_SCRIPT.format(root=str(PROJECT_ROOT), out_dir=str(out_dir), archive=str(cifar10_subset)))
    log = out_dir.parent / "train_then_die.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(script)], cwd=PROJECT_ROOT, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    yield process, out_dir, log
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, child_killed_after_epoch_1, cifar10_subset):
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    epoch_log = EpochLog()
    summary = run(out_dir, cifar10_subset, callbacks=[epoch_log])
    return out_dir, summary, epoch_log


@pytest.fixture(scope="module")
def killed_after_epoch_1(child_killed_after_epoch_1):
    process, out_dir, log = child_killed_after_epoch_1
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return out_dir


def test_train_model_writes_best_model_history_and_checkpoint(uninterrupted):
    out_dir, summary, epoch_log = uninterrupted
    assert {"best.keras", "history.csv", "checkpoint"} <= {path.name for path in out_dir.iterdir()}
    assert (out_dir / "checkpoint" / "state.json").exists()
    assert not list(out_dir.rglob(".*")), "temporary files left behind"
    # The best epoch's model, the last epoch's weights (the same file when it was the best) and the state.
    last_weights = {2: "best-epoch-0002.keras"}.get(summary["best_epoch"], "epoch-0002.weights.h5")
    assert sorted(path.name for path in (out_dir / "checkpoint").iterdir()) == sorted(
        {f"best-epoch-{summary['best_epoch']:04d}.keras", last_weights, "state.json"})

    history = read_history(out_dir)
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert [int(row["epoch"]) for row in history] == [1, 2]
    val_accuracy = [float(row["val_accuracy"]) for row in history]
    assert summary["best_epoch"] == 1 + int(np.argmax(val_accuracy))
    assert summary["best_val_accuracy"] == pytest.approx(max(val_accuracy))
    assert (summary["epochs_run"], summary["resumed_from_epoch"]) == (2, 0)
    assert summary["params"] == load_model(out_dir / "best.keras").count_params() > 0
    assert summary["images_per_second"] > 0
    assert summary["steady_images_per_second"] > 0  # epoch 2: timed without the first epoch's tracing
    assert summary["train_seconds"] == pytest.approx(sum(float(row["epoch_seconds"]) for row in history))

    # lr after epoch 1 (step 4 of 8; warm-up 2 steps, then 6 of cosine) and at the end (0).
    lr = [float(row["lr"]) for row in history]
    assert lr[0] == pytest.approx(CONFIG.peak_learning_rate * 0.5 * (1 + math.cos(math.pi * 2 / 6)))
    assert lr[1] == pytest.approx(0.0, abs=1e-9)
    # The caller's callbacks got the same epochs, with lr in the logs.
    assert epoch_log.epochs == [0, 1]
    assert [logs["lr"] for logs in epoch_log.logs] == pytest.approx(lr)

    # best.keras is the best epoch's model (and not the other epoch's).
    best_weights = load_model(out_dir / "best.keras").get_weights()
    for epoch, weights in enumerate(epoch_log.weights, start=1):
        same = all(np.array_equal(a, b) for a, b in zip(best_weights, weights))
        assert same == (epoch == summary["best_epoch"]), epoch


def test_batch_norm_statistics_carry_no_weight_of_their_initial_values(uninterrupted, cifar10_subset):
    """After 8 steps Keras' moving variance still holds 0.99**8 = 92% of its initial 1.0, while
    the stem's true variance is about 1e-3 (the study's small kernels): corrected, the saved
    model's statistics are those of the images (lightcnn/training/batchnorm.py)."""
    out_dir, _, _ = uninterrupted
    model = load_model(out_dir / "best.keras")
    images = cifar10_images(cifar10_subset, "train", TRAIN_PER_CLASS)[0].astype(np.float32) / 255.0
    stem = model.get_layer("stem_conv_bn")
    stem_output = keras.ops.convert_to_numpy(keras.Model(model.input, stem.input)(images))
    true_variance = stem_output.var(axis=(0, 1, 2))
    moving_variance = keras.ops.convert_to_numpy(stem.moving_variance)
    assert float(np.max(true_variance)) < 0.05  # the premise: far below the initial 1.0
    ratio = np.median(moving_variance / true_variance)
    assert 1 / 3 < ratio < 3, f"moving variance {ratio:.1f} times the images' (uncorrected: about 1000)"


def test_same_seed_and_data_give_identical_runs(uninterrupted, tmp_path, capsys, cifar10_subset):
    """The second run goes into a copy of the first one's out_dir: a finished run's
    checkpoint is not resumed, training starts again and ends identically."""
    first_dir, first_summary, _ = uninterrupted
    second_dir = tmp_path / "run"
    shutil.copytree(first_dir, second_dir)
    assert checkpoint_epoch(second_dir, CONFIG) == 0  # finished: nothing to resume
    second_summary = run(second_dir, cifar10_subset)
    assert "is from a finished run: training again from scratch" in capsys.readouterr().out
    assert second_summary["resumed_from_epoch"] == 0
    assert without_timing(read_history(second_dir)) == without_timing(read_history(first_dir))
    assert_same_arrays(checkpoint_arrays(second_dir), checkpoint_arrays(first_dir))
    assert second_summary["best_val_accuracy"] == first_summary["best_val_accuracy"]


def test_killed_run_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_run(
        uninterrupted, killed_after_epoch_1, tmp_path, cifar10_subset):
    out_dir = tmp_path / "run"
    shutil.copytree(killed_after_epoch_1, out_dir)
    history_before = read_history(out_dir)
    assert [int(row["epoch"]) for row in history_before] == [1]
    assert checkpoint_epoch(out_dir, CONFIG) == 1
    assert checkpoint_epoch(out_dir, CONFIG.model_copy(update={"seed": 1})) == 0
    # DVC deletes a stage's outputs before running it again: resume must bring them back.
    (out_dir / "best.keras").unlink()
    (out_dir / "history.csv").unlink()

    epoch_log = EpochLog()
    summary = run(out_dir, cifar10_subset, callbacks=[epoch_log])
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 2
    assert epoch_log.epochs == [1]  # only the second epoch was trained
    history = read_history(out_dir)
    assert [int(row["epoch"]) for row in history] == [1, 2]
    assert history[0] == history_before[0]  # epoch 1 kept as it was, timing included
    assert (out_dir / "best.keras").exists()

    # Same weights, optimizer state and history as the run that was never interrupted.
    uninterrupted_dir, uninterrupted_summary, _ = uninterrupted
    assert without_timing(history) == without_timing(read_history(uninterrupted_dir))
    assert_same_arrays(checkpoint_arrays(out_dir), checkpoint_arrays(uninterrupted_dir))
    assert summary["best_epoch"] == uninterrupted_summary["best_epoch"]


class StopBeforeTheFirstStep(keras.callbacks.Callback):
    """Records the epoch that training starts at, then stops train_model before it traces a step."""

    class Stopped(Exception):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        self.first_epoch = epoch
        raise self.Stopped


def test_checkpoint_of_other_settings_is_not_resumed(killed_after_epoch_1, tmp_path, capsys, cifar10_subset):
    """The checkpoint (and the outputs) of other settings are discarded and fit starts at epoch
    0. The run is stopped there: what a fresh start trains is the uninterrupted run's path,
    tested above, and a whole second training would only repeat it."""
    out_dir = tmp_path / "run"
    shutil.copytree(killed_after_epoch_1, out_dir)
    assert checkpoint_epoch(out_dir, CONFIG) == 1  # resumable with its own settings
    changed = resolve_config("default", epochs=1, batch_size=20, warmup_epochs=0.5, seed=1)
    stop = StopBeforeTheFirstStep()
    with pytest.raises(StopBeforeTheFirstStep.Stopped):
        run(out_dir, cifar10_subset, changed, callbacks=[stop])

    assert "is from other settings (epochs: 2 -> 1; seed: 0 -> 1): training from scratch" in capsys.readouterr().out
    assert stop.first_epoch == 0
    # Nothing of the other settings' run is left to be mistaken for this one's.
    assert not (out_dir / "best.keras").exists() and not (out_dir / "history.csv").exists()
    assert checkpoint_epoch(out_dir, CONFIG) == 0 and checkpoint_epoch(out_dir, changed) == 0
    assert not list(out_dir.glob("checkpoint/*.weights.h5")) and not list(out_dir.glob("checkpoint/*.keras"))


def test_checkpoint_of_another_table_is_not_resumed(killed_after_epoch_1, tmp_path, capsys, cifar10_subset):
    """The same settings on a network of another table (one more filter in the top conv row)."""
    out_dir = tmp_path / "run"
    shutil.copytree(killed_after_epoch_1, out_dir)
    *rows, top = TINY_SPEC.rows
    other = dataclasses.replace(TINY_SPEC, rows=(*rows, dataclasses.replace(top, filters=top.filters + 1)))
    seed_everything(CONFIG)
    train, val = make_datasets(cifar10_subset, CONFIG.seed)
    with pytest.raises(StopBeforeTheFirstStep.Stopped):
        train_model(TINY_NAME, len(CLASS_NAMES), INPUT_SHAPE, train, val, CONFIG, out_dir,
                    callbacks=[StopBeforeTheFirstStep()], verbose=0, spec=other)
    assert "is from other settings (spec: another table; weight_shapes:" in capsys.readouterr().out
