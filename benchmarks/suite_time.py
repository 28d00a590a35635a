"""Time the test suite on this machine, with what it needs to be read: the CPU, and how fast
the machine was just before and after (a fixed probe), since a shared host's speed varies.

    python benchmarks/suite_time.py [--target-minutes 15] [-- extra pytest arguments]

Runs the README's test command (`pytest`, the project's settings: two xdist workers) from the
project root in the current environment, then prints: the CPU (model, logical cores, whether
it has AVX-512), the probe before and after (10 million Python additions; 40 float32 matrix
products of 1500x1500 in NumPy), the suite's wall time against the target, and the summed
test time per file, longest first. Exit status: pytest's, or 1 if the suite passed but took
longer than the target.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from lightcnn.machine import describe_cpu

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def probe() -> str:
    """How fast the machine is right now: pure Python, then NumPy matrix products."""
    import numpy as np

    start = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    python_s = time.perf_counter() - start
    matrix = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    start = time.perf_counter()
    for _ in range(40):
        matrix @ matrix
    return f"python loop {python_s:.2f} s, numpy matmul {time.perf_counter() - start:.2f} s"


def per_file(junit_xml: Path) -> list[tuple[str, float, int]]:
    """(file, summed test seconds, tests) from pytest's JUnit XML, longest first."""
    seconds: dict[str, float] = collections.Counter()
    tests: dict[str, int] = collections.Counter()
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        name = case.get("classname", "?").split(".")[-1] + ".py"
        seconds[name] += float(case.get("time", 0))
        tests[name] += 1
    return sorted(((name, seconds[name], tests[name]) for name in seconds), key=lambda row: -row[1])


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-minutes", type=float, default=15.0)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}")
    print(f"probe before: {probe()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        junit, pytest_args = junit_xml_path(args.pytest_args, Path(scratch) / "suite.xml")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args], cwd=PROJECT_ROOT)
        wall = time.perf_counter() - start
        files = per_file(junit) if junit.exists() else []
    print(f"probe after: {probe()}")
    minutes, seconds = divmod(round(wall), 60)
    verdict = "within" if wall <= args.target_minutes * 60 else "OVER"
    print(f"suite: {minutes} min {seconds:02d} s wall (pytest exit {result.returncode}); {verdict} the "
          f"{args.target_minutes:g}-minute target")
    print(f"summed test time {sum(row[1] for row in files):.0f} s over {sum(row[2] for row in files)} tests:")
    for name, total, count in files:
        print(f"  {total:7.1f} s  {count:4d} tests  {name}")
    return result.returncode or (1 if verdict == "OVER" else 0)


if __name__ == "__main__":
    sys.exit(main())
