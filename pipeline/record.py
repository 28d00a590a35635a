"""Stage record@<model>-<seed>: complete this execution's MLflow run of the model from its files.

    python -m pipeline.record our_small 42

Runs after the model's other stages whenever one of their outputs changed. The execution's run
(opened by train when training ran in this execution, else created here) gets everything it
does not hold yet: params (the model's, training's and the data's, and the export and benchmark
settings read from their files) and per-epoch curves (from train.json and history.csv), test metrics,
TFLite accuracy and sizes, latency and MACs, the confusion matrix, Grad-CAM and the model (the
model that the training run logged, named as this run's input, else logged here), and a tag
naming the run that trained this exact model file. Then it is ended FINISHED.
"""
from __future__ import annotations

import json

from lightcnn.data import load_manifest
from lightcnn.export import VARIANTS
from pipeline.common import stage, tracking
from pipeline.common.params import StageParams
from pipeline.common.paths import PROCESSED_DIR, ModelPaths


def _read(path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def main(params: StageParams, model: str, seed: int) -> None:
    paths = ModelPaths(model, seed)
    manifest = load_manifest(PROCESSED_DIR)
    run = tracking.ModelRun.open(model, seed, manifest)
    metric_keys, param_keys = run.holds()
    train = _read(paths.train_metrics)
    tflite, latency = _read(paths.tflite_metrics), _read(paths.latency_metrics)
    settings = {**(tracking.run_params(model, train.get("config", {}), manifest) if train else {}),
                **tracking.result_params(tflite, latency)}
    run.log_params({key: value for key, value in settings.items() if key not in param_keys})
    if "val_accuracy" not in metric_keys:
        run.log_history(paths.history)
        run.log_artifacts([paths.history])
    if "train_best_val_accuracy" not in metric_keys:
        run.log_metrics({f"train_{k}": v for k, v in train.items() if k not in ("config", "seed")})
    evaluation = _read(paths.eval_metrics)
    run.log_metrics({"macs": evaluation.get("macs"),
                     **{f"test_{k}": v for k, v in evaluation.items() if k != "macs"}})
    run.log_metrics(tracking.flatten("tflite", tflite))
    run.log_metrics({
        f"latency.{variant}.threads{threads}.{stat}": result[stat]
        for variant in VARIANTS for threads, result in latency.get(variant, {}).items()
        for stat in ("median_ms", "p90_ms")})
    if latency.get("cpu"):
        run.set_tags({"benchmark_cpu": str(latency["cpu"].get("model_name", latency["cpu"]))})
    run.log_artifacts([paths.extras / "confusion.png", paths.extras / "gradcam.png",
                       paths.extras / "per_class_accuracy.json"], "evaluation")
    run.log_artifacts([paths.tflite(v) for v in VARIANTS], "tflite")
    model_sha256 = tracking.file_sha256(paths.best)
    trained_in = run.run_that_trained(model_sha256)
    if run.created:  # DVC skipped or restored the training: the model may be in MLflow already
        logged = run.logged_model_of(trained_in) if trained_in else None
        if logged:
            run.link_model(logged, model_sha256)
        else:
            run.log_keras_model(paths.best, model_sha256=model_sha256)
    run.set_tags({tracking.TRAINED_IN_TAG: trained_in or "unknown (trained before tracking, or untracked)"})
    run.finish()


if __name__ == "__main__":
    stage.run("record", main, per_model=True)
