"""The README results table: measured runs beside the study's figures, generated, never typed.

Each run is a committed folder docs/results/<run-name>/ holding run.json (RUN_FORMAT: how
the run was made) and copies of the run's metrics files (<model>.train.json, <model>.json,
optionally <model>.tflite.json and <model>.latency.json). render_table() turns the folders
into one Markdown table (the study's published figures first, labelled with its protocol,
then one row per run, oldest first); update_readme() writes it between the README's
markers, or checks that it is there. A run whose metrics files were never committed can
still be listed from its recorded figures, marked "transcribed" in the table.

Light on purpose: no TensorFlow import, so the README check runs in a second.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightcnn import io
from lightcnn.export import VARIANTS as TFLITE_VARIANTS
from lightcnn.machine import cpu_facts
from lightcnn.study import (PUBLISHED_ACCURACY, STUDY_MODELS, STUDY_PROTOCOL, STUDY_RECIPE_SUMMARY,
                            study_dataset_key)

RUN_FILE = "run.json"
BEGIN_MARK = "<!-- results-table:begin -->"
END_MARK = "<!-- results-table:end -->"
TFLITE_BEGIN_MARK = "<!-- tflite-table:begin -->"
TFLITE_END_MARK = "<!-- tflite-table:end -->"
PROVENANCES = ("measured", "transcribed")
MODES = ("corrected", "faithful")  # lightcnn.models.options.MODEL_MODES, without importing Keras
METRICS_SUFFIXES = {"train": ".train.json", "eval": ".json", "tflite": ".tflite.json", "latency": ".latency.json"}
REQUIRED_METRICS = ("train", "eval")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "birds": "Birds"}
# Vector extensions worth naming for CPU inference speed (x86 flags, Arm features).
VECTOR_EXTENSIONS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
                     "asimd", "asimddp", "sve", "sve2")
MISSING = "-"

RUN_FORMAT = """\
docs/results/<run-name>/run.json, one per run (the folder also holds the run's metrics files,
<model>.train.json and <model>.json, optionally <model>.tflite.json and <model>.latency.json):
{
  "name": "our_small-default-30ep-2026-11-25",   # = the folder's name
  "what": "our_small, default recipe, all of CIFAR-10",   # what the run is, in a few words
  "model": "our_small",
  "mode": "corrected",                        # corrected | faithful
  "provenance": "measured",                   # measured: figures from the metrics files here;
                                              # transcribed: from "figures" (files not kept)
  "command": "python -m pipeline.compose model=our_small && dvc repro",
  "params": {"train": {...}, "data": {...}, "mode": "corrected"},   # the settings used
  "seed": 42,                                 # the training seed
  "training_data": "CIFAR-10, JPEG copy (../shared/data/cifar10-jpeg.tar.gz), 40,000 train / 10,000 val",
  "dataset": "cifar10", "num_classes": 10,    # for the study's matching figure
  "git_commit": "cb0481e",
  "cpu": {"model_name": "AMD EPYC", "logical_cores": 2,
          "vector_extensions": ["avx2", "fma"]},   # null where not recorded
  "wall_seconds": 4300.0,                     # the command's wall time; null where not recorded
  "date": "2026-11-25",                       # ISO date the run finished
  "notes": "...",                             # optional
  "transcribed_from": "README.md at commit cb0481e",   # transcribed runs only
  "figures": {"test_top1": 0.8402, "test_top5": 0.9911, "best_val_accuracy": 0.8506,
              "best_epoch": 28, "epochs": 30, "train_seconds": 4080.0}   # transcribed runs only
}"""

REQUIRED_FIELDS = {"name": str, "what": str, "model": str, "mode": str, "provenance": str, "command": str,
                   "params": dict, "seed": int, "training_data": str, "dataset": str, "num_classes": int,
                   "git_commit": str, "date": str}
FIGURE_KEYS = {"test_top1": True, "test_top5": False, "best_val_accuracy": True, "best_epoch": False,
               "epochs": True, "train_seconds": True}


class RunFolderError(ValueError):
    """A run folder that cannot be read: the message names the folder and the problem."""


def _fail(folder: Path, message: str) -> None:
    raise RunFolderError(f"{folder}: {message}\nExpected:\n{RUN_FORMAT}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path, folder: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        _fail(folder, f"{path.name} is not valid JSON ({error})")


def load_run(folder: str | os.PathLike) -> dict:
    """One run folder: its run.json, validated, with "figures" from its metrics files
    (measured) or as recorded (transcribed). Raises RunFolderError naming the problem."""
    folder = Path(folder)
    if not (folder / RUN_FILE).is_file():
        _fail(folder, f"no {RUN_FILE}")
    run = _read_json(folder / RUN_FILE, folder)
    if not isinstance(run, dict):
        _fail(folder, f"{RUN_FILE} must hold an object")
    for key, kind in REQUIRED_FIELDS.items():
        value = run.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value.strip()):
            _fail(folder, f"{RUN_FILE}: {key!r} must be a {'non-empty ' if kind is str else ''}{kind.__name__}, "
                          f"got {value!r}")
    if run["name"] != folder.name:
        _fail(folder, f"{RUN_FILE}: 'name' is {run['name']!r} but the folder is {folder.name!r}: they must match")
    if run["mode"] not in MODES:
        _fail(folder, f"{RUN_FILE}: 'mode' must be one of {', '.join(MODES)}, got {run['mode']!r}")
    if run["provenance"] not in PROVENANCES:
        _fail(folder, f"{RUN_FILE}: 'provenance' must be one of {', '.join(PROVENANCES)}, got {run['provenance']!r}")
    try:
        datetime.date.fromisoformat(run["date"])
    except ValueError:
        _fail(folder, f"{RUN_FILE}: 'date' must be an ISO date (YYYY-MM-DD), got {run['date']!r}")
    wall = run.get("wall_seconds")
    if wall is not None and not (_is_number(wall) and wall >= 0):
        _fail(folder, f"{RUN_FILE}: 'wall_seconds' must be a number of seconds or null, got {wall!r}")
    cpu = run.get("cpu")
    if cpu is not None and not (isinstance(cpu, dict) and isinstance(cpu.get("model_name"), str)):
        _fail(folder, f"{RUN_FILE}: 'cpu' must be null or an object with 'model_name', got {cpu!r}")

    if run["provenance"] == "transcribed":
        if not isinstance(run.get("transcribed_from"), str) or not run["transcribed_from"].strip():
            _fail(folder, f"{RUN_FILE}: a transcribed run must say where its figures were copied from "
                          "('transcribed_from', e.g. \"README.md at commit cb0481e\")")
        figures = run.get("figures")
        if not isinstance(figures, dict):
            _fail(folder, f"{RUN_FILE}: a transcribed run needs its 'figures'")
        for key, required in FIGURE_KEYS.items():
            value = figures.get(key)
            if (required or value is not None) and not _is_number(value):
                _fail(folder, f"{RUN_FILE}: figures.{key} must be a number, got {value!r}")
    else:
        files = {kind: folder / f"{run['model']}{suffix}" for kind, suffix in METRICS_SUFFIXES.items()}
        missing = [files[kind].name for kind in REQUIRED_METRICS if not files[kind].is_file()]
        if missing:
            _fail(folder, f"a measured run needs copies of its metrics files; missing {', '.join(missing)} "
                          "(or mark it \"provenance\": \"transcribed\" with its 'figures')")
        train, evaluation = _read_json(files["train"], folder), _read_json(files["eval"], folder)
        try:
            figures = {"test_top1": evaluation["top1"], "test_top5": evaluation.get("top5"),
                       "best_val_accuracy": train["best_val_accuracy"], "best_epoch": train.get("best_epoch"),
                       "epochs": train["epochs_run"], "train_seconds": train["train_seconds"]}
        except KeyError as error:
            _fail(folder, f"metrics file lacks {error.args[0]!r} ({files['eval'].name}: top1; "
                          f"{files['train'].name}: best_val_accuracy, epochs_run, train_seconds)")
        if files["tflite"].is_file():
            run["tflite"] = _tflite_figures(_read_json(files["tflite"], folder), folder, files["tflite"].name)
    return {**run, "figures": dict(figures)}


def _tflite_figures(tflite: Any, folder: Path, name: str) -> dict:
    """The export stage's tflite.json, checked: Keras top-1 and, per variant, top-1, agreement
    with Keras and size, all on the same `eval_images` test images."""
    if not isinstance(tflite, dict) or not _is_number(tflite.get("keras_top1")) or not _is_number(
            tflite.get("eval_images")):
        _fail(folder, f"{name} must hold 'keras_top1' and 'eval_images' (the export stage's tflite.json)")
    for variant in TFLITE_VARIANTS:
        figures = tflite.get(variant)
        if not isinstance(figures, dict) or not all(_is_number(figures.get(key))
                                                    for key in ("top1", "agreement", "size_bytes")):
            _fail(folder, f"{name}: '{variant}' must hold top1, agreement and size_bytes")
    return tflite


def load_runs(results_dir: str | os.PathLike) -> list[dict]:
    """Every run folder under results_dir, oldest first (date, then name)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RunFolderError(f"{results_dir}: no such folder of runs (one subfolder per run, each with {RUN_FILE})")
    runs = [load_run(folder) for folder in io.finished_folders(results_dir)]
    return sorted(runs, key=lambda run: (run["date"], run["name"]))


# ---------------------------------------------------------------- table


def _escape(text: str) -> str:
    """A Markdown table cell: no pipes or line breaks of its own."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.2f}%"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _recipe(params: dict) -> str:
    train = params.get("train") or {}
    name = f"`{train['recipe']}`" if train.get("recipe") else MISSING
    details = [str(train["optimizer"])] if train.get("optimizer") else []
    if train.get("learning_rate") is not None:
        details.append(f"lr {train['learning_rate']:g}")
    if train.get("schedule"):
        details.append(str(train["schedule"]))
    return name + (f" ({', '.join(details)})" if details else "")


def _cpu(cpu: dict | None) -> str:
    if not cpu:
        return "not recorded"
    text = cpu["model_name"]
    if cpu.get("logical_cores"):
        text += f", {cpu['logical_cores']} cores"
    extensions = cpu.get("vector_extensions")
    return text + (f" ({', '.join(extensions)})" if extensions else " (vector extensions not recorded)")


def _time(run: dict) -> str:
    text = _minutes(run["figures"]["train_seconds"]) + " training"
    if run.get("wall_seconds") is not None:
        text += f", {_minutes(run['wall_seconds'])} wall"
    return text


def _best_val(figures: dict) -> str:
    text = _percent(figures["best_val_accuracy"])
    return text + (f" (epoch {figures['best_epoch']})" if figures.get("best_epoch") is not None else "")


HEADER = ["run", "model", "mode", "recipe", "epochs", "training data", "seed", "test top-1", "best val acc",
          "time", "CPU", "command"]


def _study_rows(runs: list[dict]) -> list[list[str]]:
    """The study's published top-1 for each (dataset, model) the runs cover."""
    covered = sorted({(run["dataset"], run["num_classes"], run["model"]) for run in runs},
                     key=lambda key: (key[0], key[1], STUDY_MODELS.index(key[2]) if key[2] in STUDY_MODELS else 99))
    rows = []
    for dataset, num_classes, model in covered:
        study_key = study_dataset_key(dataset, num_classes)
        top1 = PUBLISHED_ACCURACY.get(study_key or "", {}).get(model)
        if top1 is None:
            continue
        title = DATASET_TITLES.get(dataset, dataset)
        rows.append([f"**the study** (published): {STUDY_RECIPE_SUMMARY}", f"`{model}`", "the study's code",
                     f"{STUDY_PROTOCOL['optimizer']} {STUDY_PROTOCOL['learning_rate']:g}, "
                     f"{STUDY_PROTOCOL['schedule']}", str(STUDY_PROTOCOL["epochs"]),
                     f"official {title} images" + (", 40,000 train / 10,000 validation"
                                                    if dataset in ("cifar10", "cifar100") else ""),
                     "not published", _percent(top1), "not published", "not published",
                     f"not published (latency: {STUDY_PROTOCOL['latency_device']})", MISSING])
    return rows


def render_table(runs: list[dict]) -> str:
    """The Markdown table: the study's published figures first, then one row per run
    (in the order given: load_runs() gives oldest first), then notes on transcribed runs."""
    rows = _study_rows(runs)
    for run in runs:
        figures = run["figures"]
        transcribed = run["provenance"] == "transcribed"
        rows.append([
            f"`{run['name']}`: {run['what']}" + (" *(transcribed)*" if transcribed else ""),
            f"`{run['model']}`", run["mode"], _recipe(run["params"]), str(figures["epochs"]),
            run["training_data"], str(run["seed"]), _percent(figures["test_top1"]), _best_val(figures),
            _time(run), _cpu(run.get("cpu")), f"`{run['command']}`",
        ])
    lines = ["| " + " | ".join(HEADER) + " |",
             "| " + " | ".join("---:" if name in ("epochs", "seed", "test top-1", "best val acc") else "---"
                                for name in HEADER) + " |"]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    notes = [f"*(transcribed)* `{run['name']}`: figures copied from {run['transcribed_from']}; its metrics "
             "files were never committed." for run in runs if run["provenance"] == "transcribed"]
    footer = ["", "Generated by `python benchmarks/results_table.py` from `docs/results/<run>/` "
              "(run.json and the run's metrics files); do not edit by hand."]
    return "\n".join(lines + ([""] + notes if notes else []) + footer) + "\n"


TFLITE_HEADER = ["run", "model", "test images", "Keras top-1", "float32 top-1", "float16 top-1", "int8 top-1",
                 "int8 − Keras", "int8 agrees with Keras", "float32 / int8 size", "int8 recipe"]


def _int8_recipe(tflite: dict) -> str:
    recipe = tflite.get("int8_recipe")
    if not isinstance(recipe, dict):
        return "not recorded (exported before the export stage recorded it)"
    parts = [f"{recipe.get('io_dtype')} edges", "per-channel" if recipe.get("per_channel") else "per-tensor",
             f"{recipe.get('hard_swish')} hard-swish",
             "fold" if recipe.get("fold_stochastic_depth") else "no fold"]
    calibration = tflite.get("representative_images")
    return ", ".join(parts) + (f", {calibration} calibration images" if calibration else "")


def render_tflite_table(runs: list[dict]) -> str:
    """What a user takes to a phone, per measured run that exported its model: each TFLite
    variant's test top-1 beside the Keras model's, on the same images (the export stage's
    tflite.json), int8's loss in points and how often its top class agrees with Keras'."""
    rows = []
    for run in runs:
        tflite = run.get("tflite")
        if tflite is None:
            continue
        keras_top1, int8 = tflite["keras_top1"], tflite["int8"]
        rows.append([f"`{run['name']}`", f"`{run['model']}`", f"{tflite['eval_images']:,}", _percent(keras_top1),
                     *(_percent(tflite[variant]["top1"]) for variant in TFLITE_VARIANTS),
                     f"{100 * (int8['top1'] - keras_top1):+.2f} points", _percent(int8["agreement"]),
                     f"{tflite['float32']['size_bytes'] / 2**20:.2f} / {int8['size_bytes'] / 2**20:.2f} MiB",
                     _int8_recipe(tflite)])
    lines = ["| " + " | ".join(TFLITE_HEADER) + " |",
             "| " + " | ".join("---" if name in ("run", "model", "int8 recipe") else "---:"
                                for name in TFLITE_HEADER) + " |"]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    footer = ["", "Generated by `python benchmarks/results_table.py` from the `<model>.tflite.json` of each run "
              "in `docs/results/` (the export stage's figures); do not edit by hand."]
    return "\n".join(lines + footer) + "\n"


# ---------------------------------------------------------------- README


def _markers(text: str, where: str, begin_mark: str = BEGIN_MARK, end_mark: str = END_MARK) -> tuple[int, int]:
    begin, end = text.count(begin_mark), text.count(end_mark)
    if begin != 1 or end != 1:
        raise ValueError(f"{where} must contain {begin_mark} and {end_mark} once each (found {begin} and {end}); "
                         "add them, on lines of their own, where the table goes")
    start, stop = text.index(begin_mark), text.index(end_mark)
    if stop < start:
        raise ValueError(f"{where}: {end_mark} comes before {begin_mark}")
    return start + len(begin_mark), stop


def replace_table(text: str, table: str, where: str = "README", begin_mark: str = BEGIN_MARK,
                  end_mark: str = END_MARK) -> str:
    """`text` with everything between the markers replaced by `table`."""
    start, stop = _markers(text, where, begin_mark, end_mark)
    return text[:start] + "\n" + table + text[stop:]


def update_readme(readme: str | os.PathLike, results_dir: str | os.PathLike, check: bool = False,
                  more_tables: Sequence[tuple[str, str, str]] = ()) -> bool:
    """Render the tables from results_dir into readme between their markers (the results
    table, and the TFLite accuracy table), and each of more_tables ((begin mark, end mark,
    Markdown), e.g. lightcnn.latency_record's) between its own.

    check=False: rewrite the file (atomically) if a table changed; check=True: change
    nothing. Returns True when the README already held the current tables.
    """
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    runs = load_runs(results_dir)
    updated = replace_table(text, render_table(runs), str(readme))
    updated = replace_table(updated, render_tflite_table(runs), str(readme), TFLITE_BEGIN_MARK, TFLITE_END_MARK)
    for begin_mark, end_mark, table in more_tables:
        updated = replace_table(updated, table, str(readme), begin_mark, end_mark)
    if updated == text:
        return True
    if not check:
        io.write_text(readme, updated)
    return False


# ---------------------------------------------------------------- recording a run


def cpu_description() -> dict:
    """{"model_name", "logical_cores", "vector_extensions"} of this machine (Linux /proc/cpuinfo;
    vector_extensions is None where it cannot be read)."""
    return cpu_facts(VECTOR_EXTENSIONS)


def record_run(results_dir: str | os.PathLike, run: dict, metrics_files: dict[str, str | os.PathLike]) -> Path:
    """Write docs/results/<run["name"]>/: run.json and copies of the metrics files
    (metrics_files: {"train": path, "eval": path, optionally "tflite", "latency"}).

    The folder appears complete or not at all (built under a temporary name, then renamed);
    an existing run folder is never overwritten. Returns the folder.
    """
    unknown = sorted(set(metrics_files) - set(METRICS_SUFFIXES))
    if unknown:
        raise ValueError(f"unknown metrics file kind(s) {unknown}; one of {', '.join(METRICS_SUFFIXES)}")
    with io.new_folder(results_dir, run["name"], "run") as folder:
        for kind, source in metrics_files.items():
            shutil.copyfile(source, folder / f"{run['model']}{METRICS_SUFFIXES[kind]}")
        io.write_json(folder / RUN_FILE, run)
        load_run(folder)  # a folder the table cannot read is never committed
    return Path(results_dir) / folder.name
