"""Data-parallel training on real engines, on CPUs: two logical devices per backend, and two
JAX processes joined over 127.0.0.1 (gloo), each in its own subprocess.

Data-parallel training of a global batch computes the same step as one device on the whole
batch (BatchNormalization statistics over the whole batch on both backends). The comparison
is one SGD step (update = learning rate x gradient, here 0.01 x 20/128): every weight must
be within TOLERANCE of the single-device one. Summation order differs, so not bit for bit;
a wrong split (each device normalising its own half, or training on half the batch) moves
weights by a whole step (about 1e-3). Over several steps the two drift apart much more:
these models, with small random-uniform kernels and BatchNorm, amplify rounding
differences (seen on both engines; Adam also turns the noise of gradients that are nearly 0,
such as conv biases ahead of BatchNorm, into full-size steps), so longer runs are compared
by their losses, not their weights. Dropout and stochastic depth are off: TensorFlow
replicas draw their own masks. The network is tests/tiny_model.py's: the claim is about the
training code, whatever the blocks are stacked into.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, STAGE_START
from tests.jax_processes import jax_cache, jax_environment  # noqa: F401  (jax_cache: a fixture)
from tests.checkpoint_files import checkpoint_arrays as weight_arrays
from tests.test_backends import BLOCK_TENSORFLOW

TOLERANCE = 1e-4

COMPARE = """
import json, sys
from lightcnn.training import resolve_config, select_backend
backend = {backend!r}
select_backend(backend)
{setup}
from lightcnn.data.arrays import load_image_arrays
from lightcnn.training import train_model
from tests.tiny_model import TINY_NAME, TINY_SPEC
data = load_image_arrays({archive!r}, max_per_class=3)   # 20 train images: one step of 20; 10 val
replicas = {{}}
for distribution in ("none", "data_parallel"):
    config = resolve_config("default", epochs=1, batch_size=20, warmup_epochs=0.5, dropout=0.0,
                            stochastic_depth=False, optimizer="sgd", learning_rate=0.01, weight_decay=0.0,
                            backend=backend, distribution=distribution)
    train, val = data["train"], data["val"]
    {to_inputs}
    summary = train_model(TINY_NAME, 10, (32, 32, 3), train, val, config, {out!r} + "/" + distribution,
                          verbose=0, spec=TINY_SPEC)
    replicas[distribution] = summary["replicas"]
print("REPLICAS", json.dumps(replicas))
"""

TF_SETUP = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# The TensorFlow stage feeds tf.data: test that path (MirroredStrategy splits the dataset).
TF_DATASETS = """
    def as_dataset(split):
        images = split.images.astype("float32") / 255.0
        labels = np.eye(10, dtype="float32")[split.labels]
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(20)
    import numpy as np
    train, val = as_dataset(train), as_dataset(val)
"""


def run(code: str, env: dict, block_tensorflow: bool) -> str:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT_ROOT), **env}
    script = (BLOCK_TENSORFLOW if block_tensorflow else "") + STAGE_START + code
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def assert_close_weights(single: dict[str, np.ndarray], parallel: dict[str, np.ndarray]) -> None:
    model_weights = [name for name in single if name.startswith("layers/")]
    assert model_weights and single.keys() == parallel.keys()
    worst = max(float(np.max(np.abs(single[name] - parallel[name]), initial=0)) for name in model_weights)
    assert worst <= TOLERANCE, f"largest weight difference {worst:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_data_parallel_on_two_devices_matches_one_device(backend, tmp_path, cifar10_subset, jax_cache):
    if backend == "jax":
        # The session's JAX compilation cache: see tests/jax_processes.py.
        env = jax_environment(jax_cache, XLA_FLAGS="--xla_force_host_platform_device_count=2")
        code = COMPARE.format(backend=backend, setup="", archive=str(cifar10_subset), out=str(tmp_path),
                              to_inputs="")
    else:
        env = {"KERAS_BACKEND": "tensorflow"}
        code = COMPARE.format(backend=backend, setup=TF_SETUP, archive=str(cifar10_subset), out=str(tmp_path),
                              to_inputs=TF_DATASETS.strip())
    output = run(code, env, block_tensorflow=backend == "jax")
    assert 'REPLICAS {"none": 1, "data_parallel": 2}' in output, output[-2000:]
    assert_close_weights(weight_arrays(tmp_path / "none"), weight_arrays(tmp_path / "data_parallel"))


MULTI_PROCESS = """
import sys
from lightcnn.training import resolve_config, prepare_process
config = resolve_config("default", epochs=1, batch_size=20, warmup_epochs=0.5, backend="jax",
                        distribution="data_parallel")
prepare_process(config)   # joins the other process (JAX_* variables) before JAX computes anything
import jax
from lightcnn.data.arrays import load_image_arrays
from lightcnn.training import train_model
from tests.tiny_model import TINY_NAME, TINY_SPEC
data = load_image_arrays({archive!r}, max_per_class=5)   # 40 train: 2 global steps of 20 (10 per process)
summary = train_model(TINY_NAME, 10, (32, 32, 3), data["train"], data["val"], config, {out!r}, verbose=0,
                      spec=TINY_SPEC)
print("PROCESS", jax.process_index(), jax.process_count(), summary["replicas"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_jax_processes_train_together_and_end_with_identical_weights(tmp_path, cifar10_subset, jax_cache):
    """Two steps: identical weights after them need the gradients to be all-reduced in both (and
    the same batches split alike). The processes share the session's JAX compilation cache
    (tests/jax_processes.py)."""
    port = free_port()
    processes = []
    for process_id in (0, 1):
        env = jax_environment(jax_cache, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                              JAX_PROCESS_ID=str(process_id))
        code = BLOCK_TENSORFLOW + STAGE_START + textwrap.dedent(MULTI_PROCESS).format(
            archive=str(cifar10_subset), out=str(tmp_path / f"process-{process_id}"))
        processes.append(subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [process.communicate(timeout=1500)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process_id, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, output[-5000:]
        assert f"PROCESS {process_id} 2 2" in output, output[-2000:]
    first, second = weight_arrays(tmp_path / "process-0"), weight_arrays(tmp_path / "process-1")
    assert first.keys() == second.keys()
    assert [name for name in first if not np.array_equal(first[name], second[name])] == []
