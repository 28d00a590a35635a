"""What a TensorFlow stage pays to start: `import keras` (TensorFlow backend) in a fresh Python,
as a stage process imports it (after `import pipeline`, which keeps TensorFlow's and Keras'
unused optional integrations from loading: pipeline/common/lean_imports.py) and as a plain
process does.

    python benchmarks/import_time.py [--runs 5]

The two kinds of process alternate, so that a shared host's drift touches both alike. Prints
the CPU, then per kind the median wall and CPU seconds (user + system) over the runs and
which of the skipped packages (scikit-learn, JAX, pandas, matplotlib) were loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lightcnn.machine import describe_cpu  # noqa: E402
from pipeline.common.lean_imports import SKIPPED_INTEGRATIONS  # noqa: E402

REPORT = f"import json, sys; print(json.dumps({{m: m in sys.modules for m in {tuple(SKIPPED_INTEGRATIONS)!r}}}))"
KINDS = {
    "stage process (import pipeline, then keras)": "import pipeline, keras; " + REPORT,
    "plain process (import keras)": "import keras; " + REPORT,
}


def timed_import(code: str) -> tuple[float, float, dict]:
    """(wall s, CPU s, {module: loaded}) of one fresh interpreter running `code`."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    with process.stdout:
        output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"`python -c {code!r}` failed with exit status {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes of each kind (default 5)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    print(f"CPU: {describe_cpu()}")
    results: dict[str, list] = {kind: [] for kind in KINDS}
    for _ in range(args.runs):
        for kind, code in KINDS.items():
            results[kind].append(timed_import(code))
    for kind, runs in results.items():
        wall = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        loaded = ", ".join(f"{module} {'loaded' if flag else 'not loaded'}" for module, flag in runs[-1][2].items())
        print(f"{kind}: median of {len(runs)}: {wall:.2f} s wall, {cpu:.2f} s CPU; {loaded}")


if __name__ == "__main__":
    main()
