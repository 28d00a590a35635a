"""Stage report: metrics/comparison.md and .json, and the accuracy-versus-latency plot.

    python -m pipeline.report

Reads the per-model metrics of the selected models (metrics/models/) and puts the study's
published figures beside them.
"""
from __future__ import annotations

import json

from pipeline import stage
from pipeline.params import load_params
from pipeline.paths import METRICS_DIR, PROCESSED_DIR, ModelPaths


def model_metrics(model: str, dataset: str, num_classes: int) -> dict:
    """One model's measurements, gathered from its stages' metrics files."""
    paths = ModelPaths(model)
    evaluation = json.loads(paths.eval_metrics.read_text())
    train = json.loads(paths.train_metrics.read_text())
    latency = json.loads(paths.latency_metrics.read_text())
    tflite = json.loads(paths.tflite_metrics.read_text())
    return {
        "model": model, "dataset": dataset, "num_classes": num_classes,
        "test": {k: evaluation[k] for k in ("top1", "top5", "loss")},
        "params": evaluation["params"], "macs": latency["macs"],
        "train_seconds": train["train_seconds"], "epochs": train["epochs_run"],
        "tflite": {v: tflite[v] for v in ("float32", "float16", "int8")},
        "latency": {v: latency[v] for v in ("float32", "float16", "int8")},
        "cpu": latency["cpu"]["model_name"],
        "gradcam": paths.extras.joinpath("gradcam.png").relative_to(METRICS_DIR).as_posix(),
    }


def main() -> None:
    params = load_params()
    from lightcnn.data import load_manifest
    from lightcnn.report import build_comparison

    manifest = load_manifest(PROCESSED_DIR)
    metrics = [model_metrics(m, params["data"]["dataset"], manifest["num_classes"]) for m in params["model"]["selected"]]
    build_comparison(metrics, METRICS_DIR)


if __name__ == "__main__":
    stage.run(main)
