"""Stage benchmark@<model>-<seed>: LiteRT single-image latency of each TFLite variant.

The TFLite files only: no Keras or TensorFlow is loaded in the timed process (the MACs are
counted by evaluate, which has the Keras model loaded).

    python -m pipeline.benchmark our_small 42
"""
from __future__ import annotations

from lightcnn import io
from lightcnn.benchmark import cpu_info, latency
from lightcnn.export import VARIANTS
from pipeline.common import stage
from pipeline.common.params import StageParams
from pipeline.common.paths import ModelPaths


def main(params: StageParams, model_name: str, seed: int) -> None:
    paths = ModelPaths(model_name, seed)
    threads, warmup, runs = params["benchmark.threads"], params["benchmark.warmup"], params["benchmark.runs"]
    results: dict = {"cpu": cpu_info()}
    for variant in VARIANTS:
        results[variant] = {}
        for count in threads:
            stage.say(params, f"timing {variant} on {count} thread(s): {warmup} warm-up and {runs} timed runs")
            results[variant][str(count)] = latency(paths.tflite(variant), threads=count, warmup=warmup, runs=runs)
    io.write_json(paths.latency_metrics, results)


if __name__ == "__main__":
    stage.run("benchmark", main, per_model=True)
