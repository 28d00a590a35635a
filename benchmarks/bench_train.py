"""Training throughput of the four models on each backend (not a test), measured as the train
stage trains: train_model (model.fit with validation, the epoch recorder's checkpoint and
output writes), and where each epoch's time goes.

Each backend runs in its own process (a process has one Keras backend). Each model trains
for --epochs epochs of --steps batches: the first epoch (tracing and compilation) is not
timed; the later ones give images/s of the training steps and the fixed cost per epoch:
validation (--val-images images) and the checkpoint and output writes. The machine is
recorded: CPU model, its vector extensions (AVX2, AVX-512, FMA), core count and load.

    python benchmarks/bench_train.py [--backends tensorflow jax] [--models ...] [--steps 20]
        [--epochs 2] [--input auto|tfdata|arrays]

Input: "tfdata" streams data/processed (the TensorFlow stage's input; `dvc repro
preprocess` first), "arrays" holds the CIFAR-10 archive (../shared/data/cifar10-jpeg.tar.gz)
in memory (the TensorFlow-free path); "auto" takes tfdata when data/processed exists and
TensorFlow is installed. Writes benchmarks/results/bench_train.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
from lightcnn.machine import read_cpuinfo  # noqa: E402 - after the project is on the path

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "bench_train.json"
DEFAULT_ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
MODELS = ("mobilenetv3_large", "mobilenetv3_small", "our_large", "our_small")  # lightcnn.models.MODEL_NAMES
VECTOR_EXTENSIONS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> dict:
    """CPU model, the vector extensions that matter to the kernels, cores and load."""
    model, flags = read_cpuinfo()
    return {"cpu": model, "vector_extensions": [flag for flag in VECTOR_EXTENSIONS if flag in (flags or ())],
            "cpus": os.cpu_count(), "platform": platform.platform(), "load_average_1min": os.getloadavg()[0]}


def describe_machine(cpu: dict) -> str:
    extensions = ", ".join(name.upper().replace("_", "-") for name in cpu["vector_extensions"]) or "none known"
    return f"{cpu['cpu']} ({cpu['cpus']} cores; {extensions})"


# ----------------------------------------------------------------------------- worker (one backend)


def measure_backend(args: argparse.Namespace) -> list[dict]:
    from lightcnn.training import resolve_config, select_backend

    select_backend(args.backend)
    import keras

    from lightcnn.training import seed_everything, train_model

    class EpochParts(keras.callbacks.Callback):
        """Runs after train_model's recorder: epoch end includes its checkpoint writes."""

        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.times = {"begin": time.perf_counter()}

        def on_test_begin(self, logs=None):
            self.times["test_begin"] = time.perf_counter()

        def on_test_end(self, logs=None):
            self.times["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t = {**self.times, "end": time.perf_counter()}
            self.epochs.append({"train_steps_s": t["test_begin"] - t["begin"],
                                "validation_s": t["test_end"] - t["test_begin"],
                                "writes_s": t["end"] - t["test_end"]})

    recipe_warmup = 0.5 if args.recipe == "default" else 0.0
    config = resolve_config(args.recipe, backend=args.backend, epochs=args.epochs, warmup_epochs=recipe_warmup,
                            precision=args.precision, steps_per_execution=args.steps_per_execution)
    seed_everything(config)
    train, val, source = load_inputs(args, config)
    rows = []
    for model_name in args.models:
        parts = EpochParts()
        out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{model_name}-"))
        try:
            start = time.perf_counter()
            summary = train_model(model_name, 10, (32, 32, 3), train, val, config, out_dir, callbacks=[parts],
                                  verbose=0)
            total = time.perf_counter() - start
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        input_alone = None
        if source.startswith("tf.data"):  # the stage's input stream, timed alone as the stage times it
            from lightcnn.data.pipeline import seconds_per_pass

            input_alone = round(seconds_per_pass(train), 3)
        timed = parts.epochs[1:]
        mean = {key: sum(epoch[key] for epoch in timed) / len(timed) for key in timed[0]}
        images_per_s = args.steps * config.batch_size / mean["train_steps_s"]
        rows.append({
            "backend": args.backend, "model": model_name, "input": source, "images_per_s": round(images_per_s, 1),
            "validation_s_per_epoch": round(mean["validation_s"], 2),
            "writes_s_per_epoch": round(mean["writes_s"], 2),
            "input_stream_alone_s_per_epoch": input_alone,  # tf.data only; arrays augment inside the step
            "fixed_cost_share": round((mean["validation_s"] + mean["writes_s"]) / sum(mean.values()), 3),
            "first_epoch_s": round(sum(parts.epochs[0].values()), 1), "total_s": round(total, 1),
            "steps_per_epoch": args.steps, "batch_size": config.batch_size, "timed_epochs": len(timed),
            "val_images": args.val_images, "params": summary["params"],
            "seconds_per_cifar10_epoch": round(40000 / images_per_s + mean["validation_s"] * 10000 / args.val_images
                                               + mean["writes_s"], 1),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def load_inputs(args: argparse.Namespace, config) -> tuple:
    """(train, val, name): --steps batches of training data and --val-images validation images."""
    use_tfdata = args.input == "tfdata" or (
        args.input == "auto" and (args.processed / "manifest.json").exists() and _has_tensorflow())
    if use_tfdata:
        from lightcnn.data import load_manifest, make_dataset

        if not (args.processed / "manifest.json").exists():
            sys.exit(f"error: no preprocessed data in {args.processed}; run `dvc repro preprocess` first")
        manifest = load_manifest(args.processed)
        if manifest["image_size"] != [32, 32] or manifest["num_classes"] != 10:
            sys.exit("error: the benchmark expects CIFAR-10 at 32x32 in data/processed")
        train = make_dataset(args.processed, "train", config.batch_size, training=True, seed=config.seed,
                             augment=config.augment, shift_fraction=config.shift_fraction,
                             flip=config.flip).take(args.steps)
        val = make_dataset(args.processed, "val", config.batch_size, training=False).unbatch().take(
            args.val_images).batch(config.batch_size)
        import tensorflow as tf

        val = val.apply(tf.data.experimental.assert_cardinality(-(-args.val_images // config.batch_size)))
        return train, val, "tf.data (data/processed)"
    from lightcnn.data.arrays import ImageArrays, load_image_arrays

    train_images = args.steps * config.batch_size
    # Enough images per class for both after preprocess's 80/20 split (CIFAR-10: 5,000 per class).
    per_class = max(math.ceil(train_images / 10 / 0.8), math.ceil(args.val_images / 10 / 0.2)) + 1
    data = load_image_arrays(args.archive, max_per_class=min(per_class, 5000))
    train, val = data["train"], data["val"]
    if len(train) < train_images or len(val) < args.val_images:
        sys.exit(f"error: CIFAR-10 has too few images for {args.steps} steps of {config.batch_size} and "
                 f"{args.val_images} validation images")
    import numpy as np

    picked = np.sort(np.random.default_rng(0).permutation(len(train))[:train_images])  # all classes
    train = ImageArrays(train.images[picked], train.labels[picked], train.class_names)
    val = ImageArrays(val.images[:args.val_images], val.labels[:args.val_images], val.class_names)
    return train, val, "arrays (in memory)"


def _has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"], choices=["tensorflow", "jax"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model; the first is not timed")
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--input", default="auto", choices=["auto", "tfdata", "arrays"])
    parser.add_argument("--processed", type=Path, default=PROJECT_ROOT / "data" / "processed")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)  # worker mode: one backend, rows as JSON on stdout
    args = parser.parse_args()
    if args.steps < 1 or args.epochs < 2:
        parser.error("--steps must be >= 1 and --epochs >= 2 (the first epoch is not timed)")

    if args.backend:
        print("ROWS " + json.dumps(measure_backend(args)), flush=True)
        return

    cpu = cpu_description()
    print(f"Training throughput on {describe_machine(cpu)}", flush=True)
    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--backend", backend, *sys.argv[1:]]
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        found = [line for line in result.stdout.splitlines() if line.startswith("ROWS ")]
        if result.returncode != 0 or not found:
            sys.exit(f"error: the {backend} benchmark failed (exit {result.returncode}); its output is above")
        rows += json.loads(found[-1][5:])
    cpu["load_average_1min_at_end"] = os.getloadavg()[0]
    result = {"command": " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]), "machine": cpu,
              "machine_summary": describe_machine(cpu), "recipe": args.recipe, "precision": args.precision,
              "rows": rows}
    from lightcnn import io

    io.write_json(args.output, result)
    print(f"\n{'backend':<12}{'model':<20}{'images/s':>10}{'val s/ep':>10}{'writes s/ep':>12}"
          f"{'fixed %':>9}{'s/CIFAR ep':>12}{'1st epoch s':>13}")
    for row in rows:
        print(f"{row['backend']:<12}{row['model']:<20}{row['images_per_s']:>10}{row['validation_s_per_epoch']:>10}"
              f"{row['writes_s_per_epoch']:>12}{100 * row['fixed_cost_share']:>8.0f}%"
              f"{row['seconds_per_cifar10_epoch']:>12}{row['first_epoch_s']:>13}")
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["backend"]] = row["images_per_s"]
    ratios = {model: round(speeds["jax"] / speeds["tensorflow"], 2) for model, speeds in by_model.items()
              if {"jax", "tensorflow"} <= set(speeds)}
    if ratios:
        print("\nJAX / TensorFlow images/s: " + ", ".join(f"{m} {r}" for m, r in ratios.items()))
    print(f"\nWritten: {args.output}")


if __name__ == "__main__":
    main()
