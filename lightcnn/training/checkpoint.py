"""The files of a training run: checkpoint (for exact resume), run identity, history.csv.

out_dir/checkpoint/ holds the last finished epoch (weights with optimizer state, the
layers' random seed states, the run's history) and the best epoch's model. Every file is
written under a temporary name and then renamed, so a killed run never leaves a
half-written file behind. checkpoint/state.json is renamed last: it is the commit point of
an epoch, and everything else can be rebuilt from it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lightcnn.io import atomic_path, write_text
from lightcnn.models.specs import ModelSpec
from lightcnn.training.backend import portable
from lightcnn.training.config import TrainConfig

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5", "lr",
                   "epoch_seconds")
CHECKPOINT_FORMAT = 2  # 2: TrainConfig with backend/precision/distribution settings


def write_history_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def copy_atomic(source: Path, destination: Path) -> None:
    with atomic_path(destination, suffix=destination.suffix) as tmp:
        shutil.copyfile(source, tmp)


def rng_variables(model: keras.Model) -> list:
    """Variables that save_weights leaves out: the layers' random seed states (dropout,
    stochastic depth). Restoring them makes a resumed run draw the same masks."""
    saved = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


def run_identity(model_name: str, num_classes: int, input_shape: Sequence[int], config: TrainConfig,
                 steps_per_epoch: int, model: keras.Model, spec: ModelSpec | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings, the data size and the model
    (and its table, when it is one of the caller's own)."""
    return {
        "model_name": model_name,
        # As state.json will hold it (lists, not tuples), so that it compares equal once read back.
        **({"spec": json.loads(json.dumps(dataclasses.asdict(spec)))} if spec is not None else {}),
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "steps_per_epoch": steps_per_epoch,
        "config": config.model_dump(mode="json"),
        "weight_shapes": hashlib.sha256(json.dumps([list(w.shape) for w in model.weights]).encode()).hexdigest(),
    }


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def identity_changes(old: dict, new: dict) -> str:
    """The settings that differ between two run identities, as "key: old -> new; ..."."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "config":
            old_config, new_config = old.get(key, {}), new[key]
            changes += [f"{k}: {old_config.get(k)!r} -> {new_config.get(k)!r}"
                        for k in sorted(set(old_config) | set(new_config)) if old_config.get(k) != new_config.get(k)]
        elif key == "spec" and old.get(key) != new.get(key):
            changes.append("spec: another table")  # whole tables would drown the message
        elif old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return "; ".join(changes)


class Checkpoint:
    """out_dir/checkpoint/: state.json, the last epoch's weights (with the optimizer state)
    and the best epoch's model (one file when the last epoch was the best: the .keras file
    holds the optimizer state too). state.json names both files and is written last: it is the
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
        if improved:
            # The best model's file holds the weights and the optimizer state too (what
            # save_weights would write again): it is also this epoch's weights file.
            state["best_file"] = weights_file = f"best-epoch-{epoch:04d}.keras"
            with atomic_path(self.directory / state["best_file"], suffix=".keras") as tmp, portable(model):
                model.save(tmp)
        else:
            weights_file = f"epoch-{epoch:04d}.weights.h5"
            with atomic_path(self.directory / weights_file, suffix=".weights.h5") as tmp:
                model.save_weights(tmp)  # model weights and optimizer state
        state.update(format=CHECKPOINT_FORMAT, weights_file=weights_file,
                     rng_states=[keras.ops.convert_to_numpy(v).tolist() for v in rng_variables(model)])
        write_text(self.state_path, json.dumps(state, indent=1))
        for stale in self.directory.iterdir():  # earlier epochs, leftovers of killed writes
            if stale.name not in (self.state_path.name, weights_file, state["best_file"]):
                stale.unlink()

    def restore(self, model: keras.Model, state: dict) -> None:
        for name in (state["weights_file"], state["best_file"]):
            if not (self.directory / name).exists():
                raise RuntimeError(f"checkpoint {self.state_path} names {self.directory / name}, which is missing; "
                                   f"delete {self.directory} to train from scratch")
        if not model.optimizer.built:  # compile_model builds it; a model compiled elsewhere may not be
            model.optimizer.build(model.trainable_variables)  # so its state loads too
        model.load_weights(self.directory / state["weights_file"])
        variables = rng_variables(model)
        if len(variables) != len(state["rng_states"]):
            raise RuntimeError(f"checkpoint {self.state_path} holds {len(state['rng_states'])} random seed states, "
                               f"the model has {len(variables)}; delete {self.directory} to train from scratch")
        for variable, value in zip(variables, state["rng_states"]):
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
    if state is None or state.get("finished") or state["identity"]["config"] != config.model_dump(mode="json"):
        return 0
    return state["epoch"]


def write_outputs(out_dir: Path, checkpoint: Checkpoint, state: dict) -> None:
    """out_dir/best.keras and history.csv as of the checkpoint's state."""
    copy_atomic(checkpoint.directory / state["best_file"], out_dir / "best.keras")
    write_history_csv(out_dir / "history.csv", state["history"])
