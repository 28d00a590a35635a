"""Stage report: metrics/comparison.md and .json, and the accuracy-versus-latency plot.

    python -m pipeline.report

Reads the per-model, per-seed metrics of the selected models (metrics/models/) and puts the
study's published figures beside them.
"""
from __future__ import annotations

import json

from lightcnn.data import describe_source, load_manifest
from lightcnn.report import build_comparison
from pipeline.common import stage, tracking
from pipeline.common.params import StageParams
from pipeline.common.paths import LATENCY_JSON, METRICS_DIR, PROCESSED_DIR, ModelPaths, latency_key as run_key


def interleaved_latency_of(measurement: dict, model: str, seed: int) -> dict:
    """This run's figures from the latency stage: {variant: {threads: result}} with the CPU and LiteRT."""
    context = measurement["context"]
    cpu = f"{context['cpu']} ({', '.join(context['vector_extensions']) or 'no AVX'})"
    out: dict = {}
    for result in measurement["results"]:
        if result["model"] == run_key(model, seed):
            out.setdefault(result["variant"], {})[str(result["threads"])] = {
                **result, "cpu": cpu, "litert_version": context["litert_version"]}
    return out


def model_metrics(model: str, seed: int, dataset: str, num_classes: int, measurement: dict) -> dict:
    """One training run's measurements, gathered from its stages' metrics files."""
    paths = ModelPaths(model, seed)
    evaluation = json.loads(paths.eval_metrics.read_text())
    train = json.loads(paths.train_metrics.read_text())
    latency = {**json.loads(paths.latency_metrics.read_text()), **interleaved_latency_of(measurement, model, seed)}
    tflite = json.loads(paths.tflite_metrics.read_text())
    return {
        "model": model, "seed": seed, "dataset": dataset, "num_classes": num_classes,
        "test": {k: evaluation[k] for k in ("top1", "top5", "loss")},
        "params": evaluation["params"], "macs": evaluation["macs"],
        "train_seconds": train["train_seconds"], "epochs": train["epochs_run"],
        "config": train.get("config", {}),
        "tflite": {v: tflite[v] for v in ("float32", "float16", "int8")},
        "latency": {v: latency[v] for v in ("float32", "float16", "int8")},
        "cpu": measurement["context"]["cpu"],
        "gradcam": paths.extras.joinpath("gradcam.png").relative_to(METRICS_DIR).as_posix(),
    }


def report_context(manifest: dict, seeds: list[int], metrics: list[dict]) -> dict:
    """How the runs were made: the header above each table (lightcnn.report.CONTEXT_FORMAT)."""
    configs: dict[str, dict] = {}
    for run in sorted(metrics, key=lambda run: run["seed"]):  # the seeds of one model differ in seed only
        configs.setdefault(run["model"], {k: v for k, v in run["config"].items() if k != "seed"})
    cpu = json.loads(LATENCY_JSON.read_text())["context"]
    size, reason = "x".join(map(str, manifest["image_size"])), manifest.get("image_size_reason")
    return {
        "dataset": manifest["dataset"],
        "source": describe_source(manifest),
        "recipes": configs,
        "model_modes": {model: config.get("model_mode", "corrected") for model, config in configs.items()},
        "seeds": list(seeds),
        "image_size": f"{size} ({reason})" if reason else size,
        "git_commit": tracking.source_tags()["git_commit"],
        "cpu": f"{cpu['cpu']} ({cpu['logical_cores']} logical cores; {', '.join(cpu['vector_extensions'])})",
    }


def main(params: StageParams) -> None:
    manifest = load_manifest(PROCESSED_DIR)
    measurement = json.loads(LATENCY_JSON.read_text())
    metrics = [model_metrics(model, seed, manifest["dataset"], manifest["num_classes"], measurement)
               for model in params["model.selected"] for seed in params["train.seeds"]]
    seeds = params["train.seeds"]
    build_comparison(metrics, METRICS_DIR, context=report_context(manifest, seeds, metrics))


if __name__ == "__main__":
    stage.run("report", main)
