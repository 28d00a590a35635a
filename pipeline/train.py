"""Stage train@<model>-<seed>: train one model on the preprocessed data, tracked in MLflow.

    python -m pipeline.train our_small 42

A run killed mid-way (even by SIGKILL) resumes from its last completed epoch on the next
`dvc repro`, in its own MLflow run.
"""
from __future__ import annotations

import sys

from pipeline.common import stage
from pipeline.common.backend_choice import select_backend_before_keras
from pipeline.common.paths import PROJECT_ROOT

if __name__ == "__main__":  # before Keras is imported below: it fixes its backend then
    stage.check_params_first(per_model=True)  # a mistake reported in a second, not after the imports
    select_backend_before_keras(PROJECT_ROOT / "params.yaml", sys.argv[1:])

import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402

from lightcnn import io  # noqa: E402
from lightcnn.data import load_manifest, make_dataset, verify_shards  # noqa: E402
from lightcnn.data.pipeline import seconds_per_pass  # noqa: E402
from lightcnn.training import (checkpoint_epoch, is_primary_process, prepare_process, resolve_config,  # noqa: E402
                               seed_everything, train_model)
from pipeline.common import tracking  # noqa: E402
from pipeline.common.params import StageParams  # noqa: E402
from pipeline.common.paths import PROCESSED_DIR, ModelPaths  # noqa: E402
from pipeline.common.settings import TrainSettings, effective_train_settings  # noqa: E402


def train_settings(params: StageParams, model: str, seed: int) -> dict:
    """This model's effective settings, read through the stage's view (train.seeds is not
    this stage's: each stage trains one seed, given on its command line)."""
    sections = {"train": {key: params[f"train.{key}"] for key in TrainSettings.model_fields if key != "seeds"},
                "per_model": {model: params[f"per_model.{model}"]}}
    return effective_train_settings(sections, model, seed)


def config_dict(config) -> dict:
    return config.model_dump() if hasattr(config, "model_dump") else dataclasses.asdict(config)


class EpochLogger(keras.callbacks.Callback):
    """Sends each epoch's Keras logs (loss, accuracy, val_*, lr) to the model's run, and
    times it: MLflow logging is part of the stage's fixed cost per epoch."""

    def __init__(self, run: tracking.ModelRun):
        super().__init__()
        self.run = run
        self.seconds = 0.0
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        start = time.perf_counter()
        self.run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)
        self.seconds += time.perf_counter() - start
        self.epochs += 1


def main(params: StageParams, model: str, seed: int) -> None:
    config = resolve_config(**train_settings(params, model, seed))
    prepare_process(config)  # the backend (checked: selected before Keras), determinism flags, hosts
    manifest = load_manifest(PROCESSED_DIR)
    verify_shards(PROCESSED_DIR)  # a damaged shard fails here, before an MLflow run is opened
    paths = ModelPaths(model, seed)
    seed_everything(config)  # before the datasets: their seeded shuffles mix in TF's global seed
    train_ds = make_dataset(PROCESSED_DIR, "train", config.batch_size, training=True, seed=config.seed,
                            augment=config.augment, shift_fraction=config.shift_fraction, flip=config.flip)
    val_ds = make_dataset(PROCESSED_DIR, "val", config.batch_size, training=False)
    input_shape = (*manifest["image_size"], 3)
    if not is_primary_process():
        # Another host of a multi-host launch: it trains its share of each batch; process 0
        # (the one DVC runs) records the run and writes the stage's outputs.
        train_model(model, manifest["num_classes"], input_shape, train_ds, val_ds, config, paths.dir / "host-copy",
                    verbose=0)
        return

    resuming = checkpoint_epoch(paths.dir, config) > 0 and paths.resume_run.exists()
    own_run = json.loads(paths.resume_run.read_text())["run_id"] if resuming else None
    run = tracking.ModelRun.open(model, seed, manifest, adopt_run_id=own_run)
    io.write_json(paths.resume_run, {"run_id": run.run_id})  # not a DVC out: a killed run resumes in it
    if run.created:
        run.log_params(tracking.run_params(model, config_dict(config), manifest))
    run.set_tags({"lightcnn.trained": "true", "keras_backend": config.backend})
    stage.say(params, f"{'resuming' if resuming else 'starting'} {config.epochs} epoch(s) of training, recorded in "
                      f"MLflow run {run.run_id}")

    logger = EpochLogger(run)
    summary = train_model(model, manifest["num_classes"], input_shape, train_ds, val_ds, config, paths.dir,
                          callbacks=[logger])
    # The rest of the stage's cost per epoch, measured here too: MLflow logging, and the input
    # stream alone (one more pass over the training data, a second or so for all of CIFAR-10).
    summary["seconds_per_epoch"].update(mlflow_logging=logger.seconds / max(1, logger.epochs),
                                        input_stream_alone=seconds_per_pass(train_ds))

    io.write_json(paths.train_metrics, {**summary, "model": model, "seed": seed, "config": config_dict(config)})
    run.log_metrics({f"train_{k}": v for k, v in summary.items()})
    run.log_artifacts([paths.history])
    run.log_keras_model(paths.best)
    run.finish()
    paths.resume_run.unlink(missing_ok=True)


if __name__ == "__main__":
    stage.run("train", main, per_model=True)
