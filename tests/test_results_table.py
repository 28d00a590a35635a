"""The README results table: rendered from run folders, the study's row, the transcribed
mark, and `benchmarks/results_table.py --check` (on temporary README copies only)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightcnn import gpu_record, latency_record, results, suite_record
from lightcnn.study import PUBLISHED_ACCURACY

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "benchmarks" / "results_table.py"


def _run_json(name: str, **changes) -> dict:
    run = {
        "name": name, "what": "our_small, study recipe", "model": "our_small", "mode": "faithful",
        "provenance": "measured", "command": "dvc exp run -S train.recipe=study | tee log",
        "params": {"train": {"recipe": "study", "optimizer": "adam", "learning_rate": 0.001, "schedule": "constant"},
                   "data": {"dataset": "cifar10"}, "mode": "faithful"},
        "seed": 7, "training_data": "CIFAR-10, official archive, 40,000 train / 10,000 validation",
        "dataset": "cifar10", "num_classes": 10, "git_commit": "abc1234",
        "cpu": {"model_name": "Test CPU 9000", "logical_cores": 16, "vector_extensions": ["avx2", "fma"]},
        "wall_seconds": 7800.0, "date": "2026-12-02",
    }
    return {**run, **changes}


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Two fake runs: a measured one (named first, dated later) and a transcribed one."""
    root = tmp_path / "results"
    measured = root / "a-measured"
    measured.mkdir(parents=True)
    (measured / "run.json").write_text(json.dumps(_run_json("a-measured")))
    (measured / "our_small.train.json").write_text(json.dumps(
        {"best_epoch": 141, "best_val_accuracy": 0.861234, "epochs_run": 150, "train_seconds": 7200.0}))
    (measured / "our_small.json").write_text(json.dumps({"top1": 0.85019, "top5": 0.99}))
    transcribed = root / "z-transcribed"
    transcribed.mkdir()
    (transcribed / "run.json").write_text(json.dumps(_run_json(
        "z-transcribed", what="an earlier run", mode="corrected", provenance="transcribed",
        transcribed_from="README.md at commit cb0481e", date="2026-11-25", seed=42, wall_seconds=None,
        cpu={"model_name": "AMD EPYC", "logical_cores": 2, "vector_extensions": None},
        params={"train": {"recipe": "default"}, "data": {}, "mode": "corrected"},
        command="python -m pipeline.compose model=our_small && dvc repro",
        figures={"test_top1": 0.8402, "test_top5": 0.9911, "best_val_accuracy": 0.8506, "best_epoch": 28,
                 "epochs": 30, "train_seconds": 4080.0})))
    return root


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines]
    assert cells[0] == results.HEADER
    return cells[2:]


def test_table_has_the_study_row_first_then_the_runs_oldest_first(runs_dir):
    table = results.render_table(results.load_runs(runs_dir))
    rows = _rows(table)
    assert len(rows) == 3
    study, transcribed, measured = rows
    assert study[0].startswith("**the study** (published): 150 epochs, Adam at a constant lr 1e-3")
    assert study[1] == "`our_small`" and study[4] == "150"
    assert study[7] == f"{100 * PUBLISHED_ACCURACY['cifar10']['our_small']:.2f}%"
    assert "Snapdragon 865" in study[10]
    assert transcribed[0] == "`z-transcribed`: an earlier run *(transcribed)*"
    assert measured[0] == "`a-measured`: our_small, study recipe"


def test_measured_run_figures_come_from_its_metrics_files(runs_dir):
    measured = _rows(results.render_table(results.load_runs(runs_dir)))[2]
    assert dict(zip(results.HEADER, measured)) == {
        "run": "`a-measured`: our_small, study recipe",
        "model": "`our_small`", "mode": "faithful", "recipe": "`study` (adam, lr 0.001, constant)",
        "epochs": "150", "training data": "CIFAR-10, official archive, 40,000 train / 10,000 validation",
        "seed": "7", "test top-1": "85.02%", "best val acc": "86.12% (epoch 141)",
        "time": "2.0 h training, 2.2 h wall",
        "CPU": "Test CPU 9000, 16 cores (avx2, fma)",
        "command": "`dvc exp run -S train.recipe=study \\| tee log`",  # the pipe escaped
    }


def test_transcribed_run_is_marked_and_says_where_its_figures_come_from(runs_dir):
    table = results.render_table(results.load_runs(runs_dir))
    transcribed = dict(zip(results.HEADER, _rows(table)[1]))
    assert transcribed["test top-1"] == "84.02%" and transcribed["best val acc"] == "85.06% (epoch 28)"
    assert transcribed["time"] == "68.0 min training"
    assert transcribed["CPU"] == "AMD EPYC, 2 cores (vector extensions not recorded)"
    assert ("*(transcribed)* `z-transcribed`: figures copied from README.md at commit cb0481e; its metrics "
            "files were never committed.") in table


def test_check_fails_on_a_stale_readme_and_passes_after_a_rewrite(runs_dir, tmp_path):
    readme = tmp_path / "README.md"
    before, after = "# Project\n\nIntro.\n\n", "\n\n## Next section\n"
    latency = (f"\n\n{latency_record.LATENCY_BEGIN_MARK}\n{latency_record.LATENCY_END_MARK}\n\n"
               f"{latency_record.LEVERS_BEGIN_MARK}\n{latency_record.LEVERS_END_MARK}\n\n"
               f"{gpu_record.GPU_BEGIN_MARK}\n{gpu_record.GPU_END_MARK}\n\n"
               f"{suite_record.SUITE_BEGIN_MARK}\n{suite_record.SUITE_END_MARK}")
    readme.write_text(f"{before}{results.BEGIN_MARK}\n| an old table |\n{results.END_MARK}\n\n"
                      f"{results.TFLITE_BEGIN_MARK}\n{results.TFLITE_END_MARK}{latency}{after}")

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), "--readme", str(readme), "--results-dir",
                               str(runs_dir), "--latency-dir", str(tmp_path / "no-latency-yet"),
                               "--gpu-dir", str(tmp_path / "no-gpu-yet"), "--suite-dir",
                               str(tmp_path / "no-suite-time-yet"), *args],
                              capture_output=True, text=True, timeout=120)

    stale = script("--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert "| an old table |" in readme.read_text()  # --check changes nothing

    assert script().returncode == 0
    text = readme.read_text()
    assert text.startswith(before + results.BEGIN_MARK + "\n") and text.endswith(suite_record.SUITE_END_MARK + after)
    assert results.render_table(results.load_runs(runs_dir)) in text
    assert results.render_tflite_table(results.load_runs(runs_dir)) in text
    assert "No latency measurement recorded yet" in text and "No GPU comparison recorded yet" in text
    assert "No suite timing recorded yet" in text
    assert script("--check").returncode == 0

    # A new run makes it stale again.
    (runs_dir / "a-measured" / "our_small.json").write_text(json.dumps({"top1": 0.9}))
    assert script("--check").returncode == 1


def test_a_readme_without_markers_is_an_error_naming_them(runs_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(readme), "--results-dir",
                           str(runs_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and results.BEGIN_MARK in proc.stderr
    assert readme.read_text() == "# Project\n"


@pytest.mark.parametrize("breaking, message", [
    (lambda folder: (folder / "our_small.json").unlink(), "missing our_small.json"),
    (lambda folder: (folder / "run.json").write_text(json.dumps(_run_json("other-name"))), "must match"),
    (lambda folder: (folder / "run.json").write_text(json.dumps(_run_json("a-measured", mode="fixed"))), "'mode'"),
    (lambda folder: (folder / "run.json").write_text(json.dumps(_run_json("a-measured", date="2 Dec"))), "ISO date"),
    (lambda folder: (folder / "run.json").write_text(json.dumps(_run_json("a-measured", provenance="transcribed"))),
     "transcribed_from"),
])
def test_a_broken_run_folder_is_reported_with_the_problem(runs_dir, breaking, message):
    breaking(runs_dir / "a-measured")
    with pytest.raises(results.RunFolderError, match=message) as error:
        results.load_runs(runs_dir)
    assert "a-measured" in str(error.value)


def test_record_run_writes_a_folder_the_table_reads(runs_dir, tmp_path):
    source = runs_dir / "a-measured"
    run = _run_json("b-recorded", date="2026-12-03")
    folder = results.record_run(tmp_path / "new", run, {"train": source / "our_small.train.json",
                                                        "eval": source / "our_small.json"})
    assert sorted(path.name for path in folder.iterdir()) == ["our_small.json", "our_small.train.json", "run.json"]
    assert results.load_run(folder)["figures"]["test_top1"] == 0.85019
    with pytest.raises(FileExistsError):
        results.record_run(tmp_path / "new", run, {"train": source / "our_small.train.json",
                                                   "eval": source / "our_small.json"})
    # A run the table could not read is never left behind.
    with pytest.raises(results.RunFolderError):
        results.record_run(tmp_path / "new", _run_json("c-broken"), {"train": source / "our_small.train.json"})
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["b-recorded"]


def test_the_committed_earlier_run_is_transcribed_with_its_readme_figures():
    run = results.load_run(PROJECT_ROOT / "docs" / "results" / "our_small-default-30ep-2026-11-25")
    assert run["provenance"] == "transcribed" and "cb0481e" in run["transcribed_from"]
    assert run["figures"] == {"test_top1": 0.8402, "test_top5": 0.9911, "best_val_accuracy": 0.8506,
                              "best_epoch": 28, "epochs": 30, "train_seconds": 68.0 * 60}
    assert run["command"] == "python -m pipeline.compose model=our_small && dvc repro"
    assert run["params"]["train"]["recipe"] == "default" and run["mode"] == "corrected"


def test_record_command_copies_a_pipeline_run_into_a_run_folder(tmp_path):
    workspace = tmp_path / "workspace"
    metrics = workspace / "metrics" / "models" / "our_small" / "seed-7"
    metrics.mkdir(parents=True)
    (workspace / "params.yaml").write_text("data:\n  dataset: cifar10\n  source: ../shared/data/cifar10-jpeg.tar.gz\n")
    config = {"recipe": "default", "epochs": 2, "optimizer": "adamw", "learning_rate": 0.002, "schedule": "cosine",
              "model_mode": "corrected", "seed": 7}
    (metrics / "train.json").write_text(json.dumps({"best_epoch": 2, "best_val_accuracy": 0.31, "epochs_run": 2,
                                                    "train_seconds": 65.0, "seed": 7, "config": config}))
    (metrics / "eval.json").write_text(json.dumps({"top1": 0.3, "top5": 0.8}))
    results_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--results-dir", str(results_dir), "record", "--name", "tiny-run",
         "--what", "a 2-epoch check", "--model", "our_small", "--seed", "7", "--command", "dvc repro",
         "--training-data", "CIFAR-10, 100 images", "--workspace", str(workspace), "--git-commit", "abc1234",
         "--date", "2026-12-01", "--wall-seconds", "80"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = results.load_run(results_dir / "tiny-run")
    assert run["mode"] == "corrected" and run["params"]["train"] == config and run["seed"] == 7
    assert run["params"]["data"]["dataset"] == "cifar10" and run["cpu"]["model_name"]
    assert run["figures"]["test_top1"] == 0.3 and run["figures"]["epochs"] == 2
    assert sorted(path.name for path in (results_dir / "tiny-run").iterdir()) == \
        ["our_small.json", "our_small.train.json", "run.json"]


def test_the_real_readme_table_is_current(tmp_path):
    """Checked on a copy: the README's results table is what the committed run folders give."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    if results.BEGIN_MARK not in text:
        pytest.skip("README.md has no results-table markers yet")
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(readme)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + "\nrun `python benchmarks/results_table.py` and commit README.md"


def _tflite_json(keras_top1: float, int8_top1: float, recipe: bool = True) -> dict:
    variant = {"top1": keras_top1, "agreement": 1.0, "size_bytes": 3 * 2**20, "max_abs_diff": 1e-6, "num_images": 1000}
    figures = {"keras_top1": keras_top1, "eval_images": 1000, "float32": variant, "float16": variant,
               "int8": {**variant, "top1": int8_top1, "agreement": 0.97, "size_bytes": 2**20}}
    if recipe:
        figures.update(representative_images=200, int8_recipe={"io_dtype": "int8", "per_channel": True,
                                                               "hard_swish": "decomposed",
                                                               "fold_stochastic_depth": True})
    return figures


def test_tflite_table_gives_each_variant_beside_keras_and_the_int8_loss(runs_dir):
    (runs_dir / "a-measured" / "our_small.tflite.json").write_text(json.dumps(_tflite_json(0.8512, 0.8431)))
    table = results.render_tflite_table(results.load_runs(runs_dir))
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in lines[0][2:-2].split(" | ")] == results.TFLITE_HEADER
    (row,) = [dict(zip(results.TFLITE_HEADER, (cell.strip() for cell in line[2:-2].split(" | "))))
              for line in lines[2:]]  # the transcribed run has no tflite.json: no row
    assert row == {"run": "`a-measured`", "model": "`our_small`", "test images": "1,000", "Keras top-1": "85.12%",
                   "float32 top-1": "85.12%", "float16 top-1": "85.12%", "int8 top-1": "84.31%",
                   "int8 − Keras": "-0.81 points", "int8 agrees with Keras": "97.00%",
                   "float32 / int8 size": "3.00 / 1.00 MiB",
                   "int8 recipe": "int8 edges, per-channel, decomposed hard-swish, fold, 200 calibration images"}
    (runs_dir / "a-measured" / "our_small.tflite.json").write_text(json.dumps(_tflite_json(0.5, 0.5, recipe=False)))
    assert "not recorded" in results.render_tflite_table(results.load_runs(runs_dir))


def test_a_tflite_file_without_its_figures_is_refused_naming_it(runs_dir):
    broken = _tflite_json(0.85, 0.84)
    del broken["int8"]["top1"]
    (runs_dir / "a-measured" / "our_small.tflite.json").write_text(json.dumps(broken))
    with pytest.raises(results.RunFolderError, match=r"our_small.tflite.json: 'int8' must hold top1"):
        results.load_runs(runs_dir)
