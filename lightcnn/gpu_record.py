"""Recorded GPU comparisons and the README table generated from them (never typed).

`benchmarks/gpu_comparison.py --output DIR/comparison.json --log-dir DIR` trains the four
models on one accelerator and writes their figures and training logs into DIR.
`python benchmarks/results_table.py record-gpu --from DIR ...` copies them into a committed
folder docs/gpu/<name>/ (comparison.json with a "record" saying what ran where, on which
data, with which recipe and command; the logs), and the README's GPU table is rendered from
the newest recorded folder. A folder is written complete or not at all, never overwritten.

Light on purpose: no Keras or JAX import, so the README check runs in a second.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightcnn import io
from lightcnn.study import PUBLISHED_ACCURACY, STUDY_PROTOCOL_SUMMARY

GPU_FILE = "comparison.json"
LOG_PATTERNS = ("train-*.log", "run.log")  # beside comparison.json when the script wrote them
GPU_BEGIN_MARK = "<!-- gpu-table:begin -->"
GPU_END_MARK = "<!-- gpu-table:end -->"
ROW_FIELDS = ("model", "device", "precision", "epochs", "batch_size", "train_images", "test_images",
              "test_accuracy", "best_val_accuracy", "best_epoch", "train_seconds", "images_per_second",
              "device_peak_bytes", "params")
# What the comparison file cannot say by itself, given when it is recorded.
RECORD_FIELDS = ("name", "what", "command", "git_commit", "date", "machine", "software", "training_data", "recipe")


class GpuFolderError(ValueError):
    """A GPU comparison folder that cannot be read: the message names the folder and the problem."""


def _check(condition: bool, folder: Path, message: str) -> None:
    if not condition:
        raise GpuFolderError(f"{folder}: {message}")


def check_comparison(comparison: Any, folder: Path, recorded: bool = True) -> dict:
    """The comparison if it holds what the table needs; else GpuFolderError naming the problem."""
    _check(isinstance(comparison, dict), folder, f"{GPU_FILE} must hold an object")
    rows = comparison.get("rows")
    _check(isinstance(rows, list) and bool(rows), folder,
           f"{GPU_FILE} has no 'rows': did gpu_comparison.py finish a model?")
    _check(isinstance(comparison.get("jobs"), int), folder,
           f"{GPU_FILE} has no 'jobs' (models trained at once): written by an older gpu_comparison.py?")
    for index, row in enumerate(rows):
        missing = [field for field in ROW_FIELDS if field not in row]
        _check(not missing, folder, f"rows[{index}] lacks {', '.join(missing)}")
    models = [row["model"] for row in rows]
    _check(len(set(models)) == len(models), folder, f"a model appears twice in 'rows' ({', '.join(models)})")
    if recorded:
        record = comparison.get("record")
        _check(isinstance(record, dict), folder, f"{GPU_FILE} has no 'record' (made by record-gpu)")
        missing = [field for field in RECORD_FIELDS if not isinstance(record.get(field), str) or not record[field]]
        _check(not missing, folder, f"'record' lacks {', '.join(missing)}")
        _check(record["name"] == folder.name, folder, f"'record' names {record['name']!r}, not its folder")
    return comparison


def load_gpu_comparison(folder: str | os.PathLike) -> dict:
    """A recorded comparison, checked (GpuFolderError naming the problem otherwise)."""
    return check_comparison(io.read_json_in(folder, GPU_FILE, GpuFolderError), Path(folder))


def latest_gpu_comparison(gpu_dir: str | os.PathLike) -> dict | None:
    """The newest recorded comparison in gpu_dir (by record date, then name); None if there is none."""
    comparisons = [load_gpu_comparison(folder) for folder in io.finished_folders(gpu_dir)]
    if not comparisons:
        return None
    return max(comparisons, key=lambda c: (c["record"]["date"], c["record"]["name"]))


def record_gpu_comparison(gpu_dir: str | os.PathLike, source_dir: str | os.PathLike, record: dict) -> Path:
    """Copy gpu_comparison.py's output in source_dir (comparison.json and its logs) into
    gpu_dir/<record["name"]>/ with `record` (RECORD_FIELDS) added. Complete or not at all;
    never overwrites."""
    source_dir = Path(source_dir)
    if not (source_dir / GPU_FILE).is_file():
        raise FileNotFoundError(f"{source_dir / GPU_FILE} not found: run benchmarks/gpu_comparison.py with "
                                f"--output {source_dir / GPU_FILE} --log-dir {source_dir} first")
    comparison = check_comparison(io.read_json_in(source_dir, GPU_FILE, GpuFolderError), source_dir, recorded=False)
    with io.new_folder(gpu_dir, record.get("name") or "", "comparison") as folder:
        io.write_json(folder / GPU_FILE, {**comparison, "record": record})
        for pattern in LOG_PATTERNS:
            for log in sorted(source_dir.glob(pattern)):
                shutil.copyfile(log, folder / log.name)
        load_gpu_comparison(folder)  # a folder the README cannot render is never kept
    return Path(gpu_dir) / folder.name


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_gpu_section(comparison: dict | None, gpu_dir: str = "docs/gpu", dataset: str = "cifar10") -> str:
    """The README's GPU section: what ran where, then one row per model beside the study's figure."""
    if comparison is None:
        return (f"No GPU comparison recorded yet in `{gpu_dir}/`: run `bash benchmarks/gpu_comparison.sh run ... "
                "--output DIR/comparison.json --log-dir DIR` on a GPU machine, then "
                "`python benchmarks/results_table.py record-gpu --from DIR --name ...`.\n")
    record, rows = comparison["record"], comparison["rows"]
    shared = len(rows) > 1 and comparison["jobs"] > 1
    lines = [
        f"Comparison `{record['name']}` ({record['date']}, commit {record['git_commit'][:7]}; files in "
        f"`{gpu_dir}/{record['name']}/`, with each model's per-epoch log): {_escape(record['what'])}.",
        "",
        f"- **Machine:** {record['machine']}; {record['software']}.",
        f"- **Data:** {record['training_data']}.",
        f"- **Recipe:** {record['recipe']}; {rows[0]['epochs']} epochs, batch {rows[0]['batch_size']}.",
        f"- **Command:** `{record['command']}`"
        + (f" ({comparison['jobs']} models trained at once on the one device: each images/s is that model's "
           "share of it, not its speed alone)." if shared else "."),
        f"- **The study** (its published figure in the table): {STUDY_PROTOCOL_SUMMARY}.",
    ]
    if record.get("notes"):
        lines.append(f"- **Notes:** {record['notes']}")
    lines += ["", "| model | test top-1 | the study's top-1 | best val acc (epoch) | training time | images/s "
                  "| peak device memory | params |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    published = PUBLISHED_ACCURACY.get(dataset, {})
    for row in rows:
        study = f"{100 * published[row['model']]:.2f}%" if row["model"] in published else "-"
        memory = "n/a" if row["device_peak_bytes"] is None else f"{row['device_peak_bytes'] / 2**30:.2f} GiB"
        lines.append(f"| `{row['model']}` | {100 * row['test_accuracy']:.2f}% | {study} "
                     f"| {100 * row['best_val_accuracy']:.2f}% ({row['best_epoch']}) "
                     f"| {row['train_seconds'] / 60:.1f} min | {row['images_per_second']:,.0f} | {memory} "
                     f"| {row['params']:,} |")
    lines += ["", f"Test top-1 on the {rows[0]['test_images']:,} test images, of the best-validation epoch's "
                  "model; training time is the whole training call (compilation, validation and checkpoint "
                  "writes included); images/s leaves the first epoch (compilation) out. Generated by "
                  f"`python benchmarks/results_table.py` from `{gpu_dir}/`; do not edit by hand."]
    return "\n".join(lines) + "\n"
