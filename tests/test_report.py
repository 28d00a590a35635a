"""The comparison report: ours beside the study's figures, JSON round trip, plot."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

from lightcnn.benchmark import count_macs, latency
from lightcnn.export import TFLiteModel, convert_variants, evaluate_tflite
from lightcnn.report import JSON_FILE, MD_FILE, PLOT_FILE, build_comparison, build_comparison_data
from lightcnn.study import (PUBLISHED_ACCURACY, PUBLISHED_PARAMS, PUBLISHED_PHONE_LATENCY_MS,
                            STUDY_MODELS)


def _metrics(model: str, dataset: str, num_classes: int, rng: np.random.Generator) -> dict:
    """A plausible metrics dict, with random figures so nothing below can be hard-coded."""
    def timing() -> dict:
        median = float(rng.uniform(0.2, 5.0))
        return {"median_ms": median, "p90_ms": median * 1.1, "runs": 200, "xnnpack": True, "cpu": "Test CPU 9000"}

    return {
        "model": model, "dataset": dataset, "num_classes": num_classes,
        "test": {"top1": float(rng.uniform(0.5, 0.9)), "top5": float(rng.uniform(0.9, 1.0)), "loss": 0.7},
        "params": int(rng.integers(500_000, 5_000_000)),
        "macs": int(rng.integers(10**7, 10**8)),
        "train_seconds": float(rng.uniform(600, 20_000)), "epochs": 150,
        "tflite": {variant: {"size_bytes": int(rng.integers(10**6, 10**7)), "top1": float(rng.uniform(0.5, 0.9)),
                             "agreement": float(rng.uniform(0.95, 1.0))}
                   for variant in ("float32", "float16", "int8")},
        "latency": {"float32": {"1": timing(), "2": timing()}, "int8": {"1": timing(), "2": timing()}},
        "gradcam": f"models/{model}/gradcam.png",
    }


def _table_rows(markdown: str, section_title: str) -> list[list[str]]:
    """The data rows of the first table after a '## ' heading, as lists of cells."""
    section = markdown.split(f"## {section_title}", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n\n")[2].splitlines()  # after the heading and the study note
    assert all(line.startswith("|") for line in table)
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


@pytest.fixture
def cifar10_metrics() -> list[dict]:
    rng = np.random.default_rng(7)
    return [_metrics(name, "cifar10", 10, rng) for name in reversed(STUDY_MODELS)]


def test_markdown_has_one_row_per_model_with_ours_and_the_study_side_by_side(cifar10_metrics, tmp_path):
    build_comparison(cifar10_metrics, tmp_path)
    markdown = (tmp_path / MD_FILE).read_text()

    rows = _table_rows(markdown, "CIFAR-10, 10 classes")
    assert [row[0] for row in rows] == [f"`{name}`" for name in STUDY_MODELS]  # study order
    by_model = {metrics["model"]: metrics for metrics in cifar10_metrics}
    for row in rows:
        name = row[0].strip("`")
        ours = by_model[name]
        top1_ours, top1_study, params_ours, params_study, latency_1, latency_2, phone = row[1:8]
        assert top1_ours == f"{100 * ours['test']['top1']:.2f}%"
        assert top1_study == f"{100 * PUBLISHED_ACCURACY['cifar10'][name]:.2f}%"
        assert params_ours == f"{ours['params']:,}"
        assert params_study == f"{PUBLISHED_PARAMS[name][10]:,}"
        first = ours["latency"]["float32"]["1"]
        assert latency_1 == f"{first['median_ms']:.2f} ({first['p90_ms']:.2f})"
        assert latency_2.startswith(f"{ours['latency']['float32']['2']['median_ms']:.2f} ")
        assert phone == f"{PUBLISHED_PHONE_LATENCY_MS['cifar10'][name]:.1f}"
        assert f"{ours['macs'] / 1e6:.1f}" in row
    for name in STUDY_MODELS:
        assert f"[`{name}`](models/{name}/gradcam.png)" in markdown
    # The reader is told which hardware each latency comes from.
    assert "Test CPU 9000" in markdown and "Snapdragon 865" in markdown


def test_dataset_runs_get_their_own_table_and_unpublished_figures_show_as_missing(tmp_path):
    rng = np.random.default_rng(3)
    metrics = [_metrics("our_small", "cifar100", 100, rng), _metrics("our_small", "birds", 20, rng)]
    del metrics[1]["latency"]
    build_comparison(metrics, tmp_path)
    markdown = (tmp_path / MD_FILE).read_text()

    cifar100 = _table_rows(markdown, "CIFAR-100, 100 classes")
    assert len(cifar100) == 1
    assert cifar100[0][2] == f"{100 * PUBLISHED_ACCURACY['cifar100']['our_small']:.2f}%"
    assert cifar100[0][4] == f"{PUBLISHED_PARAMS['our_small'][100]:,}"
    birds = _table_rows(markdown, "Birds, 20 classes")
    assert len(birds) == 1
    assert birds[0][2] == "-" and birds[0][4] == "-"  # the study has no 20-class birds run


def test_json_round_trips_and_plot_is_a_png(cifar10_metrics, tmp_path):
    comparison = build_comparison(cifar10_metrics, tmp_path)

    assert json.loads((tmp_path / JSON_FILE).read_text()) == comparison
    assert build_comparison_data(cifar10_metrics) == comparison
    [run] = comparison["datasets"]
    assert run["study_key"] == "cifar10" and run["threads"] == [1, 2]
    published = [PUBLISHED_ACCURACY["cifar10"][name] for name in STUDY_MODELS]
    assert [row["study"]["top1"] for row in run["rows"]] == published
    with Image.open(tmp_path / PLOT_FILE) as plot:
        plot.verify()
        assert plot.format == "PNG" and plot.size[0] > 200 and plot.size[1] > 200


@pytest.mark.parametrize("broken, message", [
    (lambda m: m["test"].pop("top1"), "test.top1"),
    (lambda m: m.pop("dataset"), "dataset"),
    (lambda m: m["latency"].update({"fp8": {}}), "fp8"),
    (lambda m: m["latency"]["float32"].update({"one": {"median_ms": 1.0, "p90_ms": 1.0}}), "'one'"),
])
def test_invalid_metrics_are_rejected_with_the_problem_named(cifar10_metrics, broken, message):
    broken(cifar10_metrics[0])
    with pytest.raises(ValueError, match=message):
        build_comparison_data(cifar10_metrics)


def test_a_model_given_twice_for_one_dataset_is_rejected(cifar10_metrics):
    with pytest.raises(ValueError, match="twice"):
        build_comparison_data(cifar10_metrics + cifar10_metrics[:1])


def test_report_from_real_export_and_benchmark_results(tmp_path):
    """The metrics produced by export, evaluate_tflite, latency and count_macs feed the report."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Activation("softmax")(layers.Dense(3, name="logits")(x)))
    rng = np.random.default_rng(0)
    images, labels = rng.random((12, 8, 8, 3), dtype=np.float32), rng.integers(0, 3, 12)
    reference = model.predict(images, verbose=0)
    variants = convert_variants(model, ("float32", "int8"), images)

    metrics = {
        "model": "our_small", "dataset": "cifar10", "num_classes": 3,
        "test": {"top1": float(np.mean(reference.argmax(1) == labels))},
        "params": model.count_params(), "macs": count_macs(model),
        "tflite": {variant: {"size_bytes": len(data),
                             **evaluate_tflite(TFLiteModel(data), images, labels, reference)}
                   for variant, data in variants.items()},
        "latency": {variant: {str(threads): latency(data, threads, warmup=1, runs=5) for threads in (1, 2)}
                    for variant, data in variants.items()},
    }
    comparison = build_comparison([metrics], tmp_path)

    markdown = (tmp_path / MD_FILE).read_text()
    assert comparison["cpu"] == metrics["latency"]["float32"]["1"]["cpu"]
    [row] = _table_rows(markdown, "CIFAR-10, 3 classes")
    assert row[0] == "`our_small`" and row[2] == "-"  # no study figures for a 3-class CIFAR-10 run
    assert row[3] == f"{model.count_params():,}"
    assert f"{len(variants['float32']) / 1e6:.2f} / - / {len(variants['int8']) / 1e6:.2f}" in row
