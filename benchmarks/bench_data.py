"""Data benchmarks (not a test).

1. Fetch + preprocess all of CIFAR-10 (60,000 JPEGs) from ../shared/data/cifar10-jpeg.tar.gz
   (target: under 60 s on 2 cores).
2. Input-pipeline throughput, training mode with augmentation, in images/s (target: at least
   10,000/s at 32x32), and its ratio to the training throughput of our_small measured in the
   same run (the pipeline must never be the bottleneck).

    .venv/bin/python benchmarks/bench_data.py [--source PATH] [--batch-size 128]

Prints a table and writes benchmarks/results/bench_data.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lightcnn.data import fetch_dataset, make_dataset, preprocess_dataset  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "bench_data.json"


def time_fetch_and_preprocess(source: Path, work: Path) -> dict:
    start = time.perf_counter()
    fetch_dataset("cifar10", work / "raw", source=source, progress=False)
    fetched = time.perf_counter()
    manifest = preprocess_dataset(work / "raw", work / "processed", progress=False)
    done = time.perf_counter()
    shard_bytes = sum((work / "processed" / name).stat().st_size for name in manifest["sha256"])
    return {
        "fetch_s": round(fetched - start, 2),
        "preprocess_s": round(done - fetched, 2),
        "total_s": round(done - start, 2),
        "images": sum(split["num_examples"] for split in manifest["splits"].values()),
        "skipped": len(manifest["skipped"]),
        "shard_mb": round(shard_bytes / 2**20, 1),
    }


def pipeline_throughput(processed: Path, batch_size: int, epochs: int, augment: bool) -> dict:
    """Images/s over whole training epochs: the first pass decodes and caches, later ones are steady state."""
    dataset = make_dataset(processed, "train", batch_size, training=True, seed=0, augment=augment)
    rates = []
    for _ in range(epochs):
        start, images = time.perf_counter(), 0
        for batch, _ in dataset:
            images += int(batch.shape[0])
        rates.append(images / (time.perf_counter() - start))
    return {"first_epoch_images_per_s": round(rates[0]), "steady_images_per_s": round(statistics.median(rates[1:]))}


def training_throughput(processed: Path, batch_size: int, steps: int) -> dict:
    """our_small training images/s on in-memory batches (no input pipeline in the way)."""
    try:
        from lightcnn.models import build_model
    except ImportError as e:
        return {"skipped": f"lightcnn.models is not available ({e})"}
    import keras
    import tensorflow as tf

    images, labels = next(iter(make_dataset(processed, "train", batch_size, training=True, seed=0)))
    model = build_model("our_small", 10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(batches, steps_per_epoch=5, epochs=1, verbose=0)  # build and trace the train step
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return {"train_images_per_s": round(steps * batch_size / (time.perf_counter() - start)), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = Path(os.environ.get("LIGHTCNN_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    parser.add_argument("--source", type=Path, default=shared / "cifar10-jpeg.tar.gz")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="pipeline passes (the first one decodes)")
    parser.add_argument("--train-steps", type=int, default=30)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other work on the machine slows every figure

    work = Path(tempfile.mkdtemp(prefix="bench_data-"))
    try:
        preprocess = time_fetch_and_preprocess(args.source, work)
        augmented = pipeline_throughput(work / "processed", args.batch_size, args.epochs, augment=True)
        plain = pipeline_throughput(work / "processed", args.batch_size, args.epochs, augment=False)
        training = training_throughput(work / "processed", args.batch_size, args.train_steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import tensorflow as tf

    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "tensorflow": tf.__version__, "load_average_1min_at_start": round(load_at_start, 2),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "batch_size": args.batch_size,
        "fetch_preprocess_cifar10": preprocess,
        "pipeline_augmented": augmented,
        "pipeline_plain": plain,
        "training_our_small": training,
    }
    if "train_images_per_s" in training:
        ratio = augmented["steady_images_per_s"] / training["train_images_per_s"]
        results["pipeline_to_training_ratio"] = round(ratio, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    rows = [
        ("fetch (copy and list the archive)", f"{preprocess['fetch_s']} s", ""),
        ("preprocess to TFRecords", f"{preprocess['preprocess_s']} s", ""),
        ("fetch + preprocess, all CIFAR-10", f"{preprocess['total_s']} s", "< 60 s"),
        ("pipeline, augmented, 1st epoch (decode)", f"{augmented['first_epoch_images_per_s']:,} img/s", ""),
        ("pipeline, augmented, steady", f"{augmented['steady_images_per_s']:,} img/s", ">= 10,000 img/s"),
        ("pipeline, no augmentation, steady", f"{plain['steady_images_per_s']:,} img/s", ""),
    ]
    if "train_images_per_s" in training:
        rows += [("our_small training", f"{training['train_images_per_s']:,} img/s", ""),
                 ("pipeline / training", f"{results['pipeline_to_training_ratio']}x", "> 1x")]
    else:
        rows.append(("our_small training", "skipped: " + training["skipped"], ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':>18}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}")
    print(f"\n{os.cpu_count()} CPUs (load average {load_at_start:.1f} at start), batch {args.batch_size}; "
          f"written to {RESULTS.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
