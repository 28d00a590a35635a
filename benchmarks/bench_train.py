"""Training throughput of the four models (not a test): images/s and seconds per epoch.

Trains each model for a number of steps on the preprocessed data (data/processed, as
`dvc repro fetch preprocess` leaves it) with the default recipe, discards the first steps
(graph tracing) and times the rest. Prints a table and writes
benchmarks/results/bench_train.json.

    python benchmarks/bench_train.py [--steps 40] [--warmup-steps 5] [--models our_small ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import keras  # noqa: E402

from lightcnn import io  # noqa: E402
from lightcnn.data import load_manifest, make_dataset  # noqa: E402
from lightcnn.models import MODEL_NAMES, build_model  # noqa: E402
from lightcnn.training import compile_model, resolve_config, seed_everything  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "bench_train.json"


class StepTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def measure(model_name: str, processed: Path, steps: int, warmup_steps: int, recipe: str) -> dict:
    manifest = load_manifest(processed)
    config = resolve_config(recipe)
    seed_everything(config)
    dataset = make_dataset(processed, "train", config.batch_size, training=True, seed=config.seed).repeat()
    model = build_model(model_name, manifest["num_classes"], (*manifest["image_size"], 3))
    compile_model(model, config, steps_per_epoch=1000)
    timer = StepTimer()
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps + warmup_steps, epochs=1, callbacks=[timer], verbose=0)
    timed = timer.ends[warmup_steps:]
    images_per_s = (len(timed) - 1) * config.batch_size / (timed[-1] - timed[0])
    train_images = sum(manifest["counts"]["train"].values())
    return {"model": model_name, "images_per_s": round(images_per_s, 1),
            "first_steps_s": round(timer.ends[warmup_steps - 1] - start, 1),
            "train_images": train_images, "seconds_per_epoch": round(train_images / images_per_s, 1),
            "batch_size": config.batch_size, "timed_steps": len(timed) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processed", type=Path, default=PROJECT_ROOT / "data" / "processed")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    args = parser.parse_args()
    if not (args.processed / "manifest.json").exists():
        sys.exit(f"error: no preprocessed data in {args.processed}; run `dvc repro preprocess` first")
    rows = [measure(m, args.processed, args.steps, args.warmup_steps, args.recipe) for m in args.models]
    result = {"command": " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_1min_at_end": os.getloadavg()[0]},
              "recipe": args.recipe, "models": rows}
    io.write_json(RESULTS, result)
    print(f"{'model':<20}{'images/s':>10}{'s/epoch':>10}{'first steps s':>15}")
    for row in rows:
        print(f"{row['model']:<20}{row['images_per_s']:>10}{row['seconds_per_epoch']:>10}{row['first_steps_s']:>15}")


if __name__ == "__main__":
    main()
