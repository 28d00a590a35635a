"""Recorded test-suite timings and the README table generated from them (never typed).

`python benchmarks/suite_time.py --record NAME` runs the README's test command, then writes
what it measured into a committed folder docs/suite-time/<NAME>/ (suite.json: the CPU, the
probes of the machine's speed before and after, the emulation of slower cores if any, the
wall time, the tests passed and failed, the summed time of each test file, the commit). The
README's suite-time table is rendered from every recorded folder, oldest first. A folder is
written complete or not at all, never overwritten.

Light on purpose: no TensorFlow or Keras import, so the README check runs in a second.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightcnn import io

SUITE_FILE = "suite.json"
SUITE_BEGIN_MARK = "<!-- suite-time-table:begin -->"
SUITE_END_MARK = "<!-- suite-time-table:end -->"
RECORD_FIELDS = ("name", "date", "git_commit", "git_dirty", "command", "cpu", "logical_cores", "avx512", "probe_before",
                 "probe_after", "emulation", "wall_seconds", "target_minutes", "pytest_exit", "pytest_args",
                 "tests", "files")
TEST_COUNTS = ("total", "failed", "errors", "skipped")


class SuiteRecordError(ValueError):
    """A suite-time folder that cannot be read: the message names the folder and the problem."""


def _check(condition: bool, folder: Path, message: str) -> None:
    if not condition:
        raise SuiteRecordError(f"{folder}: {message}")


def check_record(record: Any, folder: Path) -> dict:
    """The record if it holds what the table needs; else SuiteRecordError naming the problem."""
    _check(isinstance(record, dict), folder, f"{SUITE_FILE} must hold an object")
    missing = [field for field in RECORD_FIELDS if field not in record]
    _check(not missing, folder, f"{SUITE_FILE} lacks {', '.join(missing)}: was it written by suite_time.py --record?")
    _check(record["name"] == folder.name, folder, f"{SUITE_FILE} names {record['name']!r}, not its folder")
    tests = record["tests"]
    _check(isinstance(tests, dict) and all(isinstance(tests.get(key), int) for key in TEST_COUNTS), folder,
           f"'tests' must give the counts {', '.join(TEST_COUNTS)}")
    emulation = record["emulation"]
    _check(emulation is None or (isinstance(emulation, dict) and
                                 {"probe_inside_seconds", "probe_outside_seconds"} <= emulation.keys()), folder,
           "'emulation' must be null or give probe_inside_seconds and probe_outside_seconds")
    _check(isinstance(record["wall_seconds"], (int, float)) and record["wall_seconds"] > 0, folder,
           "'wall_seconds' must be a positive number")
    return record


def load_record(folder: str | os.PathLike) -> dict:
    """A recorded timing, checked (SuiteRecordError naming the problem otherwise)."""
    return check_record(io.read_json_in(folder, SUITE_FILE, SuiteRecordError), Path(folder))


def load_records(suite_dir: str | os.PathLike) -> list[dict]:
    """Every recorded timing in suite_dir, oldest first (by date, then name)."""
    records = [load_record(folder) for folder in io.finished_folders(suite_dir)]
    return sorted(records, key=lambda record: (record["date"], record["name"]))


def write_record(suite_dir: str | os.PathLike, record: dict) -> Path:
    """suite_dir/<record["name"]>/suite.json; complete or not at all, never overwrites."""
    with io.new_folder(suite_dir, record.get("name") or "", "suite-time record") as folder:
        io.write_json(folder / SUITE_FILE, check_record(record, folder))
    return Path(suite_dir) / record["name"]


def slowdown(record: dict) -> float | None:
    """How much slower the emulated cores ran the probe than this machine's own; None if not emulated."""
    emulation = record["emulation"]
    return None if emulation is None else emulation["probe_inside_seconds"] / emulation["probe_outside_seconds"]


def within_target(record: dict) -> bool:
    return record["pytest_exit"] == 0 and record["wall_seconds"] <= 60 * record["target_minutes"]


def minutes_and_seconds(seconds: float) -> str:
    """"5 min 07 s": how suite times are written, in the README's table and suite_time.py's output."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _the_goal_on_avx2(records: list[dict]) -> str:
    """What the records say of the goal as named: the whole suite on a CPU without AVX-512, not emulated."""
    real = [r for r in records if r["avx512"] is False and r["logical_cores"] == 2 and r["emulation"] is None
            and not r["pytest_args"]]
    if not real:
        return ("**The goal (under 15 min on 2 cores without AVX-512) has no record on such a CPU yet**: "
                "none was available. Run `python benchmarks/suite_time.py --record NAME` on one and commit "
                "its folder with the README.")
    newest = real[-1]
    verdict = "within" if within_target(newest) else "**over**"
    return (f"On a CPU without AVX-512 (newest: `{newest['name']}`, {newest['cpu']}), the suite took "
            f"{minutes_and_seconds(newest['wall_seconds'])}: {verdict} the {newest['target_minutes']:g}-minute goal.")


def render_suite_section(records: list[dict], suite_dir: str = "docs/suite-time") -> str:
    """The README's suite-time table: one row per recorded run, oldest first."""
    if not records:
        return (f"No suite timing recorded yet in `{suite_dir}/`: run `python benchmarks/suite_time.py "
                "--record NAME`.\n")
    lines = ["| record | date | commit | CPU | cores | tests passed | wall | within the goal | summed test time "
             "| probe before / after |",
             "| --- | --- | --- | --- | --- | ---: | ---: | --- | ---: | --- |"]
    for r in records:
        tests = r["tests"]
        passed = tests["total"] - tests["failed"] - tests["errors"] - tests["skipped"]
        factor = slowdown(r)
        cores = "as they are" if factor is None else f"emulated slower: probe {factor:.1f}x"
        commit = r["git_commit"][:7] + (" + changes" if r["git_dirty"] else "")
        subset = f" (only {' '.join(r['pytest_args'])})" if r["pytest_args"] else ""
        summed = sum(row["seconds"] for row in r["files"])
        lines.append(f"| `{r['name']}` | {r['date'][:10]} | {commit} | {r['cpu']} | {cores} "
                     f"| {passed} of {tests['total']}{subset} | {minutes_and_seconds(r['wall_seconds'])} "
                     f"| {'yes' if within_target(r) else '**no**'} (goal {r['target_minutes']:g} min) "
                     f"| {summed:.0f} s | {r['probe_before']['python_loop_seconds']:.2f} s / "
                     f"{r['probe_after']['python_loop_seconds']:.2f} s |")
    notes = [f"- `{r['name']}`: {r['notes']}" for r in records if r.get("notes")]
    lines += ["", *(["Notes recorded with the runs:", "", *notes, ""] if notes else []), _the_goal_on_avx2(records), "",
              "Wall time of the README's test command (`pytest`, two xdist workers) run by "
              "`benchmarks/suite_time.py`, without the install; summed test time adds up every test's own "
              "time over both workers; the probe is a loop of 10 million Python additions, timed before and "
              "after the suite, to show how fast the machine was then (its host's load moves it). "
              "\"Emulated slower\": `--slower-cores`, the suite beside a busy loop per core (the probe's "
              f"slowdown measured in and outside it). Generated by `python benchmarks/results_table.py` from "
              f"`{suite_dir}/`; do not edit by hand."]
    return "\n".join(lines) + "\n"
