"""Stage train@<model>: train one model on the preprocessed data, tracked in MLflow.

    python -m pipeline.train our_small

A run killed mid-way (even by SIGKILL) resumes from its last completed epoch on the next
`dvc repro`, in the same MLflow run.
"""
from __future__ import annotations

import dataclasses
from lightcnn import io
from pipeline import stage, tracking
from pipeline.params import check_model, load_params, model_train_settings
from pipeline.paths import PROCESSED_DIR, ModelPaths


def main(model: str = "") -> None:
    params = load_params()
    check_model(params, model)
    import keras

    from lightcnn.data import load_manifest, make_dataset
    from lightcnn.training import checkpoint_epoch, resolve_config, seed_everything, train_model

    config = resolve_config(**model_train_settings(params, model))
    manifest = load_manifest(PROCESSED_DIR)
    paths = ModelPaths(model)
    resume_file = paths.dir / "checkpoint-mlflow-run.json"   # not a DVC out: survives a kill
    resuming = checkpoint_epoch(paths.dir, config) > 0 and resume_file.exists()
    experiment = tracking.experiment_name(params["data"], manifest["num_classes"])
    run = tracking.ModelRun.start(resume_file, experiment, model, resume=resuming)
    if not resuming:
        run.log_params({"model": model, **tracking.flatten("train", dataclasses.asdict(config)),
                        **tracking.flatten("data", params["data"]), "data.num_classes_effective": manifest["num_classes"]})

    seed_everything(config)  # before the datasets: their seeded shuffles mix in TF's global seed
    train_ds = make_dataset(PROCESSED_DIR, "train", config.batch_size, training=True, seed=config.seed,
                            augment=config.augment, shift_fraction=config.shift_fraction, flip=config.flip)
    val_ds = make_dataset(PROCESSED_DIR, "val", config.batch_size, training=False)
    input_shape = (*manifest["image_size"], 3)
    summary = train_model(model, manifest["num_classes"], input_shape, train_ds, val_ds, config, paths.dir,
                          callbacks=[tracking.EpochLogger(run)])

    io.write_json(paths.train_metrics, summary)
    run.log_metrics({f"train_{k}": v for k, v in summary.items()})
    run.log_artifacts([paths.history])
    run.log_keras_model(keras.models.load_model(paths.best))
    run.finish()
    io.write_json(paths.mlflow_run, {"run_id": run.run_id, "experiment": experiment})
    resume_file.unlink(missing_ok=True)


if __name__ == "__main__":
    stage.run(main)
