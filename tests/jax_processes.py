"""What the tests that start JAX subprocesses share: the environment they run in.

Most of a short JAX run on a CPU is XLA compiling: the training and evaluation steps, and
each small op that building a model runs eagerly (initialisers and the like, a few hundred
of them). The subprocesses therefore share JAX's persistent compilation cache, one folder
per pytest session (shared by the xdist workers of that session, never between sessions).

A cache entry is keyed by the computation (its HLO), the compile options and flags, the
devices and the JAX/XLA versions: a process that reads one gets exactly the executable it
would have compiled itself, so no test's claim (results, determinism, exact resume, agreement
between processes) depends on whether the cache was cold or warm. Only the time does.

The subprocesses also ask XLA for its quickest compile (--xla_backend_optimization_level=0:
LLVM's optimisation passes off), which cut a one-epoch run of benchmarks/gpu_comparison.py from
60 to 37 CPU-seconds (AMD EPYC, 2 cores). What these tests claim holds for any compiled
program (same inputs, same executable, same results; two placements of one step agree within
a tolerance), so testing it on the less optimised one is no weaker; training runs keep XLA's
defaults.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def compilation_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's JAX compilation cache (under the session's temporary root)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/popen-gwK -> pytest-N: one folder for all workers of the session
    path = base / "jax-compilation-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


QUICK_COMPILE = "--xla_backend_optimization_level=0"


def jax_environment(cache_dir: Path | None, **extra: str) -> dict[str, str]:
    """os.environ for a subprocess on Keras' JAX backend, using the shared compilation cache
    where cache_dir is given (None: a process that compiles little, e.g. an import check).
    XLA_FLAGS of the environment and of `extra` are added to QUICK_COMPILE."""
    flags = (QUICK_COMPILE, os.environ.get("XLA_FLAGS"), extra.get("XLA_FLAGS"))
    extra = {**extra, "XLA_FLAGS": " ".join(filter(None, flags))}
    environment = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT_ROOT)}
    if cache_dir is not None:
        environment.update({
            "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
            # Cache every executable, however small or quick to compile: the eager ops of a model
            # build are each quick, but there are hundreds of them.
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    return {**environment, **extra}


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> Path:
    return compilation_cache_dir(tmp_path_factory)
