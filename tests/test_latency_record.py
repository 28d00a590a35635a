"""Recorded latency measurements (docs/latency/<name>/) and the README tables generated from them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightcnn import gpu_record, latency_record, results, suite_record

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "benchmarks" / "results_table.py"
# (model, variant) -> median ms at 1 and 2 threads: int8 twice as fast as float32 for "ours"
MEDIANS = {("ours", "float32"): (2.0, 1.2), ("ours", "float16"): (2.2, 1.3), ("ours", "int8"): (1.0, 0.6),
           ("ours", "int8 fused hard-swish"): (4.0, 3.0),
           ("theirs", "float32"): (4.0, 2.4), ("theirs", "float16"): (4.0, 2.4), ("theirs", "int8"): (2.5, 1.6),
           ("theirs", "int8 fused hard-swish"): (5.0, 4.0)}


def _bench_output(folder: Path, drop: tuple[str, str] | None = None,
                  started_at: str = "2026-11-26T14:00:00+0000") -> Path:
    """What bench_latency.py writes: latency.json (+ the two Markdown files)."""
    results_list = []
    for (model, variant), medians in MEDIANS.items():
        if (model, variant) == drop:
            continue
        for threads, median in zip((1, 2), medians):
            results_list.append({"model": model, "variant": variant, "threads": threads, "median_ms": median,
                                 "p90_ms": median + 0.5, "ci95_low_ms": median - 0.1, "ci95_high_ms": median + 0.1})
    measurement = {
        "context": {"cpu": "Test CPU 9000", "logical_cores": 2, "vector_extensions": ["avx2", "fma"],
                    "litert_version": "2.3.0", "rounds": 40, "runs_per_round": 10, "warmup": 20, "threads": [1, 2],
                    "load_average_before": [0.1, 0.2, 0.3], "load_average_after": [1.0, 0.5, 0.4],
                    "started_at": started_at,
                    "command": "python benchmarks/bench_latency.py --levers --keras-dir kdir",
                    "models": {"ours": "trained, ours.keras (sha256 0123456789ab...)", "theirs": "random weights"}},
        "results": results_list,
        "accuracy": {"test_images": 2000, "by_model": {"ours": {
            "keras": 0.8452, "float32": {"top1": 0.8452, "agreement": 1.0}, "float16": {"top1": 0.845, "agreement": 0.999},
            "int8": {"top1": 0.844, "agreement": 0.969}, "int8 fused hard-swish": {"top1": 0.8, "agreement": 0.9}}}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latency.json").write_text(json.dumps(measurement))
    (folder / "latency.md").write_text("# LiteRT latency\n")
    (folder / "op_profiles.md").write_text("# Op profiles\n")
    (folder / "op_profiles.json").write_text("{}")
    return folder


def _record(name: str = "2026-11-26-test", date: str = "2026-11-26") -> dict:
    return {"name": name, "what": "two test models", "command": "python benchmarks/bench_latency.py --levers",
            "git_commit": "abcdef1234567", "date": date}


def test_a_recorded_measurement_renders_the_readme_tables_from_its_figures(tmp_path):
    folder = latency_record.record_latency(tmp_path / "latency", _bench_output(tmp_path / "bench"), _record())
    assert sorted(path.name for path in folder.iterdir()) == ["latency.json", "latency.md", "op_profiles.md"]
    measurement = latency_record.latest_latency(tmp_path / "latency")
    assert measurement["record"]["name"] == "2026-11-26-test"

    section = latency_record.render_latency_section(measurement, pairs={"ours": "theirs"})
    assert "Measurement `2026-11-26-test` (2026-11-26, commit abcdef1" in section
    assert "`python benchmarks/bench_latency.py --levers`" in section and "Test CPU 9000" in section
    assert "ours: trained, ours.keras (sha256 0123456789ab...)" in section
    assert "| ours | 2 [1.9, 2.1] | 2.2 [2.1, 2.3] | 1 [0.9, 1.1] | 0.91x | 2.00x |" in section  # 1 thread
    assert "| theirs | 2.4 [2.3, 2.5] | 2.4 [2.3, 2.5] | 1.6 [1.5, 1.7] | 1.00x | 1.50x |" in section  # 2 threads
    assert "fused" not in section  # levers have their own table
    assert "| ours / theirs | 1 | 0.50 | 0.55 | 0.40 |" in section
    # The README's own pairs name models this measurement lacks: no rows of n/a for them.
    assert "our_small" not in latency_record.render_latency_section(measurement)

    levers = latency_record.render_levers_section(measurement)
    rows = {line.split(" | ")[0][2:]: line for line in levers.splitlines() if line.startswith("| ")}
    assert rows["Keras (top-1)"] == "| Keras (top-1) | 84.52% | not trained |"
    assert rows["int8"] == "| int8 | 2.00x / 2.00x; 84.40% (agree 96.9%) | 1.60x / 1.50x |"
    assert rows["int8 fused hard-swish"] == "| int8 fused hard-swish | 0.50x / 0.40x; 80.00% (agree 90.0%) | " \
                                            "0.80x / 0.60x |"
    assert "top-1 on 2000 test images" in levers


def test_the_readme_shows_the_newest_measurement(tmp_path):
    latency_dir = tmp_path / "latency"
    latency_record.record_latency(latency_dir, _bench_output(tmp_path / "a"), _record("older", "2026-11-20"))
    latency_record.record_latency(latency_dir, _bench_output(tmp_path / "b"), _record("newer", "2026-11-26"))
    assert latency_record.latest_latency(latency_dir)["record"]["name"] == "newer"
    # The same day: the one that started later, whatever the names
    latency_record.record_latency(latency_dir, _bench_output(tmp_path / "c", started_at="2026-11-26T15:00:00+0000"),
                                  _record("a-later-one", "2026-11-26"))
    assert latency_record.latest_latency(latency_dir)["record"]["name"] == "a-later-one"
    assert latency_record.latest_latency(tmp_path / "nothing-here") is None
    assert "No latency measurement recorded yet" in latency_record.render_latency_section(None)


def test_a_measurement_is_never_overwritten_and_an_incomplete_one_is_refused(tmp_path):
    latency_dir = tmp_path / "latency"
    latency_record.record_latency(latency_dir, _bench_output(tmp_path / "bench"), _record())
    with pytest.raises(FileExistsError, match="exists already"):
        latency_record.record_latency(latency_dir, _bench_output(tmp_path / "bench"), _record())

    incomplete = _bench_output(tmp_path / "incomplete", drop=("theirs", "float16"))
    with pytest.raises(latency_record.LatencyFolderError, match=r"no latency for theirs float16 \(1 thread"):
        latency_record.record_latency(latency_dir, incomplete, _record("incomplete"))
    assert sorted(path.name for path in latency_dir.iterdir()) == ["2026-11-26-test"]  # nothing half-written

    with pytest.raises(FileNotFoundError, match="run `python benchmarks/bench_latency.py` first"):
        latency_record.record_latency(latency_dir, tmp_path / "empty", _record("empty"))
    with pytest.raises(ValueError, match="plain folder name"):
        latency_record.record_latency(latency_dir, _bench_output(tmp_path / "bench"), _record("../escape"))

    (latency_dir / "2026-11-26-test" / "latency.json").write_text(json.dumps({"context": {}, "results": []}))
    with pytest.raises(latency_record.LatencyFolderError, match="'context' lacks cpu"):
        latency_record.latest_latency(latency_dir)


def test_record_latency_command_then_the_readme_check(tmp_path):
    """The script end to end on a temporary README: record, --check fails, rewrite, --check passes."""
    bench = _bench_output(tmp_path / "bench")
    readme = tmp_path / "README.md"
    readme.write_text("# P\n\n" + "\n\n".join(f"{begin}\n{end}" for begin, end in (
        (results.BEGIN_MARK, results.END_MARK), (results.TFLITE_BEGIN_MARK, results.TFLITE_END_MARK),
        (latency_record.LATENCY_BEGIN_MARK, latency_record.LATENCY_END_MARK),
        (latency_record.LEVERS_BEGIN_MARK, latency_record.LEVERS_END_MARK),
        (gpu_record.GPU_BEGIN_MARK, gpu_record.GPU_END_MARK),
        (suite_record.SUITE_BEGIN_MARK, suite_record.SUITE_END_MARK))) + "\n")
    common = ["--readme", str(readme), "--results-dir", str(tmp_path / "runs"), "--latency-dir",
              str(tmp_path / "latency"), "--gpu-dir", str(tmp_path / "gpu"),
              "--suite-dir", str(tmp_path / "suite-time")]
    (tmp_path / "runs").mkdir()

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)

    recorded = script(*common, "record-latency", "--name", "first", "--what", "two test models", "--from",
                      str(bench), "--git-commit", "abcdef1234567", "--date", "2026-11-26")
    assert recorded.returncode == 0, recorded.stderr
    stored = json.loads((tmp_path / "latency" / "first" / "latency.json").read_text())
    assert stored["record"] == {"name": "first", "what": "two test models", "git_commit": "abcdef1234567",
                                "date": "2026-11-26",
                                "command": "python benchmarks/bench_latency.py --levers --keras-dir kdir"}
    again = script(*common, "record-latency", "--name", "first", "--what", "x", "--from", str(bench))
    assert again.returncode == 2 and "exists already" in again.stderr
    unnamed = json.loads((bench / "latency.json").read_text())
    del unnamed["context"]["command"]
    (bench / "latency.json").write_text(json.dumps(unnamed))
    refused = script(*common, "record-latency", "--name", "second", "--what", "x", "--from", str(bench))
    assert refused.returncode != 0 and "pass --command" in refused.stderr
    assert not (tmp_path / "latency" / "second").exists()

    assert script(*common, "--check").returncode == 1
    assert script(*common).returncode == 0
    text = readme.read_text()
    measurement = latency_record.latest_latency(tmp_path / "latency")
    assert latency_record.render_latency_section(measurement, str(tmp_path / "latency")) in text
    assert latency_record.render_levers_section(measurement) in text
    assert script(*common, "--check").returncode == 0
