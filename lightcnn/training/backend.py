"""Where training runs: the Keras backend, determinism flags, precision and data parallelism.

Keras reads its backend once, when it is first imported, so a program that trains selects
it first:

    from lightcnn.training.backend import select_backend
    select_backend(config.backend)          # before anything imports keras
    prepare_process(config)                 # JAX: determinism flags, multi-host start

This module imports Keras only inside the functions that need it.

Data parallelism (config.distribution = "data_parallel"):
- JAX: keras.distribution.DataParallel over every device of every process. Several hosts
  (one process per host, the same command on each) are joined by
  keras.distribution.initialize when the launch environment names them (MULTI_HOST_ENV):
  KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator "host:port" first, or only it),
  KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID; or JAX's
  JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID; or a SLURM / Open MPI
  launch (srun, mpirun) with more than one task, whose variables JAX reads itself. On CPUs
  the processes exchange gradients through gloo.
- TensorFlow: tf.distribute.MirroredStrategy over the local GPUs (or, without GPUs, the
  logical CPU devices). BatchNormalization statistics are synchronised over the replicas
  while training, so a data-parallel step computes what a single-device step on the whole
  batch would (as JAX does); models are saved without that flag. Keras 3 has no multi-host
  TensorFlow strategy (keras-team/keras#20585): use JAX across hosts.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lightcnn.training.config import BACKENDS, TrainConfig

# XLA flag that makes JAX's GPU kernels deterministic (scatter/reductions); must be set
# before JAX starts its GPU backend. Without a GPU it changes nothing.
JAX_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"

KERAS_MULTI_HOST_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                        "KERAS_DISTRIBUTION_PROCESS_ID")
JAX_MULTI_HOST_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
LAUNCHER_TASK_COUNT_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
MULTI_HOST_ENV = KERAS_MULTI_HOST_ENV + JAX_MULTI_HOST_ENV + LAUNCHER_TASK_COUNT_ENV


class BackendError(RuntimeError):
    """Keras runs on another backend than the one asked for, or a backend cannot do what is asked."""


def imported_backend() -> str | None:
    """The backend of the Keras already imported in this process, or None (not imported yet)."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def select_backend(name: str) -> None:
    """Make Keras run on `name` ("tensorflow" or "jax"): sets KERAS_BACKEND before Keras is imported.

    Idempotent. Raises BackendError if Keras was already imported on another backend (a
    process cannot switch), and ValueError for an unknown name.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    current = imported_backend()
    if current is None:
        os.environ["KERAS_BACKEND"] = name
        return
    if current != name:
        raise BackendError(
            f"Keras is already imported on the {current!r} backend and cannot switch to {name!r} in this process: "
            f"call select_backend({name!r}) before anything imports keras (lightcnn.models, train_model, "
            f"lightcnn.data.make_dataset...), or start the process with KERAS_BACKEND={name}")


def prepare_process(config: TrainConfig) -> None:
    """Everything that must happen before the backend starts computing: select it, set
    JAX's deterministic-kernel flag (config.deterministic) and, for a multi-host
    data-parallel launch on JAX, join the other processes. Call it first in a training
    program; train_model calls it too (then only checks what is already done)."""
    select_backend(config.backend)
    if config.backend == "jax" and config.deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if JAX_DETERMINISTIC_FLAG.split("=")[0] not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {JAX_DETERMINISTIC_FLAG}".strip()
    if config.distribution == "data_parallel" and config.backend == "jax":
        initialize_multi_host()
    elif multi_host_environment() is not None:
        raise BackendError(
            "this process was launched as one of several (" + ", ".join(_present(MULTI_HOST_ENV)) + " set), but "
            + ("TensorFlow under Keras 3 trains on one host only (keras-team/keras#20585): use train.backend=jax"
               if config.backend == "tensorflow" else "train.distribution is 'none': set it to 'data_parallel'"))


def _present(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if os.environ.get(name)]


def multi_host_environment() -> dict[str, Any] | None:
    """The arguments for keras.distribution.initialize if this process is one of several, else None."""
    if _present(KERAS_MULTI_HOST_ENV):
        return {}  # keras.distribution.initialize reads them itself
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [name for name in JAX_MULTI_HOST_ENV[1:] if not os.environ.get(name)]
        if missing:
            raise BackendError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not: set all of "
                               f"{', '.join(JAX_MULTI_HOST_ENV)} on every host (the same address and count, "
                               "process ids 0, 1, ...)")
        try:
            return {"job_addresses": os.environ["JAX_COORDINATOR_ADDRESS"],
                    "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                    "process_id": int(os.environ["JAX_PROCESS_ID"])}
        except ValueError:
            raise BackendError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers; got "
                               f"{os.environ['JAX_NUM_PROCESSES']!r} and {os.environ['JAX_PROCESS_ID']!r}") from None
    for name in LAUNCHER_TASK_COUNT_ENV:
        if os.environ.get(name, "1").isdigit() and int(os.environ.get(name, "1")) > 1:
            return {}  # jax.distributed reads the launcher's variables itself
    return None


_multi_host_started = False


def initialize_multi_host() -> bool:
    """Join the other processes of a multi-host JAX launch (once); False if there are none."""
    global _multi_host_started
    arguments = multi_host_environment()
    if arguments is None:
        return False
    if _multi_host_started:
        return True
    import jax

    # CPUs exchange gradients through gloo (the default CPU client has no cross-process
    # collectives); GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    keras.distribution.initialize(**arguments)
    _multi_host_started = True
    return True


def process_index() -> int:
    """This process's index in a multi-host launch (0 when alone)."""
    if imported_backend() == "jax":
        import jax

        return jax.process_index()
    return 0


def process_count() -> int:
    if imported_backend() == "jax":
        import jax

        return jax.process_count()
    return 1


def is_primary_process() -> bool:
    """Whether this process writes the run's shared records (MLflow, DVC outputs); process 0."""
    return process_index() == 0


# ----------------------------------------------------------------------------- placement


@dataclass
class Placement:
    """Where one training run's steps run: devices, replicas, and this process's share of a batch."""

    replicas: int = 1
    process_index: int = 0
    process_count: int = 1
    strategy: Any = None       # tf.distribute.MirroredStrategy (TensorFlow data_parallel)
    distribution: Any = None   # keras.distribution.DataParallel (JAX data_parallel)
    devices: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build, compile and fit inside it."""
        if self.strategy is not None:
            with self.strategy.scope():
                yield
        elif self.distribution is not None:
            with self.distribution.scope():
                yield
        else:
            yield


def make_placement(config: TrainConfig, *, arrays_input: bool) -> Placement:
    """The devices of config.distribution; checks that the batch splits evenly over them.

    arrays_input: the data are in-memory arrays, fed per process (each process gives its
    share of every global batch); a tf.data.Dataset is split by Keras itself.
    """
    if config.distribution == "none":
        return Placement(devices=["default"])
    if config.backend == "jax":
        import jax
        import keras

        initialize_multi_host()
        devices = jax.devices()
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not arrays_input)
        placement = Placement(replicas=len(devices), process_index=jax.process_index(),
                              process_count=jax.process_count(), distribution=distribution,
                              devices=[str(device) for device in devices])
    else:
        import tensorflow as tf

        devices = [device.name for device in tf.config.list_logical_devices("GPU")] or [
            device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        placement = Placement(replicas=strategy.num_replicas_in_sync, strategy=strategy, devices=devices)
    if config.batch_size % placement.replicas:
        raise ValueError(f"training setting batch_size ({config.batch_size}) must split evenly over the "
                         f"{placement.replicas} devices of data_parallel training: use a multiple of "
                         f"{placement.replicas}")
    return placement


# ----------------------------------------------------------------------------- precision


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to `name` while the model is built, then restored."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keep_output_float32(model: Any) -> None:
    """The softmax output (layer "predictions", else the last layer) computes in float32
    under mixed precision, so the loss and the metrics see float32 probabilities."""
    names = [layer.name for layer in model.layers]
    layer = model.get_layer("predictions") if "predictions" in names else model.layers[-1]
    layer.dtype_policy = "float32"


def synchronize_batch_norm(model: Any, placement: Placement) -> None:
    """TensorFlow data-parallel: BatchNormalization statistics over the whole batch of all
    replicas (JAX's DataParallel computes them so already)."""
    if placement.strategy is None or placement.replicas < 2:
        return
    import keras

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


@contextlib.contextmanager
def portable(model: Any) -> Iterator[None]:
    """While saving a whole model: every layer float32 and BatchNormalization unsynchronised
    (the weights are the same), so the file loads on any backend as a plain float32 model,
    ready for evaluation and TFLite export."""
    import keras

    layers = _all_layers(model)
    saved = [(layer, layer.dtype_policy, getattr(layer, "synchronized", None)) for layer in layers]
    try:
        for layer in layers:
            layer.dtype_policy = "float32"
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = False
        yield
    finally:
        for layer, policy, synchronized in saved:
            layer.dtype_policy = policy
            if synchronized is not None:
                layer.synchronized = synchronized


def _all_layers(model: Any) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)]
