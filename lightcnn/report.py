"""The comparison report: our models beside the study's published figures.

Input: one metrics dict per trained model (MODEL_METRICS_FORMAT below); output:
comparison.md (one table per dataset run, ours and the study's figures side by side),
comparison.json (the same data) and accuracy_vs_latency.png.
"""
from __future__ import annotations

import os
from pathlib import Path

from lightcnn import io
from lightcnn.export import VARIANTS
from lightcnn.study import (PUBLISHED_ACCURACY, PUBLISHED_PARAMS, PUBLISHED_PHONE_LATENCY_MS,
                            STUDY_MODELS, study_dataset_key)

MODEL_METRICS_FORMAT = """\
One dict per trained model (JSON-serialisable); only model, dataset, num_classes and
test.top1 are required, anything else missing shows as "-":
{
  "model": "our_small",                      # a lightcnn.models.MODEL_NAMES name
  "dataset": "cifar10",                      # cifar10 | cifar100 | birds
  "num_classes": 10,
  "test": {"top1": 0.85, "top5": 0.99, "loss": 0.61},   # Keras model on the test split
  "params": 923137,                          # model.count_params()
  "macs": 11830000,                          # lightcnn.benchmark.count_macs(model)
  "train_seconds": 5400.0, "epochs": 150,
  "tflite": {                                # per variant: lightcnn.export.evaluate_tflite(...)
    "float32": {"size_bytes": 3600000, "top1": 0.85, "agreement": 1.0, "max_abs_diff": 1e-6},
    "float16": {...}, "int8": {...}},
  "latency": {                               # per variant, per thread count (as a string):
    "float32": {"1": <lightcnn.benchmark.latency(...) result>, "2": {...}},
    "int8": {...}},
  "cpu": "AMD EPYC 7B13",                    # optional; else taken from the latency results
  "gradcam": "models/our_small/gradcam.png"  # optional: Grad-CAM grid, relative to the report
}"""

MD_FILE, JSON_FILE, PLOT_FILE = "comparison.md", "comparison.json", "accuracy_vs_latency.png"
STUDY_DEVICE = "Qualcomm Snapdragon 865 phone (float32 TFLite, measuring method unpublished)"
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "birds": "Birds"}  # also the table order
# The number of classes of each of the study's dataset runs.
STUDY_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "bird100": 100, "bird325": 325}
MISSING = "-"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid model metrics: {message}\nExpected format:\n{MODEL_METRICS_FORMAT}")


def _normalise(metrics: dict) -> dict:
    """Check one model's metrics dict and return a copy with thread keys as strings."""
    _require(isinstance(metrics, dict), f"expected a dict, got {type(metrics).__name__}")
    for key, kind in (("model", str), ("dataset", str), ("num_classes", int), ("test", dict)):
        _require(isinstance(metrics.get(key), kind), f"{key!r} must be a {kind.__name__} "
                 f"(model {metrics.get('model')!r})")
    _require(isinstance(metrics["test"].get("top1"), (int, float)),
             f"test.top1 is missing for model {metrics['model']!r}")
    for variant in metrics.get("tflite", {}):
        _require(variant in VARIANTS, f"unknown TFLite variant {variant!r} in tflite (one of {VARIANTS})")
    latency = {}
    for variant, by_threads in metrics.get("latency", {}).items():
        _require(variant in VARIANTS, f"unknown TFLite variant {variant!r} in latency (one of {VARIANTS})")
        for threads, result in by_threads.items():
            _require(str(threads).isdigit() and "median_ms" in result and "p90_ms" in result,
                     f"latency.{variant} must map thread counts to latency() results with median_ms "
                     f"and p90_ms; got key {threads!r}")
        latency[variant] = {str(threads): dict(result) for threads, result in by_threads.items()}
    return {**metrics, "latency": latency}



def _study_figures(model: str, study_key: str | None, num_classes: int) -> dict:
    """The study's published figures for this model and dataset (None where it has none)."""
    if study_key is None or model not in STUDY_MODELS:
        return {"top1": None, "params": None, "phone_latency_ms": None}
    return {
        "top1": PUBLISHED_ACCURACY.get(study_key, {}).get(model),
        "params": PUBLISHED_PARAMS[model].get(num_classes),
        "phone_latency_ms": PUBLISHED_PHONE_LATENCY_MS.get(study_key, {}).get(model),
    }


def _cpu_names(metrics: dict) -> set[str]:
    """The CPU the model was timed on: its "cpu" entry, else what its latency results say."""
    if metrics.get("cpu"):
        return {metrics["cpu"]}
    return {result["cpu"] for by_threads in metrics["latency"].values() for result in by_threads.values()
            if result.get("cpu")}


def _model_order(name: str) -> tuple[int, str]:
    return (STUDY_MODELS.index(name) if name in STUDY_MODELS else len(STUDY_MODELS), name)


def _run_order(run_key: tuple[str, int]) -> tuple[int, str, int]:
    dataset, num_classes = run_key
    known = list(DATASET_TITLES)
    return (known.index(dataset) if dataset in known else len(known), dataset, num_classes)


def build_comparison_data(model_metrics: list[dict]) -> dict:
    """Group model metrics by dataset run and put the study's figures beside them.

    Returns {"cpu", "study_device", "datasets": [{"dataset", "num_classes", "study_key",
    "threads", "rows": [{"model", "ours": <metrics>, "study": {"top1", "params",
    "phone_latency_ms"}}]}]}; this is what comparison.json holds.
    """
    if not model_metrics:
        raise ValueError("no model metrics given: train and evaluate at least one model first")
    runs: dict[tuple[str, int], list[dict]] = {}
    for metrics in map(_normalise, model_metrics):
        rows = runs.setdefault((metrics["dataset"], metrics["num_classes"]), [])
        if any(row["model"] == metrics["model"] for row in rows):
            raise ValueError(f"model {metrics['model']!r} appears twice for dataset {metrics['dataset']!r} "
                             f"({metrics['num_classes']} classes); pass one metrics dict per model")
        rows.append(metrics)

    datasets = []
    for dataset, num_classes in sorted(runs, key=_run_order):
        rows = runs[(dataset, num_classes)]
        study_key = study_dataset_key(dataset, num_classes)
        if STUDY_NUM_CLASSES.get(study_key) != num_classes:  # e.g. a 3-class CIFAR-10 subset
            study_key = None
        threads = sorted({int(t) for row in rows for by_threads in row["latency"].values() for t in by_threads})
        datasets.append({
            "dataset": dataset,
            "num_classes": num_classes,
            "study_key": study_key,
            "threads": threads,
            "rows": [{"model": row["model"], "ours": row,
                      "study": _study_figures(row["model"], study_key, num_classes)}
                     for row in sorted(rows, key=lambda row: _model_order(row["model"]))],
        })
    cpus = sorted({cpu for run in datasets for row in run["rows"] for cpu in _cpu_names(row["ours"])})
    return {"cpu": ", ".join(cpus) or None, "study_device": STUDY_DEVICE, "datasets": datasets}


# ---------------------------------------------------------------- markdown


def _percent(value) -> str:
    return MISSING if value is None else f"{100 * value:.2f}%"


def _count(value) -> str:
    return MISSING if value is None else f"{int(value):,}"


def _ms(result: dict | None) -> str:
    return MISSING if not result else f"{result['median_ms']:.2f} ({result['p90_ms']:.2f})"


def _duration(seconds) -> str:
    if seconds is None:
        return MISSING
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _tflite_sizes(tflite: dict) -> str:
    sizes = [tflite.get(variant, {}).get("size_bytes") for variant in VARIANTS]
    return " / ".join(MISSING if size is None else f"{size / 1e6:.2f}" for size in sizes)


def _int8_accuracy(tflite: dict) -> str:
    int8 = tflite.get("int8")
    if not int8 or int8.get("top1") is None:
        return MISSING
    agreement = int8.get("agreement")
    return _percent(int8["top1"]) + ("" if agreement is None else f" ({_percent(agreement)})")


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(cells) + " |" for cells in [header, align, *rows]]


def _dataset_section(run: dict) -> list[str]:
    title = DATASET_TITLES.get(run["dataset"], run["dataset"])
    study_note = (f"study figures: its {run['study_key']!r} results" if run["study_key"]
                  else "the study published no figures for this dataset run")
    lines = [f"## {title}, {run['num_classes']} classes", "", f"({study_note}.)", ""]

    thread_columns = [f"latency ms ours, float32, {t} thr" for t in run["threads"]]
    header = ["model", "top-1 ours", "top-1 study", "params ours", "params study", *thread_columns,
              "latency ms study (phone)", "top-5 ours", "int8 top-1 (agreement)",
              "TFLite MB f32 / f16 / int8", "MMACs", "train time (epochs)"]
    rows = []
    for row in run["rows"]:
        ours, study = row["ours"], row["study"]
        float32_latency = ours["latency"].get("float32", {})
        epochs = ours.get("epochs")
        rows.append([
            f"`{row['model']}`",
            _percent(ours["test"]["top1"]), _percent(study["top1"]),
            _count(ours.get("params")), _count(study["params"]),
            *[_ms(float32_latency.get(str(t))) for t in run["threads"]],
            MISSING if study["phone_latency_ms"] is None else f"{study['phone_latency_ms']:.1f}",
            _percent(ours["test"].get("top5")),
            _int8_accuracy(ours.get("tflite", {})),
            _tflite_sizes(ours.get("tflite", {})),
            MISSING if ours.get("macs") is None else f"{ours['macs'] / 1e6:.1f}",
            _duration(ours.get("train_seconds")) + ("" if epochs is None else f" ({epochs})"),
        ])
    lines += _table(header, rows)
    gradcam_links = [f"[`{row['model']}`]({row['ours']['gradcam']})"
                     for row in run["rows"] if row["ours"].get("gradcam")]
    if gradcam_links:
        lines += ["", "Grad-CAM heat maps (last 1x1 conv row): " + ", ".join(gradcam_links) + "."]

    detail_rows = [[f"`{row['model']}`", variant, threads, f"{result['median_ms']:.2f}",
                    f"{result['p90_ms']:.2f}", str(result.get("runs", MISSING)),
                    {True: "on", False: "not applied"}.get(result.get("xnnpack"), MISSING)]
                   for row in run["rows"]
                   for variant, by_threads in row["ours"]["latency"].items()
                   for threads, result in sorted(by_threads.items(), key=lambda item: int(item[0]))]
    if detail_rows:
        lines += ["", "Latency of every TFLite variant (ours, LiteRT on this CPU, batch 1):", ""]
        lines += _table(["model", "variant", "threads", "median ms", "p90 ms", "runs", "XNNPACK"],
                        detail_rows, numeric_from=2)
    return lines + [""]


def render_markdown(comparison: dict) -> str:
    """comparison.md's text from build_comparison_data()'s result."""
    cpu = comparison["cpu"] or "an unrecorded CPU"
    lines = [
        "# Model comparison: ours beside the study's published figures",
        "",
        f"- **Latency, ours**: LiteRT (TFLite) on **{cpu}**, XNNPACK delegate, one image per "
        "inference, median of the timed runs with the 90th percentile in brackets, for each "
        "thread count shown (`thr`).",
        f"- **Latency, study**: {comparison['study_device']}. Different hardware and method: "
        "compare the ranking of the models, not the milliseconds.",
        "- top-1 and top-5 are the Keras models' test accuracy; *int8 top-1* is the full-integer "
        "TFLite model's, with its agreement with the Keras predictions in brackets.",
        "- params: `model.count_params()` (BatchNorm statistics included), as the study counts; "
        "MMACs: millions of multiply-accumulates per image (convolutions and dense layers).",
        "",
    ]
    for run in comparison["datasets"]:
        lines += _dataset_section(run)
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def _headline_latency(ours: dict, threads: int | None) -> float | None:
    result = ours["latency"].get("float32", {}).get(str(threads))
    return None if result is None else result["median_ms"]


def plot_accuracy_vs_latency(comparison: dict, path: str | os.PathLike) -> Path:
    """Write a PNG: top-1 accuracy against float32 latency, one panel per dataset run; ours
    at the fewest threads measured, and the study's phone figures where published."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    runs = comparison["datasets"]
    figure = Figure(figsize=(5.2 * len(runs), 4.2))
    axes = figure.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        threads = run["threads"][0] if run["threads"] else None
        ours = [(row["model"], _headline_latency(row["ours"], threads), row["ours"]["test"]["top1"])
                for row in run["rows"]]
        study = [(row["model"], row["study"]["phone_latency_ms"], row["study"]["top1"]) for row in run["rows"]]
        series = [
            (ours, {"marker": "o", "color": "C0", "label": f"ours: LiteRT, {comparison['cpu'] or 'CPU'}, "
                                                           f"{threads} thr"}),
            (study, {"marker": "s", "facecolors": "none", "edgecolors": "C1",
                     "label": "study: Snapdragon 865 phone"}),
        ]
        for points, style in series:
            points = [(name, x, 100 * y) for name, x, y in points if x is not None and y is not None]
            if not points:
                continue
            ax.scatter([x for _, x, _ in points], [y for _, _, y in points], **style)
            for name, x, y in points:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(f"{DATASET_TITLES.get(run['dataset'], run['dataset'])}, {run['num_classes']} classes")
        ax.set_xlabel("float32 latency per image, ms (median)")
        ax.set_ylabel("top-1 accuracy, %")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    figure.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return Path(path)


def build_comparison(model_metrics: list[dict], out_dir: str | os.PathLike) -> dict:
    """Write comparison.md, comparison.json and accuracy_vs_latency.png into `out_dir`
    (atomically); returns the comparison data (what comparison.json holds)."""
    comparison = build_comparison_data(model_metrics)
    out_dir = Path(out_dir)
    io.write_json(out_dir / JSON_FILE, comparison)
    io.write_text(out_dir / MD_FILE, render_markdown(comparison))
    plot_accuracy_vs_latency(comparison, out_dir / PLOT_FILE)
    return comparison
