"""Recorded GPU comparisons (docs/gpu/<name>/) and the README section generated from them.

The contract with the producer, benchmarks/gpu_comparison.py, is tested where that script
runs (tests/test_backends.py records its real output); these tests use output written here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightcnn import gpu_record, suite_record
from lightcnn.study import PUBLISHED_ACCURACY

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "benchmarks" / "results_table.py"


def _row(model: str, accuracy: float) -> dict:
    return {"model": model, "device": "Test GPU", "precision": "float32", "epochs": 30, "batch_size": 128,
            "train_images": 40000, "test_images": 10000, "test_accuracy": accuracy,
            "best_val_accuracy": accuracy + 0.01, "best_epoch": 29, "train_seconds": 300.0, "images_per_second": 6000.0, "device_peak_bytes": 2**30,
            "params": 923137}


def _script_output(folder: Path, jobs: int = 4, drop: str | None = None) -> Path:
    """What gpu_comparison.py writes with --output folder/comparison.json --log-dir folder."""
    rows = [_row("our_small", 0.844), _row("mobilenetv3_small", 0.8616)]
    if drop:
        del rows[0][drop]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps({"rows": rows, "probes": [], "jobs": jobs,
                                                        "command": "gpu_comparison.py", "wall_seconds": 409.0}))
    for model in ("our_small", "mobilenetv3_small"):
        (folder / f"train-{model}.log").write_text("Epoch 1/30\n")
    (folder / "unrelated.txt").write_text("not copied")
    return folder


def _record(name: str = "2026-11-27-test", date: str = "2026-11-27") -> dict:
    return {"name": name, "what": "two models, 30 epochs", "command": "bash benchmarks/gpu_comparison.sh run",
            "git_commit": "abcdef1234567", "date": date, "machine": "Test GPU, 16 CPU cores",
            "software": "JAX 0.0.1", "training_data": "CIFAR-10, JPEG copy", "recipe": "default, seed 0"}


def test_a_recorded_comparison_renders_each_model_beside_the_study(tmp_path):
    folder = gpu_record.record_gpu_comparison(tmp_path / "gpu", _script_output(tmp_path / "out"), _record())
    assert sorted(path.name for path in folder.iterdir()) == \
        ["comparison.json", "train-mobilenetv3_small.log", "train-our_small.log"]
    section = gpu_record.render_gpu_section(gpu_record.latest_gpu_comparison(tmp_path / "gpu"))
    study = PUBLISHED_ACCURACY["cifar10"]["our_small"]
    assert f"| `our_small` | 84.40% | {100 * study:.2f}% | 85.40% (29) | 5.0 min | 6,000 | 1.00 GiB | 923,137 |" \
        in section
    assert "| `mobilenetv3_small` | 86.16% |" in section
    assert "4 models trained at once" in section and "Test GPU, 16 CPU cores; JAX 0.0.1" in section
    alone = gpu_record.render_gpu_section(
        gpu_record.load_gpu_comparison(gpu_record.record_gpu_comparison(
            tmp_path / "gpu2", _script_output(tmp_path / "out1", jobs=1), _record())))
    assert "trained at once" not in alone


def test_the_newest_comparison_is_shown(tmp_path):
    gpu_dir = tmp_path / "gpu"
    assert gpu_record.latest_gpu_comparison(gpu_dir) is None
    assert "No GPU comparison recorded yet" in gpu_record.render_gpu_section(None)
    gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "a"), _record("newer", "2026-11-27"))
    gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "b"), _record("older", "2026-11-20"))
    assert gpu_record.latest_gpu_comparison(gpu_dir)["record"]["name"] == "newer"


def test_incomplete_output_and_bad_names_are_refused_and_leave_nothing(tmp_path):
    gpu_dir = tmp_path / "gpu"
    gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "out"), _record())
    with pytest.raises(FileExistsError, match="exists already"):
        gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "out"), _record())
    with pytest.raises(gpu_record.GpuFolderError, match=r"rows\[0\] lacks test_accuracy"):
        gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "bad", drop="test_accuracy"),
                                         _record("incomplete"))
    with pytest.raises(FileNotFoundError, match="--log-dir"):
        gpu_record.record_gpu_comparison(gpu_dir, tmp_path / "empty", _record("nothing"))
    with pytest.raises(ValueError, match="plain folder name"):
        gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "out"), _record("../escape"))
    unrecorded = _record("no-recipe")
    del unrecorded["recipe"]
    with pytest.raises(gpu_record.GpuFolderError, match="'record' lacks recipe"):
        gpu_record.record_gpu_comparison(gpu_dir, _script_output(tmp_path / "out"), unrecorded)
    assert sorted(path.name for path in gpu_dir.iterdir()) == ["2026-11-27-test"]


def test_record_gpu_command_publishes_and_the_readme_check_follows(tmp_path):
    readme = tmp_path / "README.md"
    from lightcnn import latency_record, results

    readme.write_text("\n\n".join(f"{begin}\n{end}" for begin, end in (
        (results.BEGIN_MARK, results.END_MARK), (results.TFLITE_BEGIN_MARK, results.TFLITE_END_MARK),
        (latency_record.LATENCY_BEGIN_MARK, latency_record.LATENCY_END_MARK),
        (latency_record.LEVERS_BEGIN_MARK, latency_record.LEVERS_END_MARK),
        (gpu_record.GPU_BEGIN_MARK, gpu_record.GPU_END_MARK),
        (suite_record.SUITE_BEGIN_MARK, suite_record.SUITE_END_MARK))) + "\n")
    (tmp_path / "runs").mkdir()
    common = ["--readme", str(readme), "--results-dir", str(tmp_path / "runs"), "--latency-dir",
              str(tmp_path / "latency"), "--gpu-dir", str(tmp_path / "gpu"),
              "--suite-dir", str(tmp_path / "suite-time")]

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)

    record = _record("first")
    options = [item for key in ("what", "command", "machine", "software", "recipe")
               for item in (f"--{key}", record[key])]
    recorded = script(*common, "record-gpu", "--name", "first", "--from", str(_script_output(tmp_path / "out")),
                      "--training-data", record["training_data"], "--git-commit", "abcdef1234567",
                      "--date", "2026-11-27", *options)
    assert recorded.returncode == 0, recorded.stderr
    stored = json.loads((tmp_path / "gpu" / "first" / "comparison.json").read_text())
    assert stored["record"] == record
    assert script(*common, "--check").returncode == 1
    assert script(*common).returncode == 0
    assert gpu_record.render_gpu_section(gpu_record.latest_gpu_comparison(tmp_path / "gpu"),
                                         str(tmp_path / "gpu")) in readme.read_text()
    assert script(*common, "--check").returncode == 0
