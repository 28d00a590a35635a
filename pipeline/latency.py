"""Stage latency: every model, seed and TFLite variant timed in one process, interleaved.

    python -m pipeline.latency

The comparison table's latency comes from here, not from the per-model benchmark stages:
timed in separate processes at different moments, the same model's figures differ by tens of
percent on a shared machine. Here all files are loaded first (threads fixed when each
interpreter is built), then timed in rounds in a shuffled order, so every figure saw the same
conditions; each carries its median, p90 and a 95% interval of the median, with the CPU, its
vector extensions and LiteRT's version. Also writes an op-level profile of the first seed's
files (which ops ran inside XNNPACK, which fell back, time per op).
"""
from __future__ import annotations

from lightcnn import io
from lightcnn.export import VARIANTS
from lightcnn.latency import COMPARED_PAIRS, interleaved_latency, latency_markdown
from lightcnn.profiling import op_profile, profile_markdown
from pipeline.common import stage
from pipeline.common.params import StageParams
from pipeline.common.paths import LATENCY_JSON, METRICS_DIR, ModelPaths, latency_key as run_key

LATENCY_MD = METRICS_DIR / "latency.md"
PROFILE_JSON = METRICS_DIR / "op_profiles.json"
PROFILE_MD = METRICS_DIR / "op_profiles.md"


def main(params: StageParams) -> None:
    models, seeds = params["model.selected"], params["train.seeds"]
    files = {(run_key(m, s), v): ModelPaths(m, s).tflite(v) for m in models for s in seeds for v in VARIANTS}
    measurement = interleaved_latency(files, params["benchmark.threads"], rounds=params["benchmark.rounds"],
                                      runs_per_round=params["benchmark.runs_per_round"],
                                      warmup=params["benchmark.warmup"])
    io.write_json(LATENCY_JSON, measurement)
    first = seeds[0]
    # latency_markdown leaves out a pair whose models were not measured.
    pairs = {run_key(ours, first): run_key(base, first) for ours, base in COMPARED_PAIRS.items()}
    io.write_text(LATENCY_MD, latency_markdown(measurement, pairs))
    profiles = {f"{m}/{v}": op_profile(ModelPaths(m, first).tflite(v), threads=1) for m in models for v in VARIANTS}
    io.write_json(PROFILE_JSON, profiles)
    io.write_text(PROFILE_MD, "\n\n".join(profile_markdown(profile, title=name) for name, profile in profiles.items()))


if __name__ == "__main__":
    stage.run("latency", main)
