"""What machine a figure was measured on: the CPU's model name and its flags, from /proc/cpuinfo.

One reader for every benchmark and record; each caller picks the vector extensions that
matter to it from the flags.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path


def read_cpuinfo() -> tuple[str, set[str] | None]:
    """(model name, flags) of the first CPU in /proc/cpuinfo: x86 "model name"/"flags" or Arm
    "Hardware"/"Features". The model falls back to platform's; flags are None where
    /proc/cpuinfo cannot be read (not Linux)."""
    model_name, flags = "", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and not model_name:
                model_name = value.strip()
            elif key in ("flags", "features") and flags is None:
                flags = set(value.split())
    except OSError:  # not Linux
        pass
    return model_name or platform.processor() or platform.machine() or "unknown", flags


def cpu_facts(extensions: Sequence[str]) -> dict:
    """{"model_name", "logical_cores", "vector_extensions"}: those of `extensions` the CPU has,
    in that order (None where the flags cannot be read)."""
    model_name, flags = read_cpuinfo()
    return {"model_name": model_name, "logical_cores": os.cpu_count() or 0,
            "vector_extensions": None if flags is None else [ext for ext in extensions if ext in flags]}


def describe_cpu() -> str:
    """One line for a log beside a figure: "<model>, <n> logical cores, <AVX-512 | AVX2, no
    AVX-512 | no AVX2>" (the instruction sets that split this project's machines about 3x);
    "flags unknown" where /proc/cpuinfo cannot be read."""
    model_name, flags = read_cpuinfo()
    if flags is None:
        isa = "flags unknown"
    else:
        isa = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{model_name}, {os.cpu_count() or 0} logical cores, {isa}"
