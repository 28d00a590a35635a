"""Stage benchmark@<model>-<seed>: LiteRT single-image latency of each TFLite variant, and MACs.

    python -m pipeline.benchmark our_small 42
"""
from __future__ import annotations

from lightcnn import io
from lightcnn.benchmark import count_macs, cpu_info, latency
from lightcnn.export import VARIANTS
from lightcnn.models import load_model
from pipeline.common import stage
from pipeline.common.params import StageParams
from pipeline.common.paths import ModelPaths


def main(params: StageParams, model_name: str, seed: int) -> None:
    paths = ModelPaths(model_name, seed)
    threads, warmup, runs = params["benchmark.threads"], params["benchmark.warmup"], params["benchmark.runs"]
    results: dict = {"macs": count_macs(load_model(paths.best)), "cpu": cpu_info()}
    for variant in VARIANTS:
        results[variant] = {str(t): latency(paths.tflite(variant), threads=t, warmup=warmup, runs=runs)
                            for t in threads}
    io.write_json(paths.latency_metrics, results)


if __name__ == "__main__":
    stage.run("benchmark", main, per_model=True)
