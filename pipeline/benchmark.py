"""Stage benchmark@<model>: LiteRT single-image latency of each TFLite variant, and MACs.

    python -m pipeline.benchmark our_small
"""
from __future__ import annotations

from lightcnn import io
from lightcnn.export import VARIANTS
from pipeline import stage, tracking
from pipeline.params import check_model, load_params
from pipeline.paths import ModelPaths


def main(model_name: str = "") -> None:
    params = load_params()
    check_model(params, model_name)
    import keras

    from lightcnn.benchmark import count_macs, cpu_info, latency

    paths = ModelPaths(model_name)
    settings = params["benchmark"]
    results: dict = {"macs": count_macs(keras.models.load_model(paths.best)), "cpu": cpu_info()}
    for variant in VARIANTS:
        results[variant] = {str(threads): latency(paths.tflite(variant), threads=threads,
                                                  warmup=settings["warmup"], runs=settings["runs"])
                            for threads in settings["threads"]}
    io.write_json(paths.latency_metrics, results)

    run = tracking.ModelRun.reopen(paths.mlflow_run)
    if run:
        run.log_metrics({"macs": results["macs"], **{
            f"latency.{variant}.threads{t}.{stat}": results[variant][str(t)][stat]
            for variant in VARIANTS for t in settings["threads"] for stat in ("median_ms", "p90_ms")}})
        run.set_tags({"benchmark_cpu": str(results["cpu"].get("model_name", results["cpu"]))})
        run.finish()


if __name__ == "__main__":
    stage.run(main)
