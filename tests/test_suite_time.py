"""benchmarks/suite_time.py: the rerunnable check of the suite-time target, on one small file."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lightcnn import suite_record
from tests.conftest import PROJECT_ROOT, load_benchmark


def cgroup_root_for_slower_cores() -> Path | None:
    """Where --slower-cores would make its cgroup (the script's own choice), if this machine lets
    it: a container may show the cgroup files and still refuse a new cgroup."""
    suite_time = load_benchmark("suite_time")
    try:
        root = suite_time._cpu_cgroup_root()
        (root / f"lightcnn-suite-time-check-{os.getpid()}").mkdir()
        (root / f"lightcnn-suite-time-check-{os.getpid()}").rmdir()
    except (suite_time.EmulationUnavailable, OSError):
        return None
    return root


CPU = r".+, \d+ logical cores, (AVX-512|AVX2, no AVX-512|no AVX2|flags unknown)"


def run_suite_time(*args: str, exit_status: int = 1) -> tuple[subprocess.Popen, str, str]:
    """benchmarks/suite_time.py with a target of 0 minutes: a suite that passes is over it (exit 1)."""
    script = subprocess.Popen([sys.executable, "benchmarks/suite_time.py", "--target-minutes", "0", *args],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output, errors = script.communicate(timeout=600)
    finally:
        script.kill()
    assert script.returncode == exit_status, output[-3000:] + errors[-3000:]
    assert re.search(r"^CPU: .+, \d+ logical cores, (AVX-512|AVX2, no AVX-512|no AVX2)$", output, re.M), output
    if exit_status == 1:
        assert len(re.findall(r"^probe (before|after): python loop \d+\.\d\d s, numpy matmul \d+\.\d\d s$",
                              output, re.M)) == 2, output
        assert re.search(r"^suite: \d+ min \d\d s wall \(pytest exit 0\); OVER the 0-minute target$", output,
                         re.M), output
    return script, output, errors


RECORD_NAME = "one-file"
NOTES = "one file's tests, to test the record"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, Path]:
    """suite_time.py around one small file, recording what it measured: (its output, record dir)."""
    tmp_path = tmp_path_factory.mktemp("suite-time")
    # -v undoes the script's -q: the README's plain `pytest`, header included
    _, output, _ = run_suite_time("--record", RECORD_NAME, "--record-dir", str(tmp_path / "records"),
                                  "--notes", NOTES, "--",
                                  "tests/test_latency_record.py", "-v", "-p", "no:cacheprovider",
                                  f"--basetemp={tmp_path / 'inner'}")
    return output, tmp_path / "records"


def test_suite_time_reports_cpu_probe_verdict_and_time_per_file(recorded):
    """The script around the README's test command as it runs (two xdist workers), whose own
    log also names its CPU: in its header, and once, from the controller, beside its wall
    time (a CI log is a figure with its machine, whatever machine CI ran on)."""
    output, _ = recorded
    (row,) = re.findall(r"^ +(\d+\.\d) s +(\d+) tests +test_latency_record\.py$", output, re.M)
    assert int(row[1]) >= 4 and float(row[0]) > 0, row
    assert re.search(rf"^cpu: {CPU}$", output, re.M), output[:3000]
    summaries = re.findall(rf"^suite time: \d+ min \d\d s wall on {CPU} \(the goal: under 15 min", output, re.M)
    assert len(summaries) == 1, output[-3000:]  # the controller's only, not one per worker


def test_the_record_holds_what_was_printed_and_renders_as_a_table_row(recorded):
    """--record writes what the run printed (CPU, probes, wall time, tests, per-file time) and
    the commit; the README table shows it as a run of one file, and says what a run on a CPU
    without AVX-512 (the goal's machine) would say."""
    output, record_dir = recorded
    record = suite_record.load_record(record_dir / RECORD_NAME)
    assert f"CPU: {record['cpu']}" in output and record["logical_cores"] == os.cpu_count()
    assert "README.md left as it was" in output  # a record kept elsewhere than docs/suite-time
    assert record["avx512"] is record["cpu"].endswith(", AVX-512")
    assert f"probe before: python loop {record['probe_before']['python_loop_seconds']:.2f} s" in output
    minutes, seconds = divmod(round(record["wall_seconds"]), 60)
    assert f"suite: {minutes} min {seconds:02d} s wall (pytest exit 0)" in output
    assert record["tests"] == {"total": int(re.search(r"(\d+) passed", output).group(1)), "failed": 0,
                               "errors": 0, "skipped": 0}
    assert [f["file"] for f in record["files"]] == ["test_latency_record.py"] and record["files"][0]["seconds"] > 0
    assert record["pytest_args"][0] == "tests/test_latency_record.py" and record["emulation"] is None
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"]), record["git_commit"]
    command = shlex.split(record["command"])  # the command as run, quoted to be run again
    assert command[:4] == ["python", "benchmarks/suite_time.py", "--target-minutes", "0"]
    assert command[-len(record["pytest_args"]):] == record["pytest_args"] and RECORD_NAME in command

    table = suite_record.render_suite_section([record], "records")
    (row,) = [line for line in table.splitlines() if line.startswith(f"| `{RECORD_NAME}` |")]
    assert f"{record['tests']['total']} of {record['tests']['total']} (only tests/test_latency_record.py" in row
    assert "| as they are |" in row and "**no** (goal 0 min)" in row  # a target of 0: over it
    assert "has no record on such a CPU yet" in table  # a run of one file says nothing of the goal
    assert f"- `{RECORD_NAME}`: {NOTES}" in table
    on_the_goals_machine = {**record, "avx512": False, "logical_cores": 2, "pytest_args": [], "target_minutes": 15}
    assert "the suite took" in suite_record.render_suite_section([on_the_goals_machine])


def test_a_record_name_in_use_or_malformed_is_refused_before_the_suite_runs(recorded):
    _, record_dir = recorded
    for name, problem in ((RECORD_NAME, "exists already"), ("a/b", "plain folder name")):
        _, output, errors = run_suite_time("--record", name, "--record-dir", str(record_dir), "--", "--version",
                                           exit_status=2)
        assert problem in errors and "probe before" not in output, output + errors


def test_a_record_missing_a_field_is_refused_by_name(recorded, tmp_path):
    _, record_dir = recorded
    record = suite_record.load_record(record_dir / RECORD_NAME)
    del record["wall_seconds"]
    with pytest.raises(suite_record.SuiteRecordError, match="lacks wall_seconds"):
        suite_record.write_record(tmp_path, {**record, "name": "broken"})
    assert not (tmp_path / "broken").exists()


def test_slower_cores_measure_their_slowdown_and_leave_nothing_behind():
    """Where the machine allows it (--slower-cores): the command runs in the script's cgroup
    beside a busy loop per core, the slowdown reached is printed (measured, not asserted: it
    depends on what else runs), and afterwards the cgroup and the loops are gone. The command
    here is `pytest --version`: what is checked is the emulation, not a suite. Where the
    machine refuses a cgroup, the script says why and exits 2, before running anything."""
    cgroup_root = cgroup_root_for_slower_cores()
    if cgroup_root is None:
        _, output, errors = run_suite_time("--slower-cores", "--", "--version", exit_status=2)
        assert re.match(r"error: --slower-cores (needs|found|cannot) ", errors), errors[-3000:]
        assert "suite:" not in output and "Traceback" not in errors, output + errors
        return
    loops_before = busy_loops()  # e.g. the suite's own, when it runs under --slower-cores itself
    # One probe run each side, not the median of 3: the busy loops, at a raised priority, take
    # both cores from the other test worker while they run.
    script, output, errors = run_suite_time("--slower-cores", "--probe-repeats", "1", "--", "--version")
    assert re.search(r"^slower cores: a busy loop at nice -3 on each of \d+ cores; the Python probe took "
                     r"\(median of 1\) \d+\.\d\d s in the emulation against \d+\.\d\d s outside it: "
                     r"\d+\.\dx slower$", output, re.M), output
    assert "could not remove" not in errors, errors[-3000:]
    assert not (cgroup_root / f"lightcnn-suite-time-{script.pid}").exists()
    assert busy_loops() - loops_before == set()


def busy_loops() -> set[int]:
    """The pids of the processes running suite_time.py's busy loop."""
    return {int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _arguments(pid) == b"-c\0while True: pass\0"}


def test_a_junit_xml_of_the_callers_own_is_the_one_read(tmp_path):
    """pytest keeps only the last --junitxml: the script reads the caller's, and adds none."""
    suite_time = load_benchmark("suite_time")
    default = tmp_path / "suite.xml"
    assert suite_time.junit_xml_path(["-x"], default) == (default, [f"--junitxml={default}", "-x"])
    mine = tmp_path / "mine.xml"
    for args in ([f"--junitxml={mine}"], ["--junitxml", str(mine), "-x"], [f"--junit-xml={mine}"]):
        assert suite_time.junit_xml_path(args, default) == (mine, args)
    assert suite_time.junit_xml_path(["--junitxml=out/suite.xml"], default)[0] == PROJECT_ROOT / "out" / "suite.xml"


def _arguments(pid: str) -> bytes:
    """A process's command line after its program."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[-1]
    except OSError:
        return b""
