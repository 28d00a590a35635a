"""Interleaved latency (every model and variant with its spread) and the op profile (ops and where each ran)."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from lightcnn.export import VARIANTS, Int8Recipe, convert, convert_variants
from lightcnn.latency import (
    VECTOR_EXTENSIONS,
    cpu_info,
    find_result,
    interleaved_latency,
    latency_markdown,
    summarise,
)
from lightcnn.profiling import op_profile, placement, profile_markdown, profiles_summary_markdown


def _hard_swish_classifier(width: int) -> keras.Model:
    """Conv -> hard-swish -> depthwise -> ReLU -> pool -> Dense: small, with the op XNNPACK lacks in int8."""
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, strides=2, padding="same")(inputs)
    x = layers.Activation("hard_silu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(5)(x))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[tuple[str, str], Path | bytes]:
    """Two tiny models in every variant: one as files, one as bytes."""
    calibration = np.random.default_rng(0).random((20, 16, 16, 3), dtype=np.float32)
    files: dict[tuple[str, str], Path | bytes] = {}
    folder = tmp_path_factory.mktemp("tflite")
    for name, width in (("narrow", 4), ("wide", 12)):
        keras.utils.set_random_seed(width)
        for variant, data in convert_variants(_hard_swish_classifier(width), VARIANTS, calibration).items():
            if name == "narrow":
                files[(name, variant)] = folder / f"{name}_{variant}.tflite"
                files[(name, variant)].write_bytes(data)
            else:
                files[(name, variant)] = data
    return files


def test_interleaved_latency_returns_every_model_variant_and_thread_count_with_its_spread(tiny_files):
    measurement = interleaved_latency(tiny_files, threads=[1, 2], rounds=3, runs_per_round=2, warmup=1)

    results = measurement["results"]
    assert [(r["model"], r["variant"], r["threads"]) for r in results] == [
        (model, variant, threads) for model, variant in tiny_files for threads in (1, 2)]
    for result in results:
        assert result["runs"] == 6 and result["xnnpack"] is True
        assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
        assert result["min_ms"] <= result["ci95_low_ms"] <= result["ci95_high_ms"] <= result["max_ms"]
        assert result["input_dtype"] == ("int8" if result["variant"] == "int8" else "float32")
    context = measurement["context"]
    assert context["cpu"] == cpu_info()["model_name"] and context["litert_version"]
    assert context["threads"] == [1, 2] and context["rounds"] == 3 and context["runs_per_round"] == 2
    assert set(context["vector_extensions"]) <= set(VECTOR_EXTENSIONS)
    assert find_result(measurement, "wide", "int8", 2) is results[-1]
    with pytest.raises(KeyError, match="'wide', variant 'int4'"):
        find_result(measurement, "wide", "int4", 1)

    markdown = latency_markdown(measurement, pairs={"wide": "narrow"})
    assert "**1 thread**" in markdown and "**2 threads**" in markdown
    assert "| wide / narrow | 2 |" in markdown and "int8 speed vs float32" in markdown
    assert context["cpu"] in markdown


def test_summarise_bootstraps_whole_rounds():
    """Drift between rounds widens the interval; the same spread inside every round does not."""
    values = np.arange(1.0, 21.0)
    drifting = np.repeat(values[:, np.newaxis], 5, axis=1)  # round r: five runs of r ms
    steady = np.tile(values, (20, 1))  # every round: 1 .. 20 ms

    drift, steady_summary = summarise(drifting), summarise(steady)

    assert drift["median_ms"] == steady_summary["median_ms"] == 10.5
    assert drift["ci95_high_ms"] - drift["ci95_low_ms"] >= 4
    assert steady_summary["ci95_low_ms"] == steady_summary["ci95_high_ms"] == 10.5
    assert drift["runs"] == 100 and steady_summary["p90_ms"] == pytest.approx(np.percentile(values, 90))
    with pytest.raises(ValueError, match="non-empty"):
        summarise(np.empty((0, 3)))


@pytest.mark.parametrize("arguments, message", [
    ({"files": {}}, "at least one"),
    ({"files": {"narrow": b""}}, r"\(model, variant\)"),
    ({"threads": []}, "at least one thread"),
    ({"threads": [1, 1]}, "twice"),
    ({"threads": [0]}, "threads"),
    ({"rounds": 1}, "rounds"),
    ({"runs_per_round": 0}, "runs_per_round"),
    ({"warmup": -1}, "warmup"),
])
def test_interleaved_latency_rejects_bad_requests(tiny_files, arguments, message):
    request = {"files": {("narrow", "float32"): tiny_files[("narrow", "float32")]}, "threads": [1], **arguments}
    with pytest.raises(ValueError, match=message):
        interleaved_latency(**request)


def test_interleaved_latency_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        interleaved_latency({("m", "float32"): tmp_path / "missing.tflite"}, threads=[1], rounds=2)


def test_cpu_info_lists_the_vector_extensions_of_proc_cpuinfo():
    info = cpu_info()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.lower().startswith(("flags", "features"))), [])
    assert info["vector_extensions"] == [name for name in VECTOR_EXTENSIONS if name in flags]


# ----------------------------------------------------------------------------- op profile


def test_profile_shows_int8_hard_swish_falling_back_and_splitting_the_graph(tiny_files):
    """The fused int8 hard-swish runs on LiteRT's kernel between two XNNPACK partitions."""
    keras.utils.set_random_seed(4)
    calibration = np.random.default_rng(0).random((20, 16, 16, 3), dtype=np.float32)
    fused = convert(_hard_swish_classifier(4), "int8", calibration, int8_recipe=Int8Recipe(hard_swish="fused"))

    profile = op_profile(fused, threads=1, rounds=2, runs_per_round=2, warmup=1)

    by_name = {op["op"]: op for op in profile["ops"]}
    assert by_name["HARD_SWISH"]["delegated"] is False and by_name["HARD_SWISH"]["partition"] is None
    assert by_name["CONV_2D"]["delegated"] is True and by_name["DEPTHWISE_CONV_2D"]["delegated"] is True
    assert by_name["CONV_2D"]["partition"] != by_name["DEPTHWISE_CONV_2D"]["partition"]
    assert profile["partitions"] == 2
    assert all(op["median_us"] > 0 and op["dtype"] == "int8" for op in profile["ops"])
    assert sum(row["share"] for row in profile["by_op"]) == pytest.approx(1.0)
    assert {"op": "HARD_SWISH", "where": "LiteRT builtin"}.items() <= next(
        row for row in profile["by_op"] if row["op"] == "HARD_SWISH").items()
    assert "| HARD_SWISH | int8 | LiteRT builtin | 1 |" in profile_markdown(profile, "fused")


@pytest.mark.parametrize("variant", VARIANTS)
def test_default_variants_run_entirely_in_one_xnnpack_partition(tiny_files, variant):
    placed = placement(tiny_files[("wide", variant)])

    assert placed["partitions"] == 1
    assert [op for op in placed["ops"] if not op["delegated"]] == []
    assert "HARD_SWISH" not in {op["op"] for op in placed["ops"]} or variant != "int8"


def test_profile_of_float16_leaves_weight_dequantize_untimed_and_times_the_rest(tiny_files):
    profile = op_profile(tiny_files[("narrow", "float16")], threads=1, rounds=2, runs_per_round=1, warmup=0)

    dequantize = [op for op in profile["ops"] if op["op"] == "DEQUANTIZE"]
    assert dequantize and all(op["median_us"] is None and "constant" in op["note"] for op in dequantize)
    timed = [op for op in profile["ops"] if op["op"] != "DEQUANTIZE"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= {op["op"] for op in timed}
    assert all(op["median_us"] > 0 and op["delegated"] for op in timed)


def test_profiles_summary_puts_each_variant_and_thread_count_on_one_row(tiny_files):
    profiles = {("wide", variant, threads): op_profile(tiny_files[("wide", variant)], threads=threads, rounds=2,
                                                      runs_per_round=1, warmup=0)
                for variant in ("float32", "int8") for threads in (1, 2)}

    rows = [line for line in profiles_summary_markdown(profiles).splitlines() if line.startswith("| wide |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["float32", "1"], ["float32", "2"], ["int8", "1"], ["int8", "2"]]
    for row, profile in zip(rows, profiles.values()):
        cells = row.split(" | ")
        assert int(cells[3]) == len(profile["ops"]) and int(cells[4]) == len(profile["ops"])  # all in XNNPACK
        assert cells[5] == "1" and float(cells[6]) == pytest.approx(profile["whole_graph"]["median_ms"], abs=5e-4)


def test_profile_rejects_what_is_not_a_tflite_model(tmp_path):
    with pytest.raises(ValueError, match="TFL3"):
        op_profile(b"not a model at all")
    with pytest.raises(FileNotFoundError, match="gone.tflite"):
        placement(tmp_path / "gone.tflite")
    with pytest.raises(ValueError, match="rounds"):
        op_profile(b"\0\0\0\0TFL3", rounds=1)
