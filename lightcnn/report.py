"""The comparison report: our models beside the study's published figures.

Input: one metrics dict per trained (model, seed) run (MODEL_METRICS_FORMAT below) and one
context dict saying how they were made (CONTEXT_FORMAT); output: comparison.md (one table
per dataset run, headed by what each number is: data and its source, recipe, model mode,
seeds, CPU, LiteRT version, commit, and the study's protocol), comparison.json (every
per-seed value plus the aggregates) and accuracy_vs_latency.png.

Several seeds of a model are aggregated cell by cell: mean ± sample standard deviation with
the number of runs n (n > 1), the plain value (n == 1). A study-versus-ours difference in
top-1 no larger than our own seed spread (that sample standard deviation) is reported as
"within seed spread", not as a win or a loss; with one seed the spread is unknown, so the
difference is shown as a single-run difference, with no verdict.
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any, Callable

from lightcnn import io
from lightcnn.export import VARIANTS
from lightcnn.study import (PUBLISHED_ACCURACY, PUBLISHED_PARAMS, PUBLISHED_PHONE_LATENCY_MS,
                            STUDY_MODELS, STUDY_PROTOCOL, STUDY_RECIPE_SUMMARY, study_dataset_key)

MODEL_METRICS_FORMAT = """\
One dict per trained (model, seed) run (JSON-serialisable); only model, seed, dataset,
num_classes and test.top1 are required, anything else missing shows as "-":
{
  "model": "our_small",                      # a lightcnn.models.MODEL_NAMES name
  "seed": 0,                                 # the training seed of this run (one of context["seeds"])
  "dataset": "cifar10",                      # cifar10 | cifar100 | birds | folder (= context["dataset"])
  "num_classes": 10,
  "test": {"top1": 0.85, "top5": 0.99, "loss": 0.61},   # Keras model on the test split
  "params": 923137,                          # model.count_params()
  "macs": 11830000,                          # lightcnn.models.count_macs(model)
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

CONTEXT_FORMAT = """\
One dict for the whole report: how every run in it was made (JSON-serialisable).
{
  "dataset": "cifar10",                      # data.dataset: every metrics dict's "dataset"
  "source": "JPEG copy of CIFAR-10 (../shared/data/cifar10-jpeg.tar.gz)",
                                             # where the images came from, in words a reader
                                             # understands (official archive, a copy, a mirror)
  "recipes": {                               # per model: its effective training settings,
    "our_small": {                           # e.g. dataclasses.asdict(lightcnn.training.TrainConfig);
      "recipe": "default", "epochs": 30,     # recipe, epochs, optimizer, learning_rate and
      "optimizer": "adamw",                  # schedule are required; warmup_epochs,
      "learning_rate": 0.002,                # weight_decay and batch_size are shown when
      "schedule": "cosine",                  # present; other keys are kept in the JSON only
      "warmup_epochs": 2.0, "weight_decay": 0.05, "batch_size": 128}},
  "model_modes": {"our_small": "corrected"}, # per model: "faithful" | "corrected"
  "seeds": [0, 1, 2],                        # train.seeds; every metrics dict's seed is one of them
  "image_size": "32x32 (CIFAR native 32x32)", # optional: the training images' height x width and why
  "git_commit": "77e2a94c...",               # the commit the runs were made from
  "git_dirty": false,                        # optional: the workspace had uncommitted changes
  "cpu": "AMD EPYC 7B13 (2 logical cores)",  # optional; else taken from the metrics/latency results
  "litert_version": "2.0.3"                  # optional; else taken from the latency results
}"""

# lightcnn.models.options.MODEL_MODES (tested equal), spelled out so the report stage does
# not depend on the model code.
MODES = ("corrected", "faithful")
REQUIRED_RECIPE_KEYS = {"recipe": str, "epochs": int, "optimizer": str, "learning_rate": (int, float),
                        "schedule": str}
CONTEXT_KEYS = {"dataset", "source", "recipes", "model_modes", "seeds", "git_commit", "git_dirty", "cpu",
                "litert_version", "image_size"}

MD_FILE, JSON_FILE, PLOT_FILE = "comparison.md", "comparison.json", "accuracy_vs_latency.png"
STUDY_DEVICE = STUDY_PROTOCOL["latency_device"]
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "birds": "Birds"}  # also the table order
# The number of classes of each of the study's dataset runs.
STUDY_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "bird100": 100, "bird325": 325}
MISSING = "-"

# Verdicts of our mean top-1 against the study's published one.
SINGLE_RUN, WITHIN_SPREAD, ABOVE_STUDY, BELOW_STUDY = ("single run (seed spread unknown)", "within seed spread",
                                                       "above the study", "below the study")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid model metrics: {message}\nExpected format:\n{MODEL_METRICS_FORMAT}")


def _require_context(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid report context: {message}\nExpected format:\n{CONTEXT_FORMAT}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _normalise(metrics: dict) -> dict:
    """Check one run's metrics dict and return a copy with thread keys as strings."""
    _require(isinstance(metrics, dict), f"expected a dict, got {type(metrics).__name__}")
    for key, kind in (("model", str), ("dataset", str), ("num_classes", int), ("test", dict)):
        _require(isinstance(metrics.get(key), kind), f"{key!r} must be a {kind.__name__} "
                 f"(model {metrics.get('model')!r})")
    _require(_is_int(metrics.get("seed")),
             f"'seed' must be an int, the run's training seed (model {metrics['model']!r}, "
             f"got {metrics.get('seed')!r})")
    _require(_is_number(metrics["test"].get("top1")),
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


def validate_context(context: Any, model_metrics: list[dict]) -> dict:
    """Check the report context (CONTEXT_FORMAT) against the (normalised) runs it describes;
    return a JSON-ready copy. Raises ValueError naming the problem."""
    _require_context(isinstance(context, dict), f"expected a dict, got {type(context).__name__}")
    unknown = sorted(set(context) - CONTEXT_KEYS)
    _require_context(not unknown, f"unknown key(s) {', '.join(map(repr, unknown))}; "
                     f"valid keys: {', '.join(sorted(CONTEXT_KEYS))}")
    for key in ("dataset", "source", "git_commit"):
        _require_context(isinstance(context.get(key), str) and context[key].strip(),
                         f"{key!r} must be a non-empty string, got {context.get(key)!r}")
    for key in ("cpu", "litert_version", "image_size"):
        _require_context(context.get(key) is None or isinstance(context[key], str),
                         f"{key!r} must be a string or absent, got {context.get(key)!r}")
    _require_context(isinstance(context.get("git_dirty", False), bool),
                     f"'git_dirty' must be true or false, got {context.get('git_dirty')!r}")

    seeds = context.get("seeds")
    _require_context(isinstance(seeds, list) and seeds and all(map(_is_int, seeds)),
                     f"'seeds' must be a non-empty list of ints (train.seeds), got {seeds!r}")
    _require_context(len(set(seeds)) == len(seeds), f"'seeds' lists a seed twice: {seeds!r}")

    models = sorted({metrics["model"] for metrics in model_metrics}, key=_model_order)
    for key, what in (("recipes", "its effective training settings"), ("model_modes", "its mode")):
        value = context.get(key)
        _require_context(isinstance(value, dict), f"{key!r} must map each model to {what}, got {value!r}")
        missing = [model for model in models if model not in value]
        _require_context(not missing, f"{key!r} has no entry for model(s) {', '.join(missing)}")
    for model, recipe in context["recipes"].items():
        _require_context(isinstance(recipe, dict), f"recipes[{model!r}] must be a dict, got {recipe!r}")
        for key, kind in REQUIRED_RECIPE_KEYS.items():
            value = recipe.get(key)
            good = _is_number(value) and value > 0 if kind == (int, float) else (
                _is_int(value) and value > 0 if kind is int else isinstance(value, kind) and value)
            _require_context(good, f"recipes[{model!r}][{key!r}] is missing or invalid: {value!r}")
    for model, mode in context["model_modes"].items():
        _require_context(mode in MODES, f"model_modes[{model!r}] must be one of {', '.join(MODES)}; got {mode!r}")

    for metrics in model_metrics:
        _require_context(metrics["dataset"] == context["dataset"],
                         f"'dataset' is {context['dataset']!r} but model {metrics['model']!r} "
                         f"(seed {metrics['seed']}) was run on {metrics['dataset']!r}: one report per dataset")
        _require_context(metrics["seed"] in seeds,
                         f"model {metrics['model']!r} has a run with seed {metrics['seed']}, "
                         f"which 'seeds' ({seeds}) does not list")
    return {key: context[key] for key in sorted(context)}


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


# ---------------------------------------------------------------- seed aggregation


def summarise(values: list[float]) -> dict:
    """{"n", "mean", "std", "values"} of one cell over seeds; std is the sample standard
    deviation (n - 1 in the denominator), None for a single value."""
    if not values:
        raise ValueError("summarise() needs at least one value")
    values = [float(value) for value in values]
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def _cell(runs: list[dict], get: Callable[[dict], Any]) -> dict | None:
    """Summary over the runs that have this value (None if none has it)."""
    values = [value for value in map(get, runs) if value is not None]
    return summarise(values) if values else None


def _dig(*keys: str) -> Callable[[dict], Any]:
    def get(metrics: dict) -> Any:
        for key in keys:
            if not isinstance(metrics, dict):
                return None
            metrics = metrics.get(key)
        return metrics
    return get


def _same_across_seeds(runs: list[dict], key: str) -> int | None:
    """A figure that depends on the architecture only (params, MACs): equal for every seed."""
    values = {run[key] for run in runs if run.get(key) is not None}
    if len(values) > 1:
        raise ValueError(f"the runs of model {runs[0]['model']!r} disagree on {key!r} ({sorted(values)} over "
                         f"seeds {[run['seed'] for run in runs]}): were they built with different settings?")
    return values.pop() if values else None


def aggregate_runs(runs: list[dict]) -> dict:
    """One model's runs (one per seed) summarised cell by cell (see summarise())."""
    runs = sorted(runs, key=lambda run: run["seed"])
    variants = [variant for variant in VARIANTS if any(variant in run["latency"] for run in runs)]
    latency = {}
    for variant in variants:
        threads = sorted({t for run in runs for t in run["latency"].get(variant, {})}, key=int)
        latency[variant] = {t: {stat: _cell(runs, _dig("latency", variant, t, stat))
                                for stat in ("median_ms", "p90_ms")}
                            for t in threads}
    litert = sorted({result["litert_version"] for run in runs for by_threads in run["latency"].values()
                     for result in by_threads.values() if result.get("litert_version")})
    return {
        "n": len(runs),
        "seeds": [run["seed"] for run in runs],
        "top1": _cell(runs, _dig("test", "top1")),
        "top5": _cell(runs, _dig("test", "top5")),
        "int8_top1": _cell(runs, _dig("tflite", "int8", "top1")),
        "int8_agreement": _cell(runs, _dig("tflite", "int8", "agreement")),
        "tflite_size_bytes": {variant: _cell(runs, _dig("tflite", variant, "size_bytes")) for variant in VARIANTS},
        "latency": latency,
        "params": _same_across_seeds(runs, "params"),
        "macs": _same_across_seeds(runs, "macs"),
        "train_seconds": _cell(runs, _dig("train_seconds")),
        "epochs": sorted({run["epochs"] for run in runs if run.get("epochs") is not None}),
        "cpu": sorted(set().union(*map(_cpu_names, runs))),
        "litert_version": litert,
        "gradcam": [{"seed": run["seed"], "path": run["gradcam"]} for run in runs if run.get("gradcam")],
    }


def compare_with_study(ours: dict | None, study_top1: float | None) -> dict | None:
    """Our top-1 summary against the study's published top-1: the difference and a verdict.

    A difference no larger than our sample standard deviation over seeds is WITHIN_SPREAD;
    with one run the spread is unknown (SINGLE_RUN): a single-run difference, no verdict.
    None where the study published nothing.
    """
    if ours is None or study_top1 is None:
        return None
    difference = ours["mean"] - study_top1
    if ours["n"] == 1:
        verdict = SINGLE_RUN
    elif abs(difference) <= ours["std"]:
        verdict = WITHIN_SPREAD
    else:
        verdict = ABOVE_STUDY if difference > 0 else BELOW_STUDY
    return {"difference": difference, "spread": ours["std"], "n": ours["n"], "verdict": verdict}


def build_comparison_data(model_metrics: list[dict], context: dict) -> dict:
    """Group the runs by dataset run and model, aggregate the seeds and put the study's
    figures beside them.

    Returns {"context", "cpu", "litert_version", "study_device", "study_protocol",
    "datasets": [{"dataset", "num_classes", "study_key", "threads", "rows": [{"model",
    "mode", "recipe", "runs": [<per-seed metrics>], "ours": aggregate_runs(...), "study":
    {"top1", "params", "phone_latency_ms"}, "top1_vs_study": compare_with_study(...)}]}]};
    this is what comparison.json holds.
    """
    if not model_metrics:
        raise ValueError("no model metrics given: train and evaluate at least one model first")
    normalised = list(map(_normalise, model_metrics))
    context = validate_context(context, normalised)
    runs: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for metrics in normalised:
        by_model = runs.setdefault((metrics["dataset"], metrics["num_classes"]), {})
        seeds = by_model.setdefault(metrics["model"], [])
        if any(run["seed"] == metrics["seed"] for run in seeds):
            raise ValueError(f"model {metrics['model']!r} seed {metrics['seed']} appears twice for dataset "
                             f"{metrics['dataset']!r} ({metrics['num_classes']} classes); pass one metrics "
                             "dict per (model, seed) run")
        seeds.append(metrics)

    datasets = []
    for dataset, num_classes in sorted(runs, key=_run_order):
        by_model = runs[(dataset, num_classes)]
        study_key = study_dataset_key(dataset, num_classes)
        if STUDY_NUM_CLASSES.get(study_key) != num_classes:  # e.g. a 3-class CIFAR-10 subset
            study_key = None
        threads = sorted({int(t) for model_runs in by_model.values() for run in model_runs
                          for by_threads in run["latency"].values() for t in by_threads})
        rows = []
        for model in sorted(by_model, key=_model_order):
            model_runs = sorted(by_model[model], key=lambda run: run["seed"])
            ours = aggregate_runs(model_runs)
            study = _study_figures(model, study_key, num_classes)
            rows.append({"model": model, "mode": context["model_modes"][model],
                         "recipe": context["recipes"][model], "runs": model_runs, "ours": ours, "study": study,
                         "top1_vs_study": compare_with_study(ours["top1"], study["top1"])})
        datasets.append({"dataset": dataset, "num_classes": num_classes, "study_key": study_key,
                         "threads": threads, "rows": rows})

    all_rows = [row for run in datasets for row in run["rows"]]
    cpu = context.get("cpu") or ", ".join(sorted({cpu for row in all_rows for cpu in row["ours"]["cpu"]})) or None
    litert = context.get("litert_version") or ", ".join(
        sorted({version for row in all_rows for version in row["ours"]["litert_version"]})) or None
    return {"context": context, "cpu": cpu, "litert_version": litert, "study_device": STUDY_DEVICE,
            "study_protocol": dict(STUDY_PROTOCOL), "datasets": datasets}


# ---------------------------------------------------------------- markdown


def _percent(value) -> str:
    return MISSING if value is None else f"{100 * value:.2f}%"


def _count(value) -> str:
    return MISSING if value is None else f"{int(value):,}"


def _stat(summary: dict | None, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """A cell over seeds: "v" for one run, "mean ± std (n=N)" for several."""
    if summary is None:
        return MISSING
    mean = f"{scale * summary['mean']:.{digits}f}"
    if summary["n"] == 1:
        return mean + unit
    return f"{mean} ± {scale * summary['std']:.{digits}f}{unit} (n={summary['n']})"


def _percent_stat(summary: dict | None) -> str:
    return _stat(summary, scale=100, unit="%")


def _latency_cell(latency: dict | None) -> str:
    """Median ms with p90 in brackets for one run; mean ± std of the medians over seeds."""
    if not latency or latency["median_ms"] is None:
        return MISSING
    if latency["median_ms"]["n"] == 1:
        return f"{latency['median_ms']['mean']:.2f} ({latency['p90_ms']['mean']:.2f})"
    return _stat(latency["median_ms"])


def _duration(seconds) -> str:
    if seconds is None:
        return MISSING
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _duration_stat(summary: dict | None) -> str:
    if summary is None:
        return MISSING
    if summary["n"] == 1:
        return _duration(summary["mean"])
    return f"{_duration(summary['mean'])} ± {_duration(summary['std'])} (n={summary['n']})"


def _tflite_sizes(sizes: dict) -> str:
    return " / ".join(MISSING if sizes.get(variant) is None else f"{sizes[variant]['mean'] / 1e6:.2f}"
                      for variant in VARIANTS)


def _int8_accuracy(ours: dict) -> str:
    if ours["int8_top1"] is None:
        return MISSING
    agreement = ours["int8_agreement"]
    return _percent_stat(ours["int8_top1"]) + ("" if agreement is None else f" ({_percent(agreement['mean'])})")


def _versus_study(comparison: dict | None) -> str:
    if comparison is None:
        return MISSING
    points = f"{100 * comparison['difference']:+.2f} pp"
    if comparison["verdict"] == SINGLE_RUN:
        return f"{points}, {SINGLE_RUN}"
    spread = f"seed std {100 * comparison['spread']:.2f} pp, n={comparison['n']}"
    if comparison["verdict"] == WITHIN_SPREAD:
        return f"{points}, within seed spread ({spread})"
    return f"{points}, {comparison['verdict']} (beyond {spread})"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(cells) + " |" for cells in [header, align, *rows]]


def _number(value: float) -> str:
    return f"{value:g}"


def describe_recipe(recipe: dict) -> str:
    """One line: "`default`: 30 epochs, adamw, lr 0.002, cosine schedule (2 warm-up epochs), ..."."""
    parts = [f"{recipe['epochs']} epoch{'' if recipe['epochs'] == 1 else 's'}", recipe["optimizer"],
             f"lr {_number(recipe['learning_rate'])}"]
    schedule = f"{recipe['schedule']} schedule"
    if recipe.get("warmup_epochs"):
        schedule += f" ({_number(recipe['warmup_epochs'])} warm-up epochs)"
    parts.append(schedule)
    if recipe.get("weight_decay"):
        parts.append(f"weight decay {_number(recipe['weight_decay'])}")
    if recipe.get("batch_size"):
        parts.append(f"batch {recipe['batch_size']}")
    return f"`{recipe['recipe']}`: " + ", ".join(parts)


def _per_model(values: dict[str, str], label: str) -> list[str]:
    """One line when every model has the same value, else a sub-list per model."""
    if len(set(values.values())) == 1:
        return [f"- **{label}**: {next(iter(values.values()))} (every model)."]
    return [f"- **{label}**, per model:"] + [f"  - `{model}`: {value}" for model, value in values.items()]


def header_lines(run: dict, comparison: dict) -> list[str]:
    """What each number of a dataset run's table is: the lines above the table."""
    context = comparison["context"]
    models = [row["model"] for row in run["rows"]]
    title = DATASET_TITLES.get(run["dataset"], run["dataset"])
    seeds = ", ".join(map(str, context["seeds"]))
    n_max = max(row["ours"]["n"] for row in run["rows"])
    commit = f"`{context['git_commit']}`" + (" with uncommitted changes" if context.get("git_dirty") else "")
    study = (f"the study's published {run['study_key']!r} figures: {STUDY_RECIPE_SUMMARY}, "
             f"{STUDY_PROTOCOL['data']}, {STUDY_PROTOCOL['checkpoint']} checkpoint; latency: {STUDY_DEVICE}"
             if run["study_key"]
             else "the study published no figures for this dataset run (its columns show -)")
    if n_max > 1:
        seed_line = (f"{seeds}. Each of our cells is the mean ± sample standard deviation over the n runs "
                     "(one per seed) that have it; a cell with one run shows its value. "
                     "*top-1 vs study* calls a difference no larger than our seed standard deviation "
                     "\"within seed spread\": not a win or a loss.")
    else:
        seed_line = (f"{seeds}: one run per model, so each cell is that run's value and our seed spread is "
                     "unknown; *top-1 vs study* gives the single-run difference without a win/loss verdict "
                     "(train with several `train.seeds` to get one).")
    partial = [f"`{row['model']}` has runs for seed(s) {', '.join(map(str, row['ours']['seeds']))} only"
               for row in run["rows"] if row["ours"]["seeds"] != sorted(context["seeds"])]
    if partial:
        seed_line += " Missing runs: " + "; ".join(partial) + "."
    cpu = comparison["cpu"] or "an unrecorded CPU"
    litert = f"LiteRT {comparison['litert_version']}" if comparison["litert_version"] else "LiteRT"
    return [
        f"- **Data (ours)**: {title}, {run['num_classes']} classes"
        + (f", images at {context['image_size']}" if context.get("image_size") else "")
        + f", from {context['source']}."
        + (f" With {run['num_classes']} classes every prediction is among the top 5: top-5 is 100% by "
           "construction." if run["num_classes"] <= 5 else ""),
        *_per_model({model: describe_recipe(context["recipes"][model]) for model in models}, "Recipe (ours)"),
        *_per_model({model: context["model_modes"][model] for model in models}, "Model mode"),
        f"- **Seeds**: {seed_line}",
        f"- **Latency (ours)**: {litert} on **{cpu}**, XNNPACK, one image per inference, milliseconds, every model and variant timed interleaved in one process (the latency stage: metrics/latency.md); "
        "one run: median with the 90th percentile in brackets; several seeds: mean ± std of the medians.",
        f"- **Commit**: {commit}.",
        f"- **Study columns**: {study}. Its latency is a phone's, ours a CPU's: compare the ranking "
        "of the models, not the milliseconds.",
    ]


def _dataset_section(run: dict, comparison: dict) -> list[str]:
    title = DATASET_TITLES.get(run["dataset"], run["dataset"])
    lines = [f"## {title}, {run['num_classes']} classes", "", *header_lines(run, comparison), ""]

    thread_columns = [f"latency ms ours (CPU), float32, {t} thr" for t in run["threads"]]
    header = ["model", "mode", "top-1 ours", "top-1 study (150 ep, Adam 1e-3, official images)",
              "top-1 ours vs study", "params ours", "params study", *thread_columns,
              "latency ms study (Snapdragon 865 phone)", "top-5 ours", "int8 top-1 (agreement)",
              "TFLite MB f32 / f16 / int8", "MMACs", "train time per run (epochs)"]
    rows = []
    for row in run["rows"]:
        ours, study = row["ours"], row["study"]
        float32_latency = ours["latency"].get("float32", {})
        epochs = "/".join(map(str, ours["epochs"]))
        rows.append([
            f"`{row['model']}`", row["mode"],
            _percent_stat(ours["top1"]), _percent(study["top1"]), _versus_study(row["top1_vs_study"]),
            _count(ours["params"]), _count(study["params"]),
            *[_latency_cell(float32_latency.get(str(t))) for t in run["threads"]],
            MISSING if study["phone_latency_ms"] is None else f"{study['phone_latency_ms']:.1f}",
            _percent_stat(ours["top5"]),
            _int8_accuracy(ours),
            _tflite_sizes(ours["tflite_size_bytes"]),
            MISSING if ours["macs"] is None else f"{ours['macs'] / 1e6:.1f}",
            _duration_stat(ours["train_seconds"]) + (f" ({epochs})" if epochs else ""),
        ])
    lines += _table(header, rows, numeric_from=2)

    gradcam_links = [f"[`{row['model']}`" + (f" seed {item['seed']}" if row["ours"]["n"] > 1 else "")
                     + f"]({item['path']})" for row in run["rows"] for item in row["ours"]["gradcam"]]
    if gradcam_links:
        lines += ["", "Grad-CAM heat maps (last 1x1 conv row): " + ", ".join(gradcam_links) + "."]

    if any(row["ours"]["n"] > 1 for row in run["rows"]):
        lines += ["", "Every run (ours, one per seed):", ""]
        seed_rows = []
        for row in run["rows"]:
            for metrics in row["runs"]:
                float32_latency = metrics["latency"].get("float32", {})
                int8 = metrics.get("tflite", {}).get("int8", {})
                seed_rows.append([
                    f"`{row['model']}`, seed {metrics['seed']}", _percent(metrics["test"]["top1"]),
                    _percent(metrics["test"].get("top5")), _percent(int8.get("top1")),
                    *[MISSING if str(t) not in float32_latency else
                      f"{float32_latency[str(t)]['median_ms']:.2f} ({float32_latency[str(t)]['p90_ms']:.2f})"
                      for t in run["threads"]],
                    _duration(metrics.get("train_seconds"))
                    + ("" if metrics.get("epochs") is None else f" ({metrics['epochs']})"),
                ])
        lines += _table(["run", "top-1", "top-5", "int8 top-1",
                         *[f"latency ms (CPU), float32, {t} thr" for t in run["threads"]], "train time (epochs)"],
                        seed_rows)

    detail_rows = [[f"`{row['model']}`", variant, threads, _stat(stats["median_ms"]), _stat(stats["p90_ms"]),
                    runs_and_xnnpack[0], runs_and_xnnpack[1]]
                   for row in run["rows"]
                   for variant, by_threads in row["ours"]["latency"].items()
                   for threads, stats in by_threads.items()
                   for runs_and_xnnpack in [_timing_settings(row["runs"], variant, threads)]]
    if detail_rows:
        lines += ["", "Latency of every TFLite variant (ours, LiteRT on this CPU, batch 1; "
                  "mean ± std over seeds where n > 1):", ""]
        lines += _table(["model", "variant", "threads", "median ms", "p90 ms", "timed runs", "XNNPACK"],
                        detail_rows, numeric_from=2)
    return lines + [""]


def _timing_settings(runs: list[dict], variant: str, threads: str) -> tuple[str, str]:
    """The timed-run count and XNNPACK state of a latency cell, over its seeds."""
    results = [run["latency"][variant][threads] for run in runs if threads in run["latency"].get(variant, {})]
    counts = sorted({str(result.get("runs", MISSING)) for result in results})
    xnnpack = sorted({{True: "on", False: "not applied"}.get(result.get("xnnpack"), MISSING) for result in results})
    return "/".join(counts), "/".join(xnnpack)


def render_markdown(comparison: dict) -> str:
    """comparison.md's text from build_comparison_data()'s result."""
    lines = [
        "# Model comparison: ours beside the study's published figures",
        "",
        "Each table is headed by what its numbers are: our data and its source, recipe, model mode, "
        "seeds, CPU, LiteRT version and commit, and the study's protocol for its columns.",
        "",
        "- top-1 and top-5 are the Keras models' test accuracy; *int8 top-1* is the full-integer "
        "TFLite model's, with its agreement with the Keras predictions in brackets.",
        "- *top-1 ours vs study*: our (mean) top-1 minus the study's, in percentage points (pp).",
        "- params: `model.count_params()` (BatchNorm statistics included), as the study counts; "
        "MMACs: millions of multiply-accumulates per image (convolutions and dense layers).",
        "",
    ]
    for run in comparison["datasets"]:
        lines += _dataset_section(run, comparison)
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def accuracy_vs_latency_figure(comparison: dict):
    """A matplotlib Figure: top-1 accuracy against float32 latency, one row per dataset run,
    two panels per row, each with its own labelled latency axis:

    - left, ours: LiteRT on our CPU, at the fewest threads measured, milliseconds;
    - right, the study's: its published Snapdragon 865 phone milliseconds.

    CPU and phone milliseconds are never on one axis (different hardware and method); the
    accuracy axes of a row are shared, so the accuracies can be compared across panels.
    With several seeds our points carry error bars: one sample standard deviation over the
    seeds, in both accuracy and latency. Each panel's gid is "ours-cpu" or "study-phone".
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    runs = comparison["datasets"]
    cpu = comparison["cpu"] or "unrecorded CPU"
    figure = Figure(figsize=(10.4, 4.2 * len(runs)))
    grid = figure.subplots(len(runs), 2, squeeze=False, sharey="row")
    for (ours_ax, study_ax), run in zip(grid, runs):
        title = f"{DATASET_TITLES.get(run['dataset'], run['dataset'])}, {run['num_classes']} classes"
        threads = str(run["threads"][0]) if run["threads"] else None
        for row in run["rows"]:
            ours = row["ours"]
            latency = ours["latency"].get("float32", {}).get(threads, {}).get("median_ms")
            if latency is None or ours["top1"] is None:
                continue
            top1 = ours["top1"]
            ours_ax.errorbar(latency["mean"], 100 * top1["mean"],
                             xerr=latency["std"], yerr=None if top1["std"] is None else 100 * top1["std"],
                             fmt="o", color="C0", ecolor="C0", capsize=3)
            ours_ax.annotate(row["model"], (latency["mean"], 100 * top1["mean"]), textcoords="offset points",
                             xytext=(4, 4), fontsize=7)
        n_max = max(row["ours"]["n"] for row in run["rows"])
        ours_ax.set_title(f"{title}: ours" + (f" (mean ± std over up to {n_max} seeds)" if n_max > 1 else ""),
                          fontsize=9)
        ours_ax.set_xlabel(f"our float32 latency per image on CPU, ms\n(LiteRT, {cpu}, {threads} thr, median)")
        ours_ax.set_gid("ours-cpu")

        study_points = [(row["model"], row["study"]["phone_latency_ms"], row["study"]["top1"])
                        for row in run["rows"]
                        if row["study"]["phone_latency_ms"] is not None and row["study"]["top1"] is not None]
        for name, phone_ms, top1 in study_points:
            study_ax.scatter([phone_ms], [100 * top1], marker="s", facecolors="none", edgecolors="C1")
            study_ax.annotate(name, (phone_ms, 100 * top1), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not study_points:
            study_ax.text(0.5, 0.5, "no published phone latency\nfor this dataset run", ha="center",
                          va="center", transform=study_ax.transAxes, fontsize=8)
        study_ax.set_title(f"{title}: the study (150 epochs, Adam 1e-3)", fontsize=9)
        study_ax.set_xlabel("the study's float32 latency per image on a Snapdragon 865 phone, ms\n"
                            "(published; measuring method unpublished)")
        study_ax.set_gid("study-phone")
        for ax in (ours_ax, study_ax):
            ax.set_ylabel("top-1 accuracy, %")
            ax.tick_params(labelleft=True)
            ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_accuracy_vs_latency(comparison: dict, path: str | os.PathLike) -> Path:
    """Write accuracy_vs_latency_figure(comparison) as a PNG (atomically)."""
    figure = accuracy_vs_latency_figure(comparison)
    with io.atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return Path(path)


def build_comparison(model_metrics: list[dict], out_dir: str | os.PathLike, context: dict) -> dict:
    """Write comparison.md, comparison.json and accuracy_vs_latency.png into `out_dir`
    (atomically); returns the comparison data (what comparison.json holds).

    `model_metrics`: one dict per (model, seed) run, MODEL_METRICS_FORMAT; `context`: how
    they were made, CONTEXT_FORMAT. Both are validated before anything is written.
    """
    comparison = build_comparison_data(model_metrics, context)
    out_dir = Path(out_dir)
    io.write_json(out_dir / JSON_FILE, comparison)
    io.write_text(out_dir / MD_FILE, render_markdown(comparison))
    plot_accuracy_vs_latency(comparison, out_dir / PLOT_FILE)
    return comparison
