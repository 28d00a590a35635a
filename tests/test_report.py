"""The comparison report: ours beside the study's figures, seed aggregation, the header that
says what each number is, JSON round trip, and a plot that never mixes CPU and phone ms."""
from __future__ import annotations

import copy
import json
import statistics

import keras
import numpy as np
import pytest
from keras import layers
from matplotlib.container import ErrorbarContainer
from PIL import Image

from lightcnn.benchmark import latency
from lightcnn.models import count_macs
from lightcnn.export import TFLiteModel, convert_variants, evaluate_tflite
from lightcnn.report import (ABOVE_STUDY, BELOW_STUDY, JSON_FILE, MD_FILE, PLOT_FILE, SINGLE_RUN, WITHIN_SPREAD,
                             accuracy_vs_latency_figure, build_comparison, build_comparison_data,
                             compare_with_study, summarise)
from lightcnn.study import (PUBLISHED_ACCURACY, PUBLISHED_PARAMS, PUBLISHED_PHONE_LATENCY_MS,
                            STUDY_MODELS)

SOURCE = "JPEG copy of CIFAR-10 (../shared/data/cifar10-jpeg.tar.gz)"
DEFAULT_RECIPE = {"recipe": "default", "epochs": 30, "optimizer": "adamw", "learning_rate": 0.002,
                  "schedule": "cosine", "warmup_epochs": 2.0, "weight_decay": 0.05, "batch_size": 128,
                  "label_smoothing": 0.1}


def _metrics(model: str, dataset: str, num_classes: int, rng: np.random.Generator, seed: int = 0) -> dict:
    """A plausible metrics dict, with random figures so nothing below can be hard-coded."""
    def timing() -> dict:
        median = float(rng.uniform(0.2, 5.0))
        return {"median_ms": median, "p90_ms": median * 1.1, "runs": 200, "xnnpack": True, "cpu": "Test CPU 9000",
                "litert_version": "9.8.7"}

    return {
        "model": model, "seed": seed, "dataset": dataset, "num_classes": num_classes,
        "test": {"top1": float(rng.uniform(0.5, 0.9)), "top5": float(rng.uniform(0.9, 1.0)), "loss": 0.7},
        "params": PUBLISHED_PARAMS.get(model, {}).get(num_classes, 123_456),
        "macs": 16_500_000,
        "train_seconds": float(rng.uniform(600, 20_000)), "epochs": 30,
        "tflite": {variant: {"size_bytes": int(rng.integers(10**6, 10**7)), "top1": float(rng.uniform(0.5, 0.9)),
                             "agreement": float(rng.uniform(0.95, 1.0))}
                   for variant in ("float32", "float16", "int8")},
        "latency": {"float32": {"1": timing(), "2": timing()}, "int8": {"1": timing(), "2": timing()}},
        "gradcam": f"models/{model}/seed{seed}/gradcam.png",
    }


def _context(models, seeds=(0,), dataset: str = "cifar10", **changes) -> dict:
    context = {"dataset": dataset, "source": SOURCE, "recipes": {model: dict(DEFAULT_RECIPE) for model in models},
               "model_modes": {model: "corrected" for model in models}, "seeds": list(seeds),
               "git_commit": "0123abcd4567", "cpu": "Test CPU 9000 (2 logical cores; avx2, fma)"}
    return {**context, **changes}


def _section(markdown: str, section_title: str) -> str:
    return markdown.split(f"## {section_title}\n", 1)[1].split("\n## ", 1)[0]


def _tables(markdown: str, section_title: str) -> list[list[list[str]]]:
    """Every table of a '## ' section: its data rows, as lists of cells."""
    blocks = [block.splitlines() for block in _section(markdown, section_title).split("\n\n")]
    return [[[cell.strip() for cell in line.strip("|").split("|")] for line in block[2:]]
            for block in blocks if block and block[0].startswith("| ")]


def _header(markdown: str, section_title: str) -> list[str]:
    return [cell.strip() for cell in _section(markdown, section_title).split("\n| ", 1)[1].split("\n")[0]
            .strip("|").split("|")]


def _by_column(markdown: str, section_title: str) -> dict[str, dict[str, str]]:
    """The main table as {model: {column header: cell}}."""
    header = ["model"] + _header(markdown, section_title)[1:]
    return {row[0].strip("`"): dict(zip(header, row)) for row in _tables(markdown, section_title)[0]}


@pytest.fixture
def cifar10_metrics() -> list[dict]:
    rng = np.random.default_rng(7)
    return [_metrics(name, "cifar10", 10, rng) for name in reversed(STUDY_MODELS)]


@pytest.fixture
def three_seeds() -> list[dict]:
    """our_small and our_large trained with seeds 0, 1 and 2."""
    rng = np.random.default_rng(11)
    return [_metrics(name, "cifar10", 10, rng, seed) for seed in (2, 0, 1) for name in ("our_small", "our_large")]


def test_markdown_has_one_row_per_model_with_ours_and_the_study_side_by_side(cifar10_metrics, tmp_path):
    build_comparison(cifar10_metrics, tmp_path, _context(STUDY_MODELS))
    markdown = (tmp_path / MD_FILE).read_text()

    rows = _tables(markdown, "CIFAR-10, 10 classes")[0]
    assert [row[0] for row in rows] == [f"`{name}`" for name in STUDY_MODELS]  # study order
    by_model = {metrics["model"]: metrics for metrics in cifar10_metrics}
    for name, cells in _by_column(markdown, "CIFAR-10, 10 classes").items():
        ours = by_model[name]
        assert cells["mode"] == "corrected"
        assert cells["top-1 ours"] == f"{100 * ours['test']['top1']:.2f}%"
        assert cells["top-1 study (150 ep, Adam 1e-3, official images)"] == \
            f"{100 * PUBLISHED_ACCURACY['cifar10'][name]:.2f}%"
        assert cells["params ours"] == f"{ours['params']:,}"
        assert cells["params study"] == f"{PUBLISHED_PARAMS[name][10]:,}"
        first = ours["latency"]["float32"]["1"]
        assert cells["latency ms ours (CPU), float32, 1 thr"] == f"{first['median_ms']:.2f} ({first['p90_ms']:.2f})"
        assert cells["latency ms ours (CPU), float32, 2 thr"].startswith(
            f"{ours['latency']['float32']['2']['median_ms']:.2f} ")
        assert cells["latency ms study (Snapdragon 865 phone)"] == f"{PUBLISHED_PHONE_LATENCY_MS['cifar10'][name]:.1f}"
        assert cells["MMACs"] == "16.5"
        # One seed: a labelled single-run difference, no win or loss.
        difference = 100 * (ours["test"]["top1"] - PUBLISHED_ACCURACY["cifar10"][name])
        assert cells["top-1 ours vs study"] == f"{difference:+.2f} pp, single run (seed spread unknown)"
        assert f"[`{name}`](models/{name}/seed0/gradcam.png)" in markdown
    assert "Every run" not in markdown  # the per-seed table only comes with several seeds


def test_seeds_are_aggregated_as_mean_sample_std_and_n(three_seeds, tmp_path):
    comparison = build_comparison(three_seeds, tmp_path, _context(["our_small", "our_large"], seeds=[0, 1, 2]))
    markdown = (tmp_path / MD_FILE).read_text()
    cells = _by_column(markdown, "CIFAR-10, 10 classes")

    for name in ("our_small", "our_large"):
        runs = sorted((m for m in three_seeds if m["model"] == name), key=lambda m: m["seed"])
        top1 = [m["test"]["top1"] for m in runs]
        assert cells[name]["top-1 ours"] == \
            f"{100 * np.mean(top1):.2f} ± {100 * np.std(top1, ddof=1):.2f}% (n=3)"
        medians = [m["latency"]["float32"]["2"]["median_ms"] for m in runs]
        assert cells[name]["latency ms ours (CPU), float32, 2 thr"] == \
            f"{np.mean(medians):.2f} ± {np.std(medians, ddof=1):.2f} (n=3)"
        int8 = [m["tflite"]["int8"]["top1"] for m in runs]
        assert cells[name]["int8 top-1 (agreement)"].startswith(
            f"{100 * np.mean(int8):.2f} ± {100 * np.std(int8, ddof=1):.2f}% (n=3)")
        top5 = [m["test"]["top5"] for m in runs]
        assert cells[name]["top-5 ours"] == f"{100 * np.mean(top5):.2f} ± {100 * np.std(top5, ddof=1):.2f}% (n=3)"

        # comparison.json keeps every per-seed value beside the aggregate.
        [row] = [row for row in comparison["datasets"][0]["rows"] if row["model"] == name]
        assert [run["seed"] for run in row["runs"]] == [0, 1, 2]
        assert [run["test"]["top1"] for run in row["runs"]] == top1
        assert row["ours"]["top1"]["values"] == top1 and row["ours"]["top1"]["n"] == 3
        assert row["ours"]["top1"]["std"] == pytest.approx(np.std(top1, ddof=1))
        assert row["ours"]["latency"]["int8"]["1"]["median_ms"]["values"] == \
            [m["latency"]["int8"]["1"]["median_ms"] for m in runs]

    # Every run is also shown on its own.
    per_seed = _tables(markdown, "CIFAR-10, 10 classes")[1]
    assert [row[0] for row in per_seed] == [f"`{name}`, seed {seed}" for name in ("our_large", "our_small")
                                            for seed in (0, 1, 2)]
    assert json.loads((tmp_path / JSON_FILE).read_text()) == comparison


def test_summarise_uses_the_sample_standard_deviation():
    assert summarise([0.5]) == {"n": 1, "mean": 0.5, "std": None, "values": [0.5]}
    summary = summarise([0.80, 0.82, 0.87])
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.83)
    assert summary["std"] == pytest.approx(statistics.stdev([0.80, 0.82, 0.87]))
    assert summary["std"] > np.std([0.80, 0.82, 0.87])  # n - 1, not n, in the denominator
    with pytest.raises(ValueError):
        summarise([])


@pytest.mark.parametrize("offsets, verdict", [
    ((-0.010, 0.000, 0.012), WITHIN_SPREAD),    # mean +0.07 pp, std 1.1 pp
    ((-0.020, 0.004, 0.010), WITHIN_SPREAD),    # mean -0.2 pp, std 1.6 pp
    ((0.030, 0.031, 0.032), ABOVE_STUDY),       # +3.1 pp, std 0.1 pp
    ((-0.030, -0.025, -0.028), BELOW_STUDY),
    ((0.030,), SINGLE_RUN),                     # one run: spread unknown, however large the difference
])
def test_a_difference_within_our_seed_spread_is_no_win_or_loss(offsets, verdict, tmp_path):
    study = PUBLISHED_ACCURACY["cifar10"]["our_small"]
    rng = np.random.default_rng(5)
    runs = []
    for seed, offset in enumerate(offsets):
        metrics = _metrics("our_small", "cifar10", 10, rng, seed)
        metrics["test"]["top1"] = study + offset
        runs.append(metrics)
    comparison = build_comparison(runs, tmp_path, _context(["our_small"], seeds=list(range(len(offsets)))))

    [row] = comparison["datasets"][0]["rows"]
    assert row["top1_vs_study"]["verdict"] == verdict
    assert row["top1_vs_study"]["difference"] == pytest.approx(np.mean(offsets))
    cell = _by_column((tmp_path / MD_FILE).read_text(), "CIFAR-10, 10 classes")["our_small"]["top-1 ours vs study"]
    assert cell.startswith(f"{100 * np.mean(offsets):+.2f} pp, ")
    assert verdict in cell
    if verdict != SINGLE_RUN:
        assert f"seed std {100 * np.std(offsets, ddof=1):.2f} pp, n={len(offsets)}" in cell


def test_compare_with_study_has_no_verdict_without_a_published_figure():
    assert compare_with_study(summarise([0.8, 0.9]), None) is None
    assert compare_with_study(None, 0.85) is None


def test_header_says_what_each_number_is(three_seeds, tmp_path):
    context = _context(["our_small", "our_large"], seeds=[0, 1, 2], git_dirty=True, litert_version="2.0.3")
    context["model_modes"]["our_large"] = "faithful"
    context["recipes"]["our_large"] = {**DEFAULT_RECIPE, "recipe": "study", "epochs": 150, "optimizer": "adam",
                                       "learning_rate": 0.001, "schedule": "constant", "warmup_epochs": 0.0,
                                       "weight_decay": 0.0}
    build_comparison(three_seeds, tmp_path, context)
    markdown = (tmp_path / MD_FILE).read_text()
    header = _section(markdown, "CIFAR-10, 10 classes").split("\n| ", 1)[0]

    assert f"- **Data (ours)**: CIFAR-10, 10 classes, from {SOURCE}." in header
    assert ("  - `our_small`: `default`: 30 epochs, adamw, lr 0.002, cosine schedule (2 warm-up epochs), "
            "weight decay 0.05, batch 128") in header
    assert "  - `our_large`: `study`: 150 epochs, adam, lr 0.001, constant schedule, batch 128" in header
    assert "  - `our_large`: faithful" in header and "  - `our_small`: corrected" in header
    assert "- **Seeds**: 0, 1, 2. Each of our cells is the mean ± sample standard deviation" in header
    assert "LiteRT 2.0.3 on **Test CPU 9000 (2 logical cores; avx2, fma)**" in header
    assert "- **Commit**: `0123abcd4567` with uncommitted changes." in header
    study_line = next(line for line in header.splitlines() if line.startswith("- **Study columns**"))
    for protocol in ("150 epochs", "Adam at a constant lr 1e-3", "official images", "Snapdragon 865 phone"):
        assert protocol in study_line
    # The study's columns carry its protocol in their own labels too.
    assert "top-1 study (150 ep, Adam 1e-3, official images)" in _header(markdown, "CIFAR-10, 10 classes")


def test_header_with_one_seed_says_the_spread_is_unknown_and_names_missing_runs(tmp_path):
    rng = np.random.default_rng(2)
    runs = [_metrics("our_small", "cifar10", 10, rng, 0), _metrics("our_large", "cifar10", 10, rng, 0),
            _metrics("our_large", "cifar10", 10, rng, 1)]
    build_comparison(runs[:1], tmp_path, _context(["our_small"], seeds=[0]))
    header = _section((tmp_path / MD_FILE).read_text(), "CIFAR-10, 10 classes").split("\n| ", 1)[0]
    assert "- **Model mode**: corrected (every model)." in header
    assert "one run per model" in header and "seed spread is unknown" in header
    assert "LiteRT 9.8.7" in header  # taken from the latency results when the context has none

    build_comparison(runs, tmp_path, _context(["our_small", "our_large"], seeds=[0, 1]))
    header = _section((tmp_path / MD_FILE).read_text(), "CIFAR-10, 10 classes").split("\n| ", 1)[0]
    assert "`our_small` has runs for seed(s) 0 only" in header


def test_the_plot_never_puts_cpu_and_phone_milliseconds_on_one_axis(three_seeds):
    comparison = build_comparison_data(three_seeds, _context(["our_small", "our_large"], seeds=[0, 1, 2]))
    figure = accuracy_vs_latency_figure(comparison)
    axes = figure.get_axes()
    assert sorted(ax.get_gid() for ax in axes) == ["ours-cpu", "study-phone"]
    for ax in axes:
        xlabel = ax.get_xlabel()
        assert ("CPU" in xlabel) != ("phone" in xlabel), xlabel
        assert "ms" in xlabel and "accuracy" in ax.get_ylabel()

    [run] = comparison["datasets"]
    [ours_ax] = [ax for ax in axes if ax.get_gid() == "ours-cpu"]
    [study_ax] = [ax for ax in axes if ax.get_gid() == "study-phone"]
    # Ours: the mean CPU latency at 1 thread, with error bars over the three seeds.
    bars = [c for c in ours_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and all(c.has_xerr and c.has_yerr for c in bars)
    ours_x = sorted(float(c.lines[0].get_xdata()[0]) for c in bars)
    assert ours_x == pytest.approx(sorted(row["ours"]["latency"]["float32"]["1"]["median_ms"]["mean"]
                                          for row in run["rows"]))
    # The study: its phone milliseconds only, and none of ours.
    study_x = sorted(float(x) for collection in study_ax.collections for x, _ in collection.get_offsets())
    published_phone_ms = PUBLISHED_PHONE_LATENCY_MS["cifar10"]
    assert study_x == pytest.approx(sorted(published_phone_ms[m] for m in ("our_small", "our_large")))
    assert not [c for c in study_ax.containers if isinstance(c, ErrorbarContainer)]


def test_one_seed_plots_without_error_bars(cifar10_metrics):
    figure = accuracy_vs_latency_figure(build_comparison_data(cifar10_metrics, _context(STUDY_MODELS)))
    [ours_ax] = [ax for ax in figure.get_axes() if ax.get_gid() == "ours-cpu"]
    bars = [c for c in ours_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4 and not any(c.has_xerr or c.has_yerr for c in bars)


def test_json_round_trips_and_plot_is_a_png(cifar10_metrics, tmp_path):
    context = _context(STUDY_MODELS)
    comparison = build_comparison(cifar10_metrics, tmp_path, context)

    assert json.loads((tmp_path / JSON_FILE).read_text()) == comparison
    assert build_comparison_data(cifar10_metrics, context) == comparison
    assert comparison["context"] == context
    [run] = comparison["datasets"]
    assert run["study_key"] == "cifar10" and run["threads"] == [1, 2]
    published = [PUBLISHED_ACCURACY["cifar10"][name] for name in STUDY_MODELS]
    assert [row["study"]["top1"] for row in run["rows"]] == published
    with Image.open(tmp_path / PLOT_FILE) as plot:
        plot.verify()
        assert plot.format == "PNG" and plot.size[0] > 200 and plot.size[1] > 200


def test_a_dataset_run_without_study_figures_shows_them_as_missing(tmp_path):
    rng = np.random.default_rng(3)
    metrics = _metrics("our_small", "birds", 20, rng)
    del metrics["latency"]
    build_comparison([metrics], tmp_path, _context(["our_small"], dataset="birds", source="Kaggle birds, first 20"))
    markdown = (tmp_path / MD_FILE).read_text()
    cells = _by_column(markdown, "Birds, 20 classes")["our_small"]
    assert cells["top-1 study (150 ep, Adam 1e-3, official images)"] == "-"
    assert cells["top-1 ours vs study"] == "-" and cells["params study"] == "-"
    assert "the study published no figures for this dataset run" in markdown

    build_comparison([_metrics("our_small", "cifar100", 100, rng)], tmp_path,
                     _context(["our_small"], dataset="cifar100"))
    cells = _by_column((tmp_path / MD_FILE).read_text(), "CIFAR-100, 100 classes")["our_small"]
    assert cells["top-1 study (150 ep, Adam 1e-3, official images)"] == \
        f"{100 * PUBLISHED_ACCURACY['cifar100']['our_small']:.2f}%"
    assert cells["params study"] == f"{PUBLISHED_PARAMS['our_small'][100]:,}"


@pytest.mark.parametrize("broken, message", [
    (lambda m: m["test"].pop("top1"), "test.top1"),
    (lambda m: m.pop("dataset"), "dataset"),
    (lambda m: m.pop("seed"), "'seed' must be an int"),
    (lambda m: m.update(seed="0"), "'seed' must be an int"),
    (lambda m: m["latency"].update({"fp8": {}}), "fp8"),
    (lambda m: m["latency"]["float32"].update({"one": {"median_ms": 1.0, "p90_ms": 1.0}}), "'one'"),
])
def test_invalid_metrics_are_rejected_with_the_problem_named(cifar10_metrics, broken, message):
    broken(cifar10_metrics[0])
    with pytest.raises(ValueError, match=message):
        build_comparison_data(cifar10_metrics, _context(STUDY_MODELS))


@pytest.mark.parametrize("broken, message", [
    (lambda c: c.pop("source"), "'source' must be a non-empty string"),
    (lambda c: c.update(git_commit=""), "'git_commit' must be a non-empty string"),
    (lambda c: c.update(recipe=c.pop("recipes")), "unknown key.*'recipe'"),
    (lambda c: c["recipes"].pop("our_small"), "'recipes' has no entry for model.*our_small"),
    (lambda c: c["recipes"]["our_small"].pop("epochs"), r"recipes\['our_small'\]\['epochs'\]"),
    (lambda c: c["recipes"]["our_small"].update(learning_rate=-1), "learning_rate"),
    (lambda c: c["model_modes"].update(our_small="fixed"), r"model_modes\[.our_small.\] must be one of"),
    (lambda c: c.update(seeds=[]), "non-empty list of ints"),
    (lambda c: c.update(seeds=[0, 0]), "seed twice"),
    (lambda c: c.update(seeds=[1]), "seed 0, which 'seeds'"),
    (lambda c: c.update(dataset="cifar100"), "one report per dataset"),
    (lambda c: c.update(git_dirty="no"), "git_dirty"),
])
def test_invalid_context_is_rejected_with_the_problem_named(cifar10_metrics, broken, message):
    context = copy.deepcopy(_context(STUDY_MODELS))
    broken(context)
    with pytest.raises(ValueError, match=message) as error:
        build_comparison_data(cifar10_metrics, context)
    assert "Expected format" in str(error.value)


def test_a_model_seed_given_twice_is_rejected(cifar10_metrics):
    with pytest.raises(ValueError, match="seed 0 appears twice"):
        build_comparison_data(cifar10_metrics + cifar10_metrics[:1], _context(STUDY_MODELS))


def test_seeds_of_one_model_must_agree_on_its_parameter_count(three_seeds):
    three_seeds[0]["params"] += 1
    with pytest.raises(ValueError, match="disagree on 'params'"):
        build_comparison_data(three_seeds, _context(["our_small", "our_large"], seeds=[0, 1, 2]))


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
        "model": "our_small", "seed": 0, "dataset": "cifar10", "num_classes": 3,
        "test": {"top1": float(np.mean(reference.argmax(1) == labels))},
        "params": model.count_params(), "macs": count_macs(model),
        "tflite": {variant: {"size_bytes": len(data),
                             **evaluate_tflite(TFLiteModel(data), images, labels, reference)}
                   for variant, data in variants.items()},
        "latency": {variant: {str(threads): latency(data, threads, warmup=1, runs=5) for threads in (1, 2)}
                    for variant, data in variants.items()},
    }
    context = _context(["our_small"])
    del context["cpu"]
    comparison = build_comparison([metrics], tmp_path, context)

    markdown = (tmp_path / MD_FILE).read_text()
    assert comparison["cpu"] == metrics["latency"]["float32"]["1"]["cpu"]
    assert comparison["litert_version"] == metrics["latency"]["float32"]["1"]["litert_version"]
    cells = _by_column(markdown, "CIFAR-10, 3 classes")["our_small"]
    assert cells["top-1 study (150 ep, Adam 1e-3, official images)"] == "-"  # no study figures for 3 classes
    assert cells["params ours"] == f"{model.count_params():,}"
    assert cells["TFLite MB f32 / f16 / int8"] == \
        f"{len(variants['float32']) / 1e6:.2f} / - / {len(variants['int8']) / 1e6:.2f}"


def test_the_report_knows_the_model_modes_the_builder_has():
    from lightcnn import report, results
    from lightcnn.models.options import MODEL_MODES

    assert set(report.MODES) == set(results.MODES) == set(MODEL_MODES)


def test_a_folder_run_names_its_image_size_and_the_top5_of_few_classes(tmp_path):
    """A folder dataset trains at its own size: the header says which (two runs of one dataset at
    28x28 and at 32x32 used to read alike), and with 5 classes or fewer top-5 is 100% by
    construction, which it says too. One epoch is "1 epoch"."""
    metrics = _metrics("our_small", "folder", 3, np.random.default_rng(5))
    context = _context(["our_small"], dataset="folder", source="PNG class folders (data/gray28)",
                       image_size="28x28 (all 114 images are 28x28)")
    context["recipes"]["our_small"]["epochs"] = 1
    build_comparison([metrics], tmp_path, context)
    header = _section((tmp_path / MD_FILE).read_text(), "folder, 3 classes").split("\n| ", 1)[0]
    assert ("- **Data (ours)**: folder, 3 classes, images at 28x28 (all 114 images are 28x28), from PNG class "
            "folders (data/gray28). With 3 classes every prediction is among the top 5: top-5 is 100% by "
            "construction.") in header, header
    assert ": 1 epoch, adamw" in header and "1 epochs" not in header, header
    with pytest.raises(ValueError, match="'image_size' must be a string or absent"):
        build_comparison_data([metrics], {**context, "image_size": [28, 28]})
