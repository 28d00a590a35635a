"""Time the test suite on this machine, with what it needs to be read: the CPU, and how fast
the machine was just before and after (a fixed probe), since a shared host's speed varies.

    python benchmarks/suite_time.py [--target-minutes 15] [--slower-cores] [--record NAME] [-- pytest arguments]

Runs the README's test command (`pytest`, the project's settings: two xdist workers) from the
project root in the current environment, then prints: the CPU (model, logical cores, whether
it has AVX-512), the probe before and after (10 million Python additions; 10 float32 matrix
products of 1500x1500 in NumPy), the suite's wall time against the target, and the summed
test time per file, longest first. Exit status: pytest's, or 1 if the suite passed but took
longer than the target. --record NAME also writes all of it to docs/suite-time/NAME/suite.json
(lightcnn/suite_record.py) and regenerates the README's suite-time table from those folders
(`python benchmarks/results_table.py`), so that the next run's README check passes: commit both.

--slower-cores runs the suite on cores made about three times slower, to see it on a machine
like the slowest of ours (2.7x slower on this suite: a 2-core CPU without AVX-512) when none is
at hand. Every core gets a busy loop pinned to it at nice -3, which the scheduler gives 1991
shares of the core for each 1024 of a process of the suite (nice 0): the suite's processes get
about a third of each core, whichever core they run on and however many run at once. The loops
and the suite share one cgroup made for the run, since Linux weighs processes against each
other only within a group (sessions are groups of their own otherwise: autogroup). Linux and
root only. What it does not slow: waits (sleeps, timeouts, the network on 127.0.0.1) and the
disk, as on a slower CPU; the slowdown reached is measured (the Python probe, inside the
emulation against outside it, the median of --probe-repeats runs) and printed.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import datetime
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lightcnn import io, suite_record  # noqa: E402
from lightcnn.machine import describe_cpu, read_cpuinfo  # noqa: E402

DEFAULT_RECORD_DIR = PROJECT_ROOT / "docs" / "suite-time"


def python_loop_seconds() -> float:
    start = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.perf_counter() - start


def probe() -> dict[str, float]:
    """How fast the machine is right now: pure Python, then NumPy matrix products."""
    import numpy as np

    python_s = python_loop_seconds()
    matrix = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    start = time.perf_counter()
    for _ in range(10):  # about 0.3 s on 2 cores, as long as the Python loop
        matrix @ matrix
    return {"python_loop_seconds": round(python_s, 3), "matmul_seconds": round(time.perf_counter() - start, 3)}


def describe_probe(speed: dict[str, float]) -> str:
    return f"python loop {speed['python_loop_seconds']:.2f} s, numpy matmul {speed['matmul_seconds']:.2f} s"


def per_file(junit_xml: Path) -> list[tuple[str, float, int]]:
    """(file, summed test seconds, tests) from pytest's JUnit XML, longest first."""
    seconds: dict[str, float] = collections.Counter()
    tests: dict[str, int] = collections.Counter()
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        name = case.get("classname", "?").split(".")[-1] + ".py"
        seconds[name] += float(case.get("time", 0))
        tests[name] += 1
    return sorted(((name, seconds[name], tests[name]) for name in seconds), key=lambda row: -row[1])


def junit_counts(junit_xml: Path) -> dict[str, int]:
    """{"total", "failed", "errors", "skipped"} from pytest's JUnit XML (all zero if it wrote none)."""
    counts = dict.fromkeys(suite_record.TEST_COUNTS, 0)
    if junit_xml.exists():
        for suite in ElementTree.parse(junit_xml).iter("testsuite"):
            for key, attribute in (("total", "tests"), ("failed", "failures"), ("errors", "errors"),
                                   ("skipped", "skipped")):
                counts[key] += int(suite.get(attribute, 0))
    return counts


def git_state() -> tuple[str, bool]:
    """(commit, whether tracked files differ from it) of the project; ("unknown", True) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout

    try:
        return git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def junit_xml_path(pytest_args: list[str], default: Path) -> tuple[Path, list[str]]:
    """Where pytest will write its JUnit XML, and the arguments that say so: the caller's own
    --junitxml if given (pytest keeps only the last one: adding ours would silently drop
    theirs), else `default`, added. A relative path is the project root's, pytest's cwd here."""
    for index, arg in enumerate(pytest_args):
        option, _, value = arg.partition("=")
        if option in ("--junitxml", "--junit-xml"):
            value = value or (pytest_args[index + 1] if index + 1 < len(pytest_args) else "")
            if value:
                return PROJECT_ROOT / value, pytest_args
    return default, [f"--junitxml={default}", *pytest_args]


BUSY_LOOP_NICE = -3  # weight 1991 against 1024 at nice 0: the suite keeps about 1024/3015 of a core
PR_SET_PDEATHSIG = 1  # linux/prctl.h
CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"))  # cgroup v1's cpu hierarchy, v2


class EmulationUnavailable(RuntimeError):
    pass


def _cpu_cgroup_root() -> Path:
    """Where a cgroup with the cpu controller can be made: v1's cpu hierarchy, or v2's root with
    cpu among its controllers."""
    if sys.platform != "linux":
        raise EmulationUnavailable("--slower-cores needs Linux (a cgroup of its own)")
    if os.geteuid() != 0:
        raise EmulationUnavailable("--slower-cores needs root (a cgroup, and busy loops at a negative nice)")
    v1, v2 = CGROUP_ROOTS
    if (v1 / "cgroup.procs").exists():
        return v1
    controllers = v2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        if "cpu" not in (v2 / "cgroup.subtree_control").read_text().split():
            raise EmulationUnavailable("--slower-cores needs the cpu controller enabled for child cgroups: "
                                       "echo +cpu > /sys/fs/cgroup/cgroup.subtree_control")
        return v2
    raise EmulationUnavailable("--slower-cores found no cgroup cpu controller (neither cgroup v1's "
                               "/sys/fs/cgroup/cpu nor cpu in /sys/fs/cgroup/cgroup.controllers)")


def _join(cgroup: Path) -> None:
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))


@contextlib.contextmanager
def slower_cores():
    """A cgroup holding one busy loop per core at BUSY_LOOP_NICE; yields a preexec_fn that puts a
    child process into it. The loops are killed and the cgroup removed on the way out."""
    cgroup = _cpu_cgroup_root() / f"lightcnn-suite-time-{os.getpid()}"
    try:
        cgroup.mkdir()
    except OSError as error:
        raise EmulationUnavailable(f"--slower-cores cannot make a cgroup: {error}") from None
    loops: list[subprocess.Popen] = []

    def busy_loop_on(core: int):
        def setup() -> None:
            _join(cgroup)
            os.sched_setaffinity(0, {core})
            os.nice(BUSY_LOOP_NICE)
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # no loop outlives this script
        return setup

    try:
        try:
            for core in sorted(os.sched_getaffinity(0)):
                loops.append(subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"], preexec_fn=busy_loop_on(core),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # no pipe of ours
        except (OSError, subprocess.SubprocessError) as error:  # e.g. joining the cgroup refused
            raise EmulationUnavailable(f"--slower-cores cannot start its busy loops in {cgroup}: {error}") from None
        yield lambda: _join(cgroup)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        deadline = time.time() + 30
        while True:  # the suite's last processes may take a moment to leave
            try:
                cgroup.rmdir()
                break
            except OSError:
                if time.time() > deadline:
                    print(f"could not remove {cgroup}: processes still in it", file=sys.stderr)
                    break
                time.sleep(0.5)


def python_loop_seconds_in(preexec_fn=None, repeats: int = 3) -> float:
    """The probe's Python loop, run in child processes (started with `preexec_fn`): the median
    of `repeats` runs, since one run of under a second is at the mercy of the scheduler."""
    return statistics.median(
        float(subprocess.run([sys.executable, __file__, "--python-loop-only"], preexec_fn=preexec_fn,
                             capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-minutes", type=float, default=15.0)
    parser.add_argument("--slower-cores", action="store_true",
                        help="run the suite on cores made about 3x slower (see the module's docstring)")
    parser.add_argument("--probe-repeats", type=int, default=3,
                        help="with --slower-cores: runs of the Python probe in and outside the emulation, "
                             "of which the median is taken (default 3)")
    parser.add_argument("--record", metavar="NAME", default=None,
                        help="write what was measured to RECORD_DIR/NAME/suite.json (the README's suite-time "
                             "table is generated from these folders); refused before the run if NAME exists")
    parser.add_argument("--record-dir", type=Path, default=DEFAULT_RECORD_DIR,
                        help="where --record writes (default docs/suite-time)")
    parser.add_argument("--notes", default=None, help="with --record: anything the figures need, e.g. 'fresh clone'")
    parser.add_argument("--python-loop-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()
    if args.python_loop_only:
        print(python_loop_seconds())
        return 0
    if args.slower_cores and args.probe_repeats < 1:
        parser.error(f"--probe-repeats {args.probe_repeats}: give 1 or more")
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"CPU: {describe_cpu()}")
    if args.record is not None:
        try:
            io.check_new_folder(args.record_dir, args.record, "suite-time record")  # now, not after the suite
        except (ValueError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    before = probe()
    print(f"probe before: {describe_probe(before)}", flush=True)
    emulation = None
    with contextlib.ExitStack() as stack:
        preexec_fn = None
        if args.slower_cores:
            outside = python_loop_seconds_in(repeats=args.probe_repeats)  # before the busy loops start
            try:
                preexec_fn = stack.enter_context(slower_cores())
            except EmulationUnavailable as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            inside = python_loop_seconds_in(preexec_fn, args.probe_repeats)
            print(f"slower cores: a busy loop at nice {BUSY_LOOP_NICE} on each of {len(os.sched_getaffinity(0))} "
                  f"cores; the Python probe took (median of {args.probe_repeats}) {inside:.2f} s in the emulation against "
                  f"{outside:.2f} s outside it: {inside / outside:.1f}x slower", flush=True)
            emulation = {"kind": "busy loop per core", "busy_loop_nice": BUSY_LOOP_NICE,
                         "probe_repeats": args.probe_repeats, "probe_inside_seconds": round(inside, 3),
                         "probe_outside_seconds": round(outside, 3)}
        scratch = stack.enter_context(tempfile.TemporaryDirectory())
        junit, pytest_args = junit_xml_path(args.pytest_args, Path(scratch) / "suite.xml")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args], cwd=PROJECT_ROOT,
                                preexec_fn=preexec_fn)
        wall = round(time.perf_counter() - start, 1)  # as recorded: the printed minutes are the record's
        files = per_file(junit) if junit.exists() else []
        counts = junit_counts(junit)
    after = probe()
    print(f"probe after: {describe_probe(after)}")
    verdict = "within" if wall <= args.target_minutes * 60 else "OVER"
    print(f"suite: {suite_record.minutes_and_seconds(wall)} wall (pytest exit {result.returncode}); {verdict} the "
          f"{args.target_minutes:g}-minute target")
    print(f"summed test time {sum(row[1] for row in files):.0f} s over {sum(row[2] for row in files)} tests:")
    for name, total, count in files:
        print(f"  {total:7.1f} s  {count:4d} tests  {name}")
    if args.record is not None:
        commit, dirty = git_state()
        _, flags = read_cpuinfo()
        record = {
            "name": args.record, "date": started_at, "git_commit": commit, "git_dirty": dirty,
            "command": shlex.join(["python", "benchmarks/suite_time.py", *sys.argv[1:]]),
            "cpu": describe_cpu(), "logical_cores": os.cpu_count() or 0,
            "avx512": None if flags is None else "avx512f" in flags, "python": sys.version.split()[0],
            "probe_before": before, "probe_after": after, "emulation": emulation,
            "wall_seconds": wall, "target_minutes": args.target_minutes, "pytest_exit": result.returncode,
            "pytest_args": args.pytest_args, "tests": counts,
            "files": [{"file": name, "seconds": round(total, 2), "tests": count} for name, total, count in files]}
        if args.notes:
            record["notes"] = args.notes
        folder = suite_record.write_record(args.record_dir, record)
        print(f"recorded {folder}")
        if args.record_dir.resolve() == DEFAULT_RECORD_DIR.resolve():
            # The README's table at once: else the next run's README check fails on the new record.
            table = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "results_table.py")],
                                   cwd=PROJECT_ROOT)
            print("commit the record and README.md together" if table.returncode == 0 else
                  "the README's tables could not be regenerated (above): the record is kept; fix, then run "
                  "`python benchmarks/results_table.py`")
        else:
            print(f"not this project's {DEFAULT_RECORD_DIR.relative_to(PROJECT_ROOT)}: README.md left as it was")
    return result.returncode or (1 if verdict == "OVER" else 0)


if __name__ == "__main__":
    sys.exit(main())
