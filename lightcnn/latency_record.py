"""Recorded CPU latency measurements and the README tables generated from them (never typed).

`benchmarks/bench_latency.py` measures every model and variant interleaved in one process
(lightcnn.latency.interleaved_latency) into benchmarks/results/ (scratch, git-ignored).
`python benchmarks/results_table.py record-latency` copies such a measurement into a
committed folder docs/latency/<name>/ (latency.json with a "record" saying what was
measured, at which commit and by which command; latency.md; op_profiles.md), and the
README's latency tables are rendered from the newest recorded folder. A folder is written
complete or not at all and never overwritten.

Light on purpose: no TensorFlow or LiteRT import, so the README check runs in a second.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightcnn import io
from lightcnn.export import VARIANTS as MAIN_VARIANTS
from lightcnn.latency import COMPARED_PAIRS, latency_markdown, levers_markdown

LATENCY_FILE = "latency.json"
COPIED_FILES = ("latency.md", "op_profiles.md")  # beside latency.json when the benchmark wrote them
LATENCY_BEGIN_MARK = "<!-- latency-table:begin -->"
LATENCY_END_MARK = "<!-- latency-table:end -->"
LEVERS_BEGIN_MARK = "<!-- int8-levers-table:begin -->"
LEVERS_END_MARK = "<!-- int8-levers-table:end -->"
CONTEXT_FIELDS = ("cpu", "logical_cores", "vector_extensions", "litert_version", "rounds", "runs_per_round",
                  "warmup", "threads", "load_average_before", "load_average_after", "started_at")
RESULT_FIELDS = ("model", "variant", "threads", "median_ms", "p90_ms", "ci95_low_ms", "ci95_high_ms")
RECORD_FIELDS = ("name", "what", "command", "git_commit", "date")


class LatencyFolderError(ValueError):
    """A latency folder that cannot be read: the message names the folder and the problem."""


def _check(condition: bool, folder: Path, message: str) -> None:
    if not condition:
        raise LatencyFolderError(f"{folder}: {message}")


def check_measurement(measurement: Any, folder: Path, recorded: bool = True) -> dict:
    """The measurement if it holds what the tables need; else LatencyFolderError naming the problem."""
    _check(isinstance(measurement, dict), folder, f"{LATENCY_FILE} must hold an object")
    context, results = measurement.get("context"), measurement.get("results")
    _check(isinstance(context, dict), folder, f"{LATENCY_FILE} has no 'context' (CPU, LiteRT, rounds, ...)")
    missing = [field for field in CONTEXT_FIELDS if field not in context]
    _check(not missing, folder, f"'context' lacks {', '.join(missing)}: was it written by bench_latency.py?")
    _check(isinstance(results, list) and bool(results), folder, f"{LATENCY_FILE} has no 'results'")
    for index, result in enumerate(results):
        missing = [field for field in RESULT_FIELDS if field not in result]
        _check(not missing, folder, f"results[{index}] lacks {', '.join(missing)}")
    measured = {(r["model"], r["variant"], r["threads"]) for r in results}
    models = sorted({r["model"] for r in results})
    absent = [f"{model} {variant} ({count} thread(s))" for model in models for variant in MAIN_VARIANTS
              for count in context["threads"] if (model, variant, count) not in measured]
    _check(not absent, folder, f"no latency for {', '.join(absent)}: the tables need every model in "
                               f"{', '.join(MAIN_VARIANTS)} at every thread count")
    if recorded:
        record = measurement.get("record")
        _check(isinstance(record, dict), folder, f"{LATENCY_FILE} has no 'record' (made by record-latency)")
        missing = [field for field in RECORD_FIELDS if not isinstance(record.get(field), str) or not record[field]]
        _check(not missing, folder, f"'record' lacks {', '.join(missing)}")
        _check(record["name"] == folder.name, folder, f"'record' names {record['name']!r}, not its folder")
    return measurement


def load_latency(folder: str | os.PathLike) -> dict:
    """A recorded measurement, checked (LatencyFolderError naming the problem otherwise)."""
    return check_measurement(io.read_json_in(folder, LATENCY_FILE, LatencyFolderError), Path(folder))


def latest_latency(latency_dir: str | os.PathLike) -> dict | None:
    """The newest recorded measurement in latency_dir (by record date, then the time it started); None if
    there is none."""
    measurements = [load_latency(folder) for folder in io.finished_folders(latency_dir)]
    if not measurements:
        return None
    return max(measurements, key=lambda m: (m["record"]["date"], m["context"]["started_at"], m["record"]["name"]))


def record_latency(latency_dir: str | os.PathLike, source_dir: str | os.PathLike, record: dict) -> Path:
    """Copy bench_latency.py's output in source_dir into latency_dir/<record["name"]>/ with `record`
    (RECORD_FIELDS; a missing command is taken from the measurement) added to its latency.json.
    Complete or not at all; never overwrites."""
    source_dir = Path(source_dir)
    source = source_dir / LATENCY_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: run `python benchmarks/bench_latency.py` first "
                                "(or pass --from the folder it wrote)")
    measurement = check_measurement(io.read_json_in(source_dir, LATENCY_FILE, LatencyFolderError), source_dir,
                                    recorded=False)
    # The command: as given, else the one bench_latency.py wrote into the measurement.
    record = {**record, "command": record.get("command") or measurement["context"].get("command")}
    if not record["command"]:
        raise ValueError(f"{source} names no command (written before bench_latency.py recorded it): pass --command")
    with io.new_folder(latency_dir, record.get("name") or "", "measurement") as folder:
        io.write_json(folder / LATENCY_FILE, {**measurement, "record": record})
        for file_name in COPIED_FILES:
            if (source_dir / file_name).is_file():
                shutil.copyfile(source_dir / file_name, folder / file_name)
        load_latency(folder)  # a folder the README cannot render is never kept
    return Path(latency_dir) / folder.name


def main_results(measurement: dict) -> dict:
    """The measurement restricted to the exported variants (float32, float16, int8), without levers."""
    return {**measurement, "results": [r for r in measurement["results"] if r["variant"] in MAIN_VARIANTS]}


def _models_line(measurement: dict) -> str:
    models = measurement["context"].get("models") or {}
    if not models:
        return ""
    described = [f"{name}: {source}" for name, source in models.items()]
    return "Models: " + "; ".join(described) + "."


def render_latency_section(measurement: dict | None, latency_dir: str = "docs/latency",
                           pairs: dict[str, str] | None = None) -> str:
    """The README's latency tables (float32, float16, int8 per thread count) and the time ratios
    of each measured pair ({model: the model it is compared with}; default ours / MobileNetV3)."""
    if measurement is None:
        return (f"No latency measurement recorded yet in `{latency_dir}/`: run `python benchmarks/bench_latency.py`, "
                "then `python benchmarks/results_table.py record-latency --name ... --what ...`.\n")
    record = measurement["record"]
    header = [f"Measurement `{record['name']}` ({record['date']}, commit {record['git_commit'][:7]}; "
              f"files in `{latency_dir}/{record['name']}/`, op profiles in its `op_profiles.md`): "
              f"{record['what']}. Command: `{record['command']}`.", ""]
    models = _models_line(measurement)
    if models:
        header += [models, ""]
    return "\n".join(header) + "\n" + latency_markdown(main_results(measurement),
                                                       COMPARED_PAIRS if pairs is None else pairs)


def render_levers_section(measurement: dict | None) -> str:
    """The README's int8-levers table (speed of each int8 recipe vs float32, top-1 where trained)."""
    if measurement is None or not any(r["variant"] not in MAIN_VARIANTS for r in measurement["results"]):
        return "The newest recorded measurement timed no int8 levers (run bench_latency.py with `--levers`).\n"
    return levers_markdown(measurement)
