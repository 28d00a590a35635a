"""Shared fixtures: where the real data lives (../shared/data beside the project)."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

# The test processes start as the stage processes do: `import pipeline` first, whose __init__
# keeps the optional integrations TensorFlow and Keras would load for nothing (scikit-learn, JAX,
# pandas, matplotlib) from loading. STAGE_START does the same in the scripts tests run in a
# fresh Python.
import pipeline  # noqa: F401  (pipeline/common/lean_imports.py)

STAGE_START = "import pipeline  # starts as a stage process does (pipeline/common/lean_imports.py)\n"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTCNN_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
BIRDS_SAMPLE = SHARED_DATA / "birds-sample.tar.gz"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; the tests that read real images fail loudly if it is missing."""
    if not CIFAR10_JPEG.exists():
        pytest.fail(f"real test data not found at {SHARED_DATA}: put the shared/ folder beside the project "
                    "or set LIGHTCNN_SHARED_DATA")
    return SHARED_DATA


def turn_op_determinism_off() -> None:
    """TensorFlow's op determinism off (its default), where TF is loaded: train_model (through
    seed_everything, with the recipes' deterministic=True) turns it on for the whole process.
    TF has no public switch back, so its framework module's is used."""
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import config

        if config.is_op_determinism_enabled():
            config.disable_op_determinism()


@pytest.fixture(autouse=True)
def tensorflow_op_determinism_off_after_each_test():
    """A test that trained in the xdist worker's process (or its module's fixture that did) left
    the rest of that worker's files, whichever they were, under op determinism. Each training
    turns it on again for itself."""
    yield
    turn_op_determinism_off()


# Images per class and split in the session's CIFAR-10 subset: the most any test using it reads.
CIFAR10_SUBSET_PER_CLASS = {"train": 200, "test": 100}


@pytest.fixture(scope="session")
def cifar10_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 200 train and 100 test JPEGs of each class of the shared CIFAR-10 archive, as
    an archive of the same layout (tests/data_helpers.py): the same images for tests that
    read at most that many per class, each read without the 2 s the whole archive takes."""
    from tests.data_helpers import write_cifar10_subset

    return write_cifar10_subset(CIFAR10_JPEG, tmp_path_factory.mktemp("cifar10-subset") / "cifar10-jpeg.tar.gz",
                                CIFAR10_SUBSET_PER_CLASS)


# The longest files first (test time in the suite, longest first), so that the two xdist
# workers start on them and the short files fill in around them. xdist hands out whole files
# (--dist loadfile) in collection order only with --no-loadscope-reorder (pyproject.toml):
# by default it reorders them by their number of tests, which put the DVC module (9 tests,
# about 4.5 minutes) late: it started 3 min 18 s into an 8 min 17 s suite and ended it.
LONGEST_FIRST = ("test_pipeline.py", "test_backends.py", "test_export.py", "test_distribution.py",
                 "test_readme_commands.py", "test_models.py", "test_training.py", "test_model_modes.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: file order and test order within a file are kept


# The suite's goal (the issues': on 2 cores without AVX-512); benchmarks/suite_time.py checks it
# with probes of the machine's speed. Here every run's log just names its CPU beside its time.
SUITE_GOAL_MINUTES = 15
_session_start = time.monotonic()


def pytest_sessionstart(session):
    global _session_start
    _session_start = time.monotonic()


def pytest_report_header(config):
    from lightcnn.machine import describe_cpu

    return f"cpu: {describe_cpu()}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    from lightcnn.machine import describe_cpu
    from lightcnn.suite_record import minutes_and_seconds

    wall = minutes_and_seconds(time.monotonic() - _session_start)
    terminalreporter.write_line(f"suite time: {wall} wall on {describe_cpu()} (the goal: "
                                f"under {SUITE_GOAL_MINUTES} min on 2 cores without AVX-512; "
                                "`python benchmarks/suite_time.py` checks it)")
