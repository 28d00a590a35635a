"""Backends: settings that name them, backend selection, training code without TensorFlow,
the in-memory (TF-free) input path, and exact resume and determinism on JAX.

JAX runs happen in subprocesses (a process has one Keras backend, and this one is on
TensorFlow), with `tensorflow` imports blocked, as on a machine that has JAX alone.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from typing import get_args

from lightcnn.data import DataError
from lightcnn.data.arrays import ImageArrays, load_image_arrays, shift_and_flip, shifts_and_flips, training_batches
from lightcnn.models import ATTENTIONS, MODEL_MODES
from lightcnn.training import BackendError, resolve_config, select_backend, train_model
from lightcnn.training.config import Attention, ModelMode
from tests.checkpoint_files import checkpoint_arrays
from tests.conftest import PROJECT_ROOT, STAGE_START, load_benchmark
from tests.jax_processes import jax_cache, jax_environment  # noqa: F401  (jax_cache: a fixture)
from tests.tiny_model import TINY_NAME, TINY_SPEC

BLOCK_TENSORFLOW = '''
import sys
class _NoTensorFlow:
    """As if TensorFlow were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoTensorFlow())
'''


def run_python(code: str, *, env: dict | None = None, timeout: int = 900, cwd: Path = PROJECT_ROOT,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python whose Keras backend is JAX and which cannot import TensorFlow."""
    environment = jax_environment(None, **(env or {}))
    script = BLOCK_TENSORFLOW + STAGE_START + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"subprocess failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


# ----------------------------------------------------------------------------- settings


def test_config_choices_match_the_models():
    assert get_args(Attention) == ATTENTIONS
    assert set(get_args(ModelMode)) == set(MODEL_MODES)


def test_new_settings_defaults_and_errors():
    default, study = resolve_config("default"), resolve_config("study")
    assert (default.model_mode, study.model_mode) == ("corrected", "faithful")
    for config in (default, study):
        assert (config.backend, config.precision, config.jit_compile, config.steps_per_execution,
                config.distribution) == ("tensorflow", "float32", "auto", 1, "none")
    # The learning rate follows the batch size from a reference batch of 128.
    assert resolve_config("default", batch_size=512).peak_learning_rate == pytest.approx(4 * default.learning_rate)
    assert resolve_config("default", batch_size=512, lr_scaling="sqrt").peak_learning_rate == pytest.approx(
        2 * default.learning_rate)
    assert resolve_config("study", batch_size=512).peak_learning_rate == study.learning_rate  # lr_scaling none
    with pytest.raises(ValueError, match=r"backend must be one of 'tensorflow', 'jax'; got 'torch'"):
        resolve_config("default", backend="torch")
    with pytest.raises(ValueError, match=r"jit_compile must be true or false or 'auto'; got 'yes'"):
        resolve_config("default", jit_compile="yes")
    with pytest.raises(ValueError, match=r"steps_per_execution must be an integer >= 1; got 0"):
        resolve_config("default", steps_per_execution=0)
    # Several problems: one line each.
    with pytest.raises(ValueError) as error:
        resolve_config("default", precision="float16", distribution="ddp")
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and "precision must be one of" in lines[0] and "distribution must be one of" in lines[1]


def test_every_setting_is_described():
    from lightcnn.training import TrainConfig

    assert all(field.description for field in TrainConfig.model_fields.values())


def test_select_backend_refuses_to_switch_once_keras_is_loaded():
    select_backend(keras.backend.backend())  # the one already running: fine
    with pytest.raises(BackendError, match="already imported on the 'tensorflow' backend.*KERAS_BACKEND=jax"):
        select_backend("jax")
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend("torch")


def test_models_and_training_import_without_tensorflow():
    """As a JAX train stage starts (run_python imports `pipeline` first: its refusal of optional
    imports, pipeline/common/lean_imports.py, leaves Keras' own import of JAX alone)."""
    result = run_python("""
        import os, sys
        os.environ.pop("KERAS_BACKEND")
        from lightcnn.training import resolve_config, select_backend
        assert "keras" not in sys.modules, "lightcnn.training imported keras before the backend was chosen"
        select_backend(resolve_config("default", backend="jax").backend)
        import lightcnn.models, lightcnn.data.arrays
        from lightcnn.training import train_model, checkpoint_epoch, seed_everything, compile_model
        import keras
        try:
            import lightcnn.data.pipeline
        except ModuleNotFoundError:
            pipeline = "needs tensorflow"
        print(keras.backend.backend(), "tensorflow" in sys.modules, pipeline, int(keras.ops.sum(keras.ops.ones(3))))
    """)
    assert result.stdout.split() == ["jax", "False", "needs", "tensorflow", "3"]


def test_stage_processes_load_no_unused_optional_integration():
    """pipeline/common/lean_imports.py: a process that imports `pipeline` first, as every stage
    does, loads Keras and TensorFlow without scikit-learn, JAX, pandas and matplotlib (2.4 s of
    CPU less: python benchmarks/import_time.py); each still imports for any other caller."""
    code = ("import sys, pipeline, keras, tensorflow\n"
            "print(sorted(m for m in ('sklearn', 'jax', 'pandas', 'matplotlib') if m in sys.modules))\n"
            "import sklearn.base, jax.numpy, pandas, matplotlib.pyplot\n"
            "print(keras.backend.backend(), int(jax.numpy.ones(3).sum()), len(pandas.DataFrame({'a': [1, 2]})),\n"
            "      sklearn.base.__name__, matplotlib.pyplot.__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                                              "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["[]", "tensorflow 3 2 sklearn.base matplotlib.pyplot"], (
        f"{result.stdout}: a package listed first was loaded: if this Keras or TensorFlow imports it from "
        "another module, name that module in pipeline/common/lean_imports.py's SKIPPED_INTEGRATIONS")


def test_import_time_benchmark_reads_a_fresh_interpreter():
    """benchmarks/import_time.py's measurement, on a fresh interpreter that imports nothing (the
    Keras imports it times are the test above's): wall and CPU seconds, the skipped packages
    reported as not loaded; a failing import stops it, naming the command."""
    from pipeline.common.lean_imports import SKIPPED_INTEGRATIONS

    import_time = load_benchmark("import_time")
    wall, cpu, loaded = import_time.timed_import(import_time.REPORT)
    assert wall > 0 and cpu >= 0
    assert loaded == dict.fromkeys(SKIPPED_INTEGRATIONS, False)
    with pytest.raises(SystemExit, match=r"`python -c 'import no_such_module'` failed with exit status 1"):
        import_time.timed_import("import no_such_module")


# ----------------------------------------------------------------------------- in-memory data


def test_arrays_hold_the_same_split_as_preprocess(tmp_path, cifar10_subset):
    from lightcnn.data import fetch_dataset, preprocess_dataset, read_examples

    raw = tmp_path / "raw"
    fetch_dataset("cifar10", raw, source=str(cifar10_subset), progress=False)
    preprocess_dataset(raw, tmp_path / "processed", max_per_class=12, seed=3, workers=1, progress=False)
    loaded = load_image_arrays(cifar10_subset, max_per_class=12, seed=3)
    for split in ("val", "test"):  # class order, then file order, in both
        records = list(read_examples(tmp_path / "processed", split))
        assert np.array_equal(loaded[split].images, np.stack([image for image, _, _ in records]))
        assert loaded[split].labels.tolist() == [label for _, label, _ in records]
    train_records = {image.tobytes() for image, _, _ in read_examples(tmp_path / "processed", "train")}
    assert {image.tobytes() for image in loaded["train"].images} == train_records
    assert loaded["train"].class_names[:2] == ("airplane", "automobile")


def test_shift_and_flip_on_the_device_matches_the_input_pipeline():
    import tensorflow as tf

    from lightcnn.data.pipeline import shift_and_flip as tf_shift_and_flip

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 10, 3), dtype=np.uint8)
    dy, dx, flips = shifts_and_flips(rng.random((16, 3), dtype=np.float32), (8, 10), 0.4, True)
    assert dy.min() < 0 < dy.max() and flips.any() and not flips.all()
    expected = tf_shift_and_flip(tf.constant(images), tf.constant(dy), tf.constant(dx), tf.constant(flips)).numpy()
    ours = keras.ops.convert_to_numpy(shift_and_flip(images, dy, dx, flips))
    assert np.array_equal(ours, expected)


def test_training_batches_depend_on_seed_and_epoch_only():
    rng = np.random.default_rng(1)
    data = ImageArrays(rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), np.arange(50, dtype=np.int32) % 5,
                       tuple("abcde"))
    first = training_batches(data, 16, seed=7, shift_fraction=0.25, drop_remainder=True)
    second = training_batches(data, 16, seed=7, shift_fraction=0.25, drop_remainder=True, epoch=1)
    assert len(first) == 3
    second.epoch = 0
    for index in range(3):
        (x1, y1), (x2, y2) = first[index], second[index]
        assert np.array_equal(keras.ops.convert_to_numpy(x1), keras.ops.convert_to_numpy(x2))
        assert np.array_equal(keras.ops.convert_to_numpy(y1), keras.ops.convert_to_numpy(y2))
    x0 = keras.ops.convert_to_numpy(first[0][0])
    first.epoch = 1
    assert not np.array_equal(x0, keras.ops.convert_to_numpy(first[0][0]))  # a new epoch, a new order
    assert x0.dtype == np.float32 and 0 <= x0.min() and x0.max() <= 1
    # Two processes serve the two halves of each global batch.
    halves = [training_batches(data, 16, seed=7, shift_fraction=0.25, drop_remainder=True,
                               process_index=i, process_count=2)[0][1] for i in (0, 1)]
    assert np.array_equal(np.concatenate([keras.ops.convert_to_numpy(h) for h in halves]),
                          keras.ops.convert_to_numpy(first_labels := training_batches(
                              data, 16, seed=7, shift_fraction=0.25, drop_remainder=True)[0][1]))
    assert first_labels.shape == (16, 5)


def test_tensorflow_backend_trains_from_arrays(tmp_path, cifar10_subset):
    data = load_image_arrays(cifar10_subset, max_per_class=5)  # 40 train images: 2 steps of 16; 10 val
    config = resolve_config("default", epochs=1, batch_size=16, warmup_epochs=0.5, precision="mixed_bfloat16")
    summary = train_model(TINY_NAME, 10, (32, 32, 3), data["train"], data["val"], config, tmp_path, verbose=0,
                          spec=TINY_SPEC)
    assert summary["epochs_run"] == 1 and summary["images_per_second"] > 0
    assert set(summary["seconds_per_epoch"]) == {"train_steps", "validation", "writes"}
    best = keras.models.load_model(tmp_path / "best.keras")
    # Saved as a plain float32 model whatever the training precision.
    assert {layer.dtype_policy.name for layer in best.layers} == {"float32"}
    assert best.predict(data["val"].images[:2] / 255.0, verbose=0).dtype == np.float32


# ----------------------------------------------------------------------------- JAX: determinism and resume

JAX_RUN = """
import os, signal, sys
import keras
from lightcnn.training import resolve_config, select_backend
config = resolve_config("default", epochs=2, batch_size=20, warmup_epochs=0.5, seed=0, backend="jax")
select_backend(config.backend)
from lightcnn.data.arrays import load_image_arrays
from lightcnn.training import train_model
from tests.tiny_model import TINY_NAME, TINY_SPEC
data = load_image_arrays({archive!r}, max_per_class=5)   # 40 train (2 steps of 20), 10 val

class KillAfterFirstEpoch(keras.callbacks.Callback):
    # The caller's callbacks run after train_model has checkpointed the epoch.
    def on_epoch_end(self, epoch, logs=None):
        os.kill(os.getpid(), signal.SIGKILL)

callbacks = [KillAfterFirstEpoch()] if {die!r} else []
summary = train_model(TINY_NAME, 10, (32, 32, 3), data["train"], data["val"], config, {out_dir!r},
                      callbacks=callbacks, verbose=0, spec=TINY_SPEC)
print("SUMMARY", summary["resumed_from_epoch"], summary["epochs_run"], "tensorflow" in sys.modules)
"""


def start_jax_run(archive: Path, out_dir: Path, die: bool, cache: Path) -> subprocess.Popen:
    code = JAX_RUN.format(archive=str(archive), die=die, out_dir=str(out_dir))
    env = jax_environment(cache)
    return subprocess.Popen([sys.executable, "-c", BLOCK_TENSORFLOW + STAGE_START + code], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def history(out_dir: Path) -> list[dict]:
    with open(out_dir / "history.csv", newline="") as file:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(file)]


def test_jax_training_without_tensorflow_is_deterministic_and_resumes_exactly(tmp_path, cifar10_subset, jax_cache):
    """Two fresh processes (one killed by SIGKILL after epoch 1) train alike, and the killed
    run, resumed, ends with the weights, optimizer state and history of the uninterrupted one.

    Two epochs of two steps are enough for both claims: epoch 2 starts from restored weights,
    optimizer state, schedule step and random states, and its 2 steps show whether all of them
    were restored. The network is tests/tiny_model.py's (the claim is the training code's).
    The killed run goes first; the uninterrupted and the resumed one then run side
    by side. The processes share the session's JAX compilation cache (tests/jax_processes.py),
    so the later two skip most of XLA's compiling: a cached executable is exactly the one the
    process would have compiled, so the comparison is the same with a cold or a warm cache."""
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    runs = {"killed": start_jax_run(cifar10_subset, killed, die=True, cache=jax_cache)}
    try:
        killed_output = runs["killed"].communicate(timeout=1500)[0]
        assert runs["killed"].returncode == -signal.SIGKILL, killed_output[-4000:]
        killed_history = history(killed)
        assert [row["epoch"] for row in killed_history] == ["1"]
        (killed / "best.keras").unlink()  # DVC deletes outputs before a rerun
        runs["uninterrupted"] = start_jax_run(cifar10_subset, uninterrupted, die=False, cache=jax_cache)
        runs["resumed"] = start_jax_run(cifar10_subset, killed, die=False, cache=jax_cache)
        uninterrupted_output = runs["uninterrupted"].communicate(timeout=1500)[0]
        output = runs["resumed"].communicate(timeout=1500)[0]
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    assert runs["uninterrupted"].returncode == 0, uninterrupted_output[-4000:]
    assert "SUMMARY 0 2 False" in uninterrupted_output  # trained without TensorFlow
    assert killed_history == history(uninterrupted)[:1]  # same first epoch in another process
    assert runs["resumed"].returncode == 0 and "SUMMARY 1 2 False" in output, output[-4000:]
    assert history(killed) == history(uninterrupted)
    first, second = checkpoint_arrays(killed), checkpoint_arrays(uninterrupted)
    assert first.keys() == second.keys()
    assert [name for name in first if not np.array_equal(first[name], second[name])] == []
    state = json.loads((killed / "checkpoint" / "state.json").read_text())
    assert state["identity"]["config"]["backend"] == "jax"


# ----------------------------------------------------------------------------- the GPU comparison script


def test_gpu_comparison_script_runs_without_tensorflow(tmp_path, cifar10_subset, jax_cache):
    """benchmarks/gpu_comparison.py end to end on the CPU, 1 epoch of a tiny subset: a test
    that it works (on a machine without TensorFlow), not a timing, and that what it writes is
    what record-gpu publishes. The smoke network: which network the script trains is a name
    it passes on (41 s in the suite with our_small). --jobs 2 with one model: the pool path."""
    from lightcnn import gpu_record

    blocked = tmp_path / "no-tensorflow" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tensorflow' (blocked)\", "
                                         "name='tensorflow')\n")
    out = tmp_path / "out"
    env = jax_environment(jax_cache, PYTHONPATH=f"{blocked.parent}{os.pathsep}{PROJECT_ROOT}")
    # 40 train images: 2 steps of 16 (1 execution of steps_per_execution 2), 10 val, 40 test.
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_comparison.py", "--archive", str(cifar10_subset), "--epochs", "1",
         "--max-per-class", "5", "--test-per-class", "4", "--models", "smoke", "--steps-per-execution", "2",
         "--batch-size", "16", "--jobs", "2",
         "--work-dir", str(tmp_path / "work"), "--output", str(out / "comparison.json"), "--log-dir", str(out)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| smoke | float32 |" in result.stdout
    (row,) = json.loads((out / "comparison.json").read_text())["rows"]
    assert (row["epochs"], row["batch_size"], row["train_images"], row["test_images"]) == (1, 16, 40, 40)
    assert 0 <= row["test_accuracy"] <= 1 and row["images_per_second"] > 0 and row["train_seconds"] > 0
    assert (row["config"]["recipe"], row["config"]["backend"]) == ("default", "jax") and "keras" in row["versions"]
    assert "val_accuracy: " in (out / "train-smoke.log").read_text()  # the per-epoch line
    record = {key: "x" for key in gpu_record.RECORD_FIELDS} | {"name": "cpu-check", "date": "2026-11-27"}
    folder = gpu_record.record_gpu_comparison(tmp_path / "gpu", out, record)
    assert "| `smoke` |" in gpu_record.render_gpu_section(gpu_record.load_gpu_comparison(folder))


def test_a_cifar_python_archive_is_checked_before_any_pickle_is_loaded(tmp_path):
    """The in-memory path keeps fetch's promise: an archive in the CIFAR python format that is
    not the official one (this one is built by the test) is refused by its MD5."""
    from tests.data_helpers import build_cifar10_archive

    archive = tmp_path / "cifar-10-python.tar.gz"
    build_cifar10_archive(archive)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_image_arrays(archive)
