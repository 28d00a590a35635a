"""The epoch recorder: what train_model does at the end of every epoch."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras

from lightcnn.training.checkpoint import HISTORY_COLUMNS, Checkpoint, write_outputs
from lightcnn.training.optimizer import current_learning_rate


class EpochRecorder(keras.callbacks.Callback):
    """At each epoch end: add lr and epoch_seconds to the logs, commit the checkpoint, then
    update best.keras and history.csv. Runs before the caller's callbacks, which therefore
    see "lr" in the logs (and the epoch is safely on disk when they run).

    It also times each epoch's parts (state["timing"]): the training steps, validation and
    the checkpoint/output writes, so the fixed cost per epoch is measured, not guessed.
    `on_epoch_start(epoch)`, if given, is called first at each epoch's beginning (the
    in-memory training batches use it to know the epoch they serve).
    """

    def __init__(self, out_dir: Path, checkpoint: Checkpoint, state: dict, on_epoch_start: Any = None):
        super().__init__()
        self.out_dir = out_dir
        self.checkpoint = checkpoint
        self.state = state
        self.on_epoch_start = on_epoch_start
        self.epoch_start = self.validation_start = 0.0
        self.epochs_in_process = 0  # the first one traces/compiles the step: timed apart

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        self.epoch_start = self.validation_start = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        # JAX dispatches steps asynchronously: wait for the epoch's last training step (it
        # wrote the step counter) so that its time is not counted as validation.
        keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        self.validation_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        end_of_validation = time.perf_counter()
        logs = logs if logs is not None else {}
        logs["lr"] = current_learning_rate(self.model)
        logs["epoch_seconds"] = end_of_validation - self.epoch_start
        row = {"epoch": epoch + 1, **{key: float(logs[key]) for key in HISTORY_COLUMNS[1:]}}
        state = self.state
        improved = state["best_epoch"] == 0 or row["val_accuracy"] > state["best_val_accuracy"]
        if improved:
            state["best_epoch"], state["best_val_accuracy"] = row["epoch"], row["val_accuracy"]
        state["epoch"] = row["epoch"]
        state["history"].append(row)
        state["train_seconds"] += row["epoch_seconds"]
        step_seconds = self.validation_start - self.epoch_start
        state["train_step_seconds"] += step_seconds
        timing = state.setdefault("timing", {"train_steps": 0.0, "validation": 0.0, "writes": 0.0, "epochs": 0})
        timing["train_steps"] += step_seconds
        timing["validation"] += end_of_validation - self.validation_start
        timing["epochs"] += 1
        if self.epochs_in_process > 0:
            timing["steady_train_steps"] = timing.get("steady_train_steps", 0.0) + step_seconds
            timing["steady_epochs"] = timing.get("steady_epochs", 0) + 1
        self.epochs_in_process += 1
        writes_start = time.perf_counter()  # (this epoch's write time reaches state.json with the next epoch)
        self.checkpoint.save(self.model, state, improved)
        write_outputs(self.out_dir, self.checkpoint, state)
        timing["writes"] += time.perf_counter() - writes_start
