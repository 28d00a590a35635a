"""Fair single-image latency of TFLite models in LiteRT: every model and variant timed in one process.

Timing models one after another, or in separate pipeline stages at different moments, lets
the machine's state (other jobs, clock boost, thermal state, cache) differ between them:
on a shared 2-core machine the same file measured 60% apart that way. `interleaved_latency`
builds every interpreter first (the thread count is fixed when an interpreter is built, as
LiteRT requires), warms each up, then times them in rounds: in every round each
(model, variant, threads) runs `runs_per_round` single-image invocations, in an order
shuffled per round, so slow periods of the machine are spread over all of them alike and
their ratios stay fair even when the absolute figures drift.

Each figure carries its spread: median, p90, and a 95% confidence interval of the median
from a bootstrap over *rounds* (whole rounds resampled, so drift between rounds widens the
interval as it should; resampling single runs would pretend they were independent).
"""
from __future__ import annotations

import importlib.metadata
import os
import random
import time
from collections.abc import Mapping, Sequence

import numpy as np

from lightcnn.export import TFLiteModel
from lightcnn.machine import cpu_facts

# The x86 / Arm vector extensions that decide which LiteRT (XNNPACK) kernels run.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "asimd", "asimddp",
                     "i8mm", "sve")

BOOTSTRAP_RESAMPLES = 1000
# The study's comparisons: each of our models against its MobileNetV3 counterpart.
COMPARED_PAIRS = {"our_large": "mobilenetv3_large", "our_small": "mobilenetv3_small"}


def cpu_info() -> dict:
    """This machine's CPU: model_name, logical_cores, and the vector_extensions it has.

    vector_extensions lists those of VECTOR_EXTENSIONS present in /proc/cpuinfo's flags
    (x86) or Features (Arm); empty where /proc/cpuinfo cannot be read (not Linux).
    """
    facts = cpu_facts(VECTOR_EXTENSIONS)
    return {**facts, "vector_extensions": facts["vector_extensions"] or []}


def litert_version() -> str:
    """The installed ai-edge-litert version (the runtime that produced the figures)."""
    return importlib.metadata.version("ai-edge-litert")


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none): other work on the machine."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def summarise(times_ms: np.ndarray, seed: int = 0) -> dict:
    """Median, p90, mean, min, max and a 95% bootstrap interval of the median of timings.

    `times_ms` is (rounds, runs_per_round): the bootstrap resamples whole rounds. A 1-D
    array is treated as one run per round.
    """
    times_ms = np.asarray(times_ms, dtype=np.float64)
    if times_ms.ndim == 1:
        times_ms = times_ms[:, np.newaxis]
    if times_ms.ndim != 2 or times_ms.size == 0:
        raise ValueError(f"timings must be a non-empty (rounds, runs) array, got shape {times_ms.shape}")
    rounds = times_ms.shape[0]
    picks = np.random.default_rng(seed).integers(0, rounds, size=(BOOTSTRAP_RESAMPLES, rounds))
    medians = np.median(times_ms[picks].reshape(BOOTSTRAP_RESAMPLES, -1), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    flat = times_ms.ravel()
    return {
        "median_ms": float(np.median(flat)),
        "p90_ms": float(np.percentile(flat, 90)),
        "ci95_low_ms": float(low),
        "ci95_high_ms": float(high),
        "mean_ms": float(flat.mean()),
        "min_ms": float(flat.min()),
        "max_ms": float(flat.max()),
        "runs": int(flat.size),
    }


def _check_count(name: str, value, smallest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
        raise ValueError(f"{name} must be an integer >= {smallest}, got {value!r}")


ModelKey = tuple[str, str]  # (model, variant)


def interleaved_latency(files: Mapping[ModelKey, str | os.PathLike | bytes], threads: Sequence[int],
                        rounds: int = 40, runs_per_round: int = 10, warmup: int = 20, seed: int = 0) -> dict:
    """Time every (model, variant) TFLite file at every thread count, interleaved in one process.

    files: {(model, variant): .tflite path or flatbuffer bytes}. threads: thread counts
    (each gets its own interpreter, built with that count). In each of `rounds` rounds every
    interpreter runs `runs_per_round` timed single-image invocations, in an order shuffled
    per round (seeded); before the first round each runs `warmup` untimed invocations.
    LiteRT's default XNNPACK delegate stays on, as in TFLite's benchmark_model.

    Returns {"context": {cpu, vector_extensions, logical_cores, litert_version, rounds,
    runs_per_round, warmup, threads, load_average_before, load_average_after, started_at},
    "results": [{model, variant, threads, median_ms, p90_ms, ci95_low_ms, ci95_high_ms,
    mean_ms, min_ms, max_ms, runs, xnnpack, input_dtype}, ...]} in the order of `files`,
    then `threads`.
    """
    if not files:
        raise ValueError("interleaved_latency needs at least one (model, variant) -> .tflite file")
    for key in files:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(part, str) for part in key)):
            raise ValueError(f"files must be keyed by (model, variant) string pairs, got key {key!r}")
    threads = list(threads)
    if not threads:
        raise ValueError("threads must list at least one thread count, e.g. [1, 2]")
    for count in threads:
        _check_count("threads", count, 1)
    if len(set(threads)) != len(threads):
        raise ValueError(f"threads lists a thread count twice: {threads}")
    for name, value, smallest in (("rounds", rounds, 2), ("runs_per_round", runs_per_round, 1),
                                  ("warmup", warmup, 0)):
        _check_count(name, value, smallest)

    entries = []  # one interpreter per (model, variant, threads), built before any timing
    for (model_name, variant), source in files.items():
        for count in threads:
            tflite = TFLiteModel(source, num_threads=count)
            image = np.random.default_rng(seed).random(tflite.image_shape, dtype=np.float32)
            tflite.set_input(image)
            entries.append({"model": model_name, "variant": variant, "threads": count, "tflite": tflite,
                            "times": np.empty((rounds, runs_per_round))})
    load_before, started_at = load_average(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for entry in entries:
        for _ in range(warmup):
            entry["tflite"].invoke()
    order = list(range(len(entries)))
    shuffler = random.Random(seed)
    for round_index in range(rounds):
        shuffler.shuffle(order)
        for position in order:
            entry = entries[position]
            invoke, times = entry["tflite"].invoke, entry["times"][round_index]
            for run in range(runs_per_round):
                start = time.perf_counter_ns()
                invoke()
                times[run] = (time.perf_counter_ns() - start) / 1e6
    cpu = cpu_info()
    context = {
        "cpu": cpu["model_name"], "vector_extensions": cpu["vector_extensions"],
        "logical_cores": cpu["logical_cores"], "litert_version": litert_version(), "rounds": rounds,
        "runs_per_round": runs_per_round, "warmup": warmup, "threads": threads,
        "load_average_before": load_before, "load_average_after": load_average(), "started_at": started_at,
        "method": "interleaved rounds, order shuffled per round; 95% CI of the median by bootstrap over rounds",
    }
    results = [{"model": entry["model"], "variant": entry["variant"], "threads": entry["threads"],
                **summarise(entry["times"], seed),
                "xnnpack": entry["tflite"].xnnpack_applied, "input_dtype": entry["tflite"].input_dtype.name}
               for entry in entries]
    return {"context": context, "results": results}


def find_result(measurement: dict, model: str, variant: str, threads: int) -> dict:
    """The one result of `interleaved_latency` for (model, variant, threads); KeyError naming it if absent."""
    for result in measurement["results"]:
        if (result["model"], result["variant"], result["threads"]) == (model, variant, threads):
            return result
    raise KeyError(f"no latency result for model {model!r}, variant {variant!r}, {threads} thread(s)")


def _cell(result: dict | None) -> str:
    if result is None:
        return "n/a"
    return f"{result['median_ms']:.3g} [{result['ci95_low_ms']:.3g}, {result['ci95_high_ms']:.3g}]"


def _lookup(measurement: dict, model: str, variant: str, threads: int) -> dict | None:
    try:
        return find_result(measurement, model, variant, threads)
    except KeyError:
        return None


def _ratio(numerator: dict | None, denominator: dict | None, form: str) -> str:
    if numerator is None or denominator is None:
        return "n/a"
    return form.format(numerator["median_ms"] / denominator["median_ms"])


def latency_markdown(measurement: dict, pairs: Mapping[str, str] | None = None,
                     reference_variant: str = "float32") -> str:
    """A Markdown report of `interleaved_latency`'s result.

    One table per thread count: each model's median [95% CI] per variant, and each
    variant's speed-up over `reference_variant` (reference time / variant time, > 1 is
    faster). `pairs` ({model: the model it is compared with}, e.g. {"our_small":
    "mobilenetv3_small"}) adds a table of time ratios model / compared model per variant
    (< 1: the model is faster); a pair with a model that was not measured is left out. A
    context line names the CPU, LiteRT and the run. A (model, variant, threads) that was not
    measured shows as n/a.
    """
    context, results = measurement["context"], measurement["results"]
    models = list(dict.fromkeys(result["model"] for result in results))
    pairs = {model: compared for model, compared in (pairs or {}).items() if model in models and compared in models}
    variants = list(dict.fromkeys(result["variant"] for result in results))
    lines = [f"CPU: {context['cpu']} ({context['logical_cores']} logical cores; "
             f"{', '.join(context['vector_extensions']) or 'no listed vector extensions'}), "
             f"LiteRT {context['litert_version']}, XNNPACK on; {context['rounds']} interleaved rounds x "
             f"{context['runs_per_round']} runs per figure after {context['warmup']} warm-up runs; "
             f"load average before/after: {context['load_average_before']} / {context['load_average_after']}. "
             "Median single-image latency in ms [95% CI of the median], batch 1.", ""]
    others = [variant for variant in variants if variant != reference_variant]
    speed_heads = [f"{variant} speed vs {reference_variant}" for variant in others] \
        if reference_variant in variants else []
    for count in context["threads"]:
        lines += [f"**{count} thread{'s' if count > 1 else ''}**", "",
                  "| model | " + " | ".join(f"{variant} (ms)" for variant in variants)
                  + "".join(f" | {head}" for head in speed_heads) + " |",
                  "|---|" + "---:|" * (len(variants) + len(speed_heads))]
        for model in models:
            row = [_cell(_lookup(measurement, model, variant, count)) for variant in variants]
            if speed_heads:
                reference = _lookup(measurement, model, reference_variant, count)
                row += [_ratio(reference, _lookup(measurement, model, variant, count), "{:.2f}x")
                        for variant in others]
            lines.append(f"| {model} | " + " | ".join(row) + " |")
        lines.append("")
    if pairs:
        lines += ["Time ratio model / compared model (median over median; < 1: faster)", "",
                  "| model / compared | threads | " + " | ".join(variants) + " |",
                  "|---|---:|" + "---:|" * len(variants)]
        for model, compared in pairs.items():
            for count in context["threads"]:
                ratios = [_ratio(_lookup(measurement, model, variant, count),
                                 _lookup(measurement, compared, variant, count), "{:.2f}") for variant in variants]
                lines.append(f"| {model} / {compared} | {count} | " + " | ".join(ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def levers_markdown(measurement: dict, reference_variant: str = "float32") -> str:
    """A Markdown table of every variant's speed over `reference_variant`, per model and thread count
    (reference time / variant time, medians of the same interleaved rounds; > 1 is faster), with
    its top-1 and agreement with Keras where `measurement["accuracy"]` has them (trained models).

    Rows: a Keras row when there are accuracies, then every variant (the reference first, at
    1.00x by definition); columns: the models measured in every variant.
    """
    results, threads = measurement["results"], measurement["context"]["threads"]
    variants = [reference_variant, *(v for v in dict.fromkeys(r["variant"] for r in results)
                                     if v != reference_variant)]
    models = [name for name in dict.fromkeys(r["model"] for r in results)
              if all(_lookup(measurement, name, variant, count) is not None for variant in variants
                     for count in threads)]
    accuracy = (measurement.get("accuracy") or {}).get("by_model") or {}
    images = (measurement.get("accuracy") or {}).get("test_images")
    per_thread = " / ".join(f"{count} thread{'s' if count > 1 else ''}" for count in threads)
    lines = [f"Speed vs {reference_variant} at {per_thread} ({reference_variant} time / variant time, medians "
             "of the same interleaved rounds; > 1 is faster)"
             + (f"; top-1 on {images} test images and agreement with Keras's top class" if accuracy else "")
             + ".", "",
             "| variant | " + " | ".join(f"`{name}`" for name in models) + " |",
             "|---|" + "---|" * len(models)]
    if any(name in accuracy for name in models):
        lines.append("| Keras (top-1) | " + " | ".join(
            f"{accuracy[name]['keras']:.2%}" if name in accuracy else "not trained" for name in models) + " |")
    for variant in variants:
        cells = []
        for name in models:
            speeds = [_ratio(_lookup(measurement, name, reference_variant, count),
                             _lookup(measurement, name, variant, count), "{:.2f}x") for count in threads]
            cell = " / ".join(speeds)
            figures = accuracy.get(name, {}).get(variant)
            if figures:
                cell += f"; {figures['top1']:.2%} (agree {figures['agreement']:.1%})"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
