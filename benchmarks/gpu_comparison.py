"""The whole CIFAR-10 comparison on one accelerator: four models, default recipe, JAX backend.

Trains each model (default recipe, --epochs, batch 128) on CIFAR-10 held in memory from the
class-folder JPEG archive (train/val split as preprocess makes it), evaluates the best
epoch's model on the 10,000 test images and prints one table: test accuracy, training time,
images/s and peak device memory. Needs NumPy, Pillow, JAX (CUDA for a GPU), Keras and
pydantic, and no TensorFlow.

    KERAS_BACKEND=jax python benchmarks/gpu_comparison.py [--archive ../shared/data/cifar10-jpeg.tar.gz]
        [--epochs 30] [--models ...] [--max-per-class N] [--test-per-class N]
        [--precision float32] [--steps-per-execution 16] [--output results.json]

The archive is decoded once, into a .npz in --work-dir; each model then trains in its own
process (a clean compilation cache and a peak-memory reading of its own). On a GPU,
`--probe-precisions` first times a few steps of each model in float32, mixed_bfloat16 and
mixed_float16 (depthwise convolutions are slow in some XLA / mixed-precision combinations)
and trains each model in its fastest precision; `--probe-only` prints those speeds and trains
nothing. `--jobs N` trains N models at once on the one device (each process allocates device
memory as it needs it, not XLA's default 75%): the accuracies are unaffected, but each
images/s is then a share of the device, not the model's speed alone, and the table says so.
`--log-dir` keeps each worker's output in its own file; `--output` is rewritten as each
model finishes, so a run stopped early keeps what it finished.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEFAULT_ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

import pipeline  # noqa: E402,F401  (first, as a stage process: pipeline/common/lean_imports.py)
from lightcnn import io  # noqa: E402  (none of these imports Keras)
from lightcnn.models import MODEL_NAMES  # noqa: E402
from lightcnn.study import STUDY_MODELS  # noqa: E402


def prepare_arrays(args: argparse.Namespace) -> Path:
    """Decode the archive once into work_dir/cifar10-<digest of the options>.npz (train, val,
    test); no Keras needed."""
    from lightcnn.data.arrays import load_image_arrays

    # Named by what it holds: a --work-dir reused with another archive or subset decodes afresh.
    source = [str(args.archive.resolve()), args.archive.stat().st_size, args.max_per_class, args.test_per_class]
    path = args.work_dir / f"cifar10-{hashlib.sha256(json.dumps(source).encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        print(f"Reusing the decoded {path}", flush=True)
        return path
    start = time.perf_counter()
    data = load_image_arrays(args.archive, max_per_class=args.max_per_class, seed=0)
    test = data["test"]
    if args.test_per_class:
        test = test.subset(args.test_per_class)
    arrays = {f"{split}_{kind}": getattr(split_data, kind) for split, split_data in
              (("train", data["train"]), ("val", data["val"]), ("test", test)) for kind in ("images", "labels")}
    with io.atomic_path(path, suffix=".npz") as tmp:  # savez keeps a name ending in .npz
        np_module().savez(tmp, class_names=np_module().asarray(data["train"].class_names), **arrays)
    print(f"Decoded {args.archive.name}: {len(data['train'])} train, {len(data['val'])} val, {len(test)} test "
          f"images in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def np_module():
    import numpy

    return numpy


def load_split(npz: Path, split: str):
    from lightcnn.data.arrays import ImageArrays

    with np_module().load(npz) as data:
        return ImageArrays(data[f"{split}_images"], data[f"{split}_labels"], tuple(data["class_names"].tolist()))


def peak_memory() -> dict:
    """Peak device memory (bytes; None where the device does not say) and peak host RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {"device_peak_bytes": stats.get("peak_bytes_in_use"),
            "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def train_one(args: argparse.Namespace) -> dict:
    """Worker: train args.model and evaluate it on the test images."""
    from lightcnn.training import resolve_config
    from lightcnn.training.backend import prepare_process

    overrides = dict(backend="jax", precision=args.precision, steps_per_execution=args.steps_per_execution,
                     deterministic=not args.nondeterministic)
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, warmup_epochs=min(2.0, args.epochs / 15))
    config = resolve_config("default", batch_size=args.batch_size, **overrides)  # None: the recipe's
    prepare_process(config)  # before JAX starts: the backend and XLA's deterministic-kernel flag
    import jax
    import keras

    from lightcnn.data.arrays import evaluation_batches
    from lightcnn.training import train_model

    train, val, test = (load_split(args.npz, split) for split in ("train", "val", "test"))

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.begin = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.steps.append(time.perf_counter() - self.begin)

    times = EpochTimes()
    start = time.perf_counter()
    summary = train_model(args.model, train.num_classes, train.image_shape, train, val, config,
                          args.work_dir / args.model, callbacks=[times], verbose=2 if args.verbose else 0)
    train_seconds = time.perf_counter() - start
    from lightcnn.models import load_model

    best = load_model(args.work_dir / args.model / "best.keras")
    best.compile(loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
    evaluation = best.evaluate(evaluation_batches(test, 500), verbose=0, return_dict=True)
    steps_per_epoch = len(train) // config.batch_size
    steady = times.steps[1:] or times.steps
    return {
        "model": args.model, "device": str(jax.devices()[0].device_kind), "precision": config.precision,
        "epochs": config.epochs, "batch_size": config.batch_size, "train_images": len(train),
        "test_images": len(test), "test_accuracy": evaluation["accuracy"],
        "best_val_accuracy": summary["best_val_accuracy"], "best_epoch": summary["best_epoch"],
        "train_seconds": train_seconds,  # the whole train_model call: compilation, validation and writes included
        "images_per_second": steps_per_epoch * config.batch_size / (sum(steady) / len(steady)),
        "first_epoch_train_seconds": times.steps[0], "params": summary["params"], **peak_memory(),
        "config": config.model_dump(mode="json"),  # the whole recipe, seed and model mode included
        "versions": {"jax": jax.__version__, "keras": keras.__version__, "numpy": np_module().__version__},
    }


def probe_one(args: argparse.Namespace) -> dict:
    """Worker: images/s of a few training steps of args.model in each precision."""
    from lightcnn.training import resolve_config
    from lightcnn.training.backend import prepare_process

    prepare_process(resolve_config("default", backend="jax", deterministic=not args.nondeterministic))
    import jax
    import keras
    import numpy as np

    from lightcnn.data.arrays import training_batches
    from lightcnn.models import build_model
    from lightcnn.training.backend import dtype_policy, keep_output_float32
    from lightcnn.training.optimizer import compile_model

    began = time.perf_counter()
    train = load_split(args.npz, "train")
    speeds = {}
    for precision in PRECISIONS:
        config = resolve_config("default", backend="jax", precision=precision, batch_size=args.batch_size,
                                steps_per_execution=args.steps_per_execution, deterministic=not args.nondeterministic)
        with dtype_policy(precision):
            model = build_model(args.model, 10, train.image_shape, mode=config.model_mode)
        if precision != "float32":
            keep_output_float32(model)
        batches = training_batches(train, config.batch_size, seed=0, shift_fraction=config.shift_fraction,
                                   drop_remainder=True)
        compile_model(model, config, len(batches))
        steps = min(len(batches), 100)
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)  # compile and warm up
        start = time.perf_counter()
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
        speeds[precision] = steps * config.batch_size / (time.perf_counter() - start)
        # As each precision ends: a probe stopped early still says what it measured.
        print(f"{args.model} {precision}: {speeds[precision]:.0f} images/s ({steps} steps of {config.batch_size}; "
              f"{time.perf_counter() - began:.0f} s into the probe)", flush=True)
        del model
        keras.backend.clear_session()
    return {"model": args.model, "device": str(jax.devices()[0].device_kind), "images_per_second": speeds,
            "fastest": max(speeds, key=speeds.get), "numpy": np.__version__}


def run_worker(args: argparse.Namespace, mode: str, model: str, precision: str, shared: bool) -> dict:
    """One worker process; `shared`: others use the device at the same time."""
    command = [sys.executable, __file__, "--worker", mode, "--model", model, "--npz", str(args.npz),
               "--work-dir", str(args.work_dir), "--precision", precision,
               "--steps-per-execution", str(args.steps_per_execution)]
    if args.batch_size is not None:
        command += ["--batch-size", str(args.batch_size)]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if args.nondeterministic:
        command.append("--nondeterministic")
    if args.verbose or args.log_dir is not None:  # a log file holds the per-epoch lines
        command.append("--verbose")
    environment = dict(os.environ)
    if shared:  # several processes on the device: each takes memory as it needs it
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if args.log_dir is None:
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=environment)
        output = result.stdout
    else:
        log = args.log_dir / f"{mode}-{model}.log"
        with log.open("w") as stream:
            result = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, text=True, env=environment)
        output = log.read_text()
    found = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not found:
        raise WorkerFailed(f"error: {mode} of {model} failed (exit {result.returncode}); the end of its output:\n"
                           + output[-3000:])
    return json.loads(found[-1][7:])


class WorkerFailed(RuntimeError):
    """A worker process exited with an error or without its RESULT line."""


def run_workers(args: argparse.Namespace, mode: str, precisions: dict[str, str], report, jobs: int) -> list[dict]:
    """Run one worker per model, `jobs` at a time; report(result) here, as each finishes.
    Results come back in args.models' order; the first failure stops the run once the
    workers already started have ended."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_worker, args, mode, model, precisions[model], jobs > 1): model
                   for model in args.models}
        results = {}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except WorkerFailed as failure:
                for pending in futures:
                    pending.cancel()
                sys.exit(str(failure))
            report(results[futures[future]])
    return [results[model] for model in args.models]


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=list(STUDY_MODELS), choices=MODEL_NAMES,
                        help="default: the study's four; 'smoke' checks the script in seconds")
    parser.add_argument("--max-per-class", type=int, default=None, help="train images per class (default: all)")
    parser.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--probe-precisions", action="store_true",
                        help="time each precision per model first and train each in its fastest")
    parser.add_argument("--probe-only", action="store_true", help="time each precision per model, train nothing")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once on the one device (default 1; "
                        "more shares the device: images/s is then a share, not a model's own speed)")
    parser.add_argument("--steps-per-execution", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's 128; "
                        "the learning rate follows it)")
    parser.add_argument("--nondeterministic", action="store_true", help="skip XLA's deterministic GPU kernels")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="each worker's output, per-epoch lines included, in its own file here")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--worker", choices=["train", "probe"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = train_one(args) if args.worker == "train" else probe_one(args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    if not args.archive.is_file():
        sys.exit(f"error: {args.archive} not found; pass --archive (the CIFAR-10 class-folder JPEG archive)")
    if len(set(args.models)) != len(args.models):
        sys.exit(f"error: --models names a model twice ({' '.join(args.models)}); name each once")
    if args.jobs < 1:
        sys.exit(f"error: --jobs {args.jobs}: give 1 or more")
    args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-comparison-"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    args.npz = prepare_arrays(args)
    precisions = {model: args.precision for model in args.models}
    record = {"rows": [], "probes": [], "jobs": args.jobs, "command": " ".join(sys.argv)}

    def save() -> None:  # each time a worker finishes: a run stopped early keeps what it finished
        if args.output:
            io.write_text(args.output, json.dumps({**record, "wall_seconds": time.perf_counter() - start}, indent=1))

    def report_probe(probe: dict) -> None:
        record["probes"].append(probe)
        save()
        print(f"probe {probe['model']} ({probe['device']}, alone): "
              + ", ".join(f"{p} {s:.0f}/s" for p, s in probe["images_per_second"].items()), flush=True)

    def report_row(row: dict) -> None:
        record["rows"].append(row)
        save()
        print(f"{row['model']}: test accuracy {row['test_accuracy']:.4f}, {row['train_seconds']:.0f} s, "
              f"{row['images_per_second']:.0f} images/s", flush=True)

    if args.probe_precisions or args.probe_only:
        # Speeds are each model's own: one probe at a time.
        for probe in run_workers(args, "probe", precisions, report_probe, jobs=1):
            precisions[probe["model"]] = probe["fastest"]
    if not args.probe_only:
        rows = run_workers(args, "train", precisions, report_row, jobs=args.jobs)
        record["rows"] = rows  # in args.models' order
        share = (f"; {args.jobs} models trained at once, so images/s is each one's share of the device"
                 if args.jobs > 1 and len(rows) > 1 else "")
        print(f"\nCIFAR-10, default recipe, {rows[0]['epochs']} epochs, JAX on {rows[0]['device']} "
              f"({rows[0]['train_images']} train / {rows[0]['test_images']} test images{share})\n")
        print("| model | precision | test accuracy | training time (s) | images/s | peak device memory (GiB) |")
        print("|---|---|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['model']} | {row['precision']} | {100 * row['test_accuracy']:.2f}% "
                  f"| {row['train_seconds']:.0f} | {row['images_per_second']:.0f} | {gib(row['device_peak_bytes'])} |")
    total = time.perf_counter() - start
    print(f"\nWall time, decoding and all models: {total:.0f} s")
    save()


if __name__ == "__main__":
    main()
