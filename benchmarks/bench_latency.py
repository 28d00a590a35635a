"""LiteRT latency of the four models' TFLite variants, interleaved in one process (not a test).

Converts each model (lightcnn.export.convert_variants: float32, float16, int8), times every
model and variant at each thread count with lightcnn.latency.interleaved_latency, profiles
each variant op by op at each thread count (lightcnn.profiling.op_profile), and with
--levers also times the int8 recipes tried on the way to the default (uint8 edges, the
fused hard-swish, no stochastic-depth fold, per-tensor weights) and float32 without the
fold, all in the same interleaved run so that their ratios are fair.

    python benchmarks/bench_latency.py [--keras-dir DIR] [--threads 1 2] [--rounds 40]
        [--runs-per-round 10] [--models ...] [--levers [--lever-models ...]] [--accuracy-images 2000]

Models: DIR/<model>.keras if given, else the pipeline's models/<model>/seed-<seed>/best.keras
if present, else freshly built (random weights, BatchNorm statistics set on real images):
fine for latency, and then no accuracy is reported. int8 is calibrated on 200 training
images of ../shared/data/cifar10-jpeg.tar.gz; accuracy (trained models only) is top-1 on
the first --accuracy-images test images. Writes benchmarks/results/latency.{json,md} and
op_profiles.{json,md} (git-ignored) and prints the Markdown. The load average is recorded:
the machine may be shared, which interleaving keeps fair for ratios but not for absolute ms.
latency.json also names the command and where each model came from; to publish a
measurement, `python benchmarks/results_table.py record-latency --name ... --what ...`
copies it into docs/latency/<name>/ and the README's latency tables are generated from it.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
DEFAULT_ARCHIVE = Path(os.environ.get("LIGHTCNN_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data")) \
    / "cifar10-jpeg.tar.gz"
MODELS = ("mobilenetv3_large", "mobilenetv3_small", "our_large", "our_small")  # lightcnn.models.MODEL_NAMES


def int8_levers():
    """The int8 recipes measured besides the default, by name: each changes one thing back."""
    from lightcnn.export import Int8Recipe

    return {
        "int8 as before (uint8 edges, fused hard-swish, no fold)": Int8Recipe(
            io_dtype="uint8", hard_swish="fused", fold_stochastic_depth=False),
        "int8 signed edges only": Int8Recipe(hard_swish="fused", fold_stochastic_depth=False),
        "int8 default, fused hard-swish": Int8Recipe(hard_swish="fused"),
        "int8 default, no fold": Int8Recipe(fold_stochastic_depth=False),
        "int8 default, per-tensor weights": Int8Recipe(per_channel=False),
    }


def load_models(keras_dir: Path | None, seed: int, calibration: np.ndarray, names: list[str]) -> dict:
    """{model: (keras model, trained?, where it came from)} from keras_dir, the pipeline's models/, or freshly built."""
    import keras

    from lightcnn.models import build_model, load_model

    models = {}
    for name in names:
        candidates = [keras_dir / f"{name}.keras"] if keras_dir else []
        candidates.append(PROJECT_ROOT / "models" / name / f"seed-{seed}" / "best.keras")
        found = next((path for path in candidates if path.is_file()), None)
        if found:
            digest = hashlib.sha256(found.read_bytes()).hexdigest()[:12]
            models[name] = (load_model(found), True, f"trained, {found.name} (sha256 {digest}...)")
            print(f"{name}: {found}", flush=True)
            continue
        keras.utils.set_random_seed(seed)
        model = build_model(name, num_classes=10)
        # Random weights with BatchNorm statistics (0, 1) shrink activations layer after layer;
        # statistics of real images give the quantiser realistic ranges.
        momenta = {}
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                momenta[layer.name], layer.momentum = layer.momentum, 0.0
        model(calibration[:64], training=True)
        for layer in model.layers:
            if layer.name in momenta:
                layer.momentum = momenta[layer.name]
        models[name] = (model, False, "random weights, BatchNorm statistics from 64 training images")
        print(f"{name}: random weights (no trained model found)", flush=True)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras-dir", type=Path, help="folder with <model>.keras files to convert")
    parser.add_argument("--seed", type=int, default=42, help="pipeline seed folder to look in (models/...)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--runs-per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--levers", action="store_true", help="also time the int8 recipes tried (see int8_levers)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="the models to time")
    parser.add_argument("--lever-models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="the models to convert with every lever (each lever is one more conversion)")
    parser.add_argument("--accuracy-images", type=int, default=2000)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--reuse", action="store_true",
                        help="take .tflite files already in OUT/tflite; convert only the missing ones")
    args = parser.parse_args()
    if not args.archive.is_file():
        parser.error(f"CIFAR-10 archive not found at {args.archive}; pass --archive or set LIGHTCNN_SHARED_DATA")

    from lightcnn import io
    from lightcnn.export import VARIANTS, TFLiteModel, convert_variants, evaluate_tflite, write_tflite
    from lightcnn.latency import COMPARED_PAIRS, interleaved_latency, latency_markdown, levers_markdown, load_average
    from lightcnn.latency_record import main_results
    from lightcnn.profiling import op_profile, profile_markdown, profiles_summary_markdown
    from tests.helpers_real_data import load_cifar10_sample

    started = time.time()
    (args.out / "latency.json").unlink(missing_ok=True)  # an interrupted run leaves no stale pairing
    print(f"load average at start: {load_average()}", flush=True)
    calibration, _ = load_cifar10_sample(args.archive, "train", per_class=20)
    per_class = max(1, args.accuracy_images // 10)
    test_images, test_labels = load_cifar10_sample(args.archive, "test", per_class=per_class)
    models = load_models(args.keras_dir, args.seed, calibration, args.models)
    levers = int8_levers() if args.levers else {}

    tflite_dir = args.out / "tflite"
    files, accuracy = {}, {}
    for name, (model, trained, _) in models.items():
        names = list(VARIANTS)
        if levers and name in args.lever_models:
            names += ["float32 no fold", *levers]
        paths = {variant: tflite_dir / f"{name}_{_slug(variant)}.tflite" for variant in names}
        missing = [variant for variant in names if not (args.reuse and paths[variant].is_file())]
        converted = {}
        if any(variant in VARIANTS for variant in missing):
            converted.update(convert_variants(model, [v for v in VARIANTS if v in missing], calibration))
        if "float32 no fold" in missing:
            converted["float32 no fold"] = convert_variants(model, ("float32",), lean=False)["float32"]
        for lever, recipe in levers.items():
            if lever in missing:
                converted[lever] = convert_variants(model, ("int8",), calibration, int8_recipe=recipe)["int8"]
        for variant in names:
            files[(name, variant)] = write_tflite(paths[variant], converted[variant]) if variant in converted \
                else paths[variant]
        if trained:
            keras_probs = model.predict(test_images, batch_size=256, verbose=0)
            accuracy[name] = {"keras": float(np.mean(keras_probs.argmax(1) == test_labels))}
            for variant in names:
                result = evaluate_tflite(TFLiteModel(files[(name, variant)]), test_images, test_labels,
                                         reference_probs=keras_probs)
                accuracy[name][variant] = {"top1": result["top1"], "agreement": result["agreement"]}
        print(f"{name}: converted ({time.time() - started:.0f} s)", flush=True)

    measurement = interleaved_latency(files, args.threads, rounds=args.rounds,
                                      runs_per_round=args.runs_per_round, warmup=args.warmup)
    measurement["accuracy"] = {"test_images": int(len(test_labels)), "by_model": accuracy}
    measurement["context"]["command"] = shlex.join(["python", "benchmarks/bench_latency.py", *sys.argv[1:]])
    measurement["context"]["models"] = {name: source for name, (_, _, source) in models.items()}
    print(f"timed ({time.time() - started:.0f} s)", flush=True)

    markdown = ["# LiteRT latency, interleaved", "", latency_markdown(main_results(measurement), COMPARED_PAIRS)]
    if levers:
        markdown += ["## int8 levers (same run)", "", levers_markdown(measurement)]
    if accuracy:
        markdown += ["## Accuracy on the test images", "", _accuracy_table(accuracy, len(test_labels))]

    print("\n".join(markdown), flush=True)

    # Every variant (the levers too: where their time goes is the point) at every thread count:
    # side by side they show what a second thread buys each op.
    profiles, sections = {}, []
    for (name, variant), path in files.items():
        for count in args.threads:
            profile = op_profile(path, threads=count)
            profiles[(name, variant, count)] = profile
            sections.append(profile_markdown(profile, f"{name} {variant}, {count} thread{'s' if count > 1 else ''}"))
    print(f"profiled ({time.time() - started:.0f} s)", flush=True)
    profile_lines = ["# Op profiles", "", profiles_summary_markdown(profiles), *sections]
    print("\n".join(profile_lines))
    # latency.json last: record-latency copies the Markdown files beside it, which must be this run's.
    io.write_json(args.out / "op_profiles.json", {f"{name}/{variant}/{count}": profile
                                                  for (name, variant, count), profile in profiles.items()})
    io.write_text(args.out / "op_profiles.md", "\n".join(profile_lines))
    io.write_text(args.out / "latency.md", "\n".join(markdown))
    io.write_json(args.out / "latency.json", measurement)
    print(f"written to {args.out}; load average at the end: {load_average()}")


def _slug(variant: str) -> str:
    """A file-name form of a variant or lever name."""
    return "".join(c for c in variant.replace(" ", "_") if c.isalnum() or c in "_-")


def _accuracy_table(accuracy: dict, count: int) -> str:
    lines = [f"Top-1 on {count} CIFAR-10 test images of the trained models (agreement with Keras)", "",
             "| model | Keras | float32 | float16 | int8 | int8 - float32 (points) |", "|---|---:|---:|---:|---:|---:|"]
    for name, result in accuracy.items():
        lines.append(f"| {name} | {result['keras']:.1%} | {result['float32']['top1']:.1%} | "
                     f"{result['float16']['top1']:.1%} | {result['int8']['top1']:.1%} "
                     f"(agree {result['int8']['agreement']:.1%}) | "
                     f"{100 * (result['int8']['top1'] - result['float32']['top1']):+.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
