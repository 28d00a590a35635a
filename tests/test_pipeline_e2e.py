"""End to end: the real DVC pipeline, in a temporary copy of the repository.

`dvc repro` runs every stage on a small subset of the real CIFAR-10 (30 images per class
and split, one epoch), MLflow records into the copy's sqlite database, and the tests
below inspect what a user would: metrics files, MLflow runs, the MLflow server's REST
API, `dvc status`, `dvc exp run -S model=...` and `dvc exp show`.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import CIFAR10_JPEG, PROJECT_ROOT

MODELS = ["mobilenetv3_large", "mobilenetv3_small", "our_large", "our_small"]
# Quick settings, written into the copy's conf/config.yaml (not passed as overrides) so that
# `dvc exp run -S ...`, which composes params.yaml from conf/ again, keeps them.
QUICK = {
    "data": {"source": str(CIFAR10_JPEG), "max_per_class": 30},
    "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32},
    "export": {"representative_images": 32, "eval_images": 100},
    "benchmark": {"threads": [1], "warmup": 5},
    "report": {"gradcam_images": 4},
}

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    """A git copy of the working tree (tracked + untracked, not ignored files) with quick params."""
    root = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = PROJECT_ROOT / name
        if src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", TF_CPP_MIN_LOG_LEVEL="2",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@localhost",
               PYTHONPATH=str(root))
    conf = yaml.safe_load((root / "conf" / "config.yaml").read_text())
    for section, values in QUICK.items():
        conf[section].update(values)
    (root / "conf" / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    run([sys.executable, "-m", "pipeline.compose"], root, env)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        run(cmd, root, env)
    run(["dvc", "repro"], root, env, timeout=1500)
    return root, env


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_repro_writes_metrics_for_all_four_models(project):
    root, _ = project
    for model in MODELS:
        evaluation = read_json(root / "metrics" / "models" / f"{model}.json")
        assert 0.0 <= evaluation["top1"] <= evaluation["top5"] <= 1.0
        assert evaluation["num_examples"] == 100 * 3  # 30 per class x 10 classes, test split
        assert evaluation["params"] > 0
        tflite = read_json(root / "metrics" / "models" / f"{model}.tflite.json")
        for variant in ("float32", "float16", "int8"):
            assert (root / "models" / model / "tflite" / f"{variant}.tflite").stat().st_size == tflite[variant]["size_bytes"]
        latency = read_json(root / "metrics" / "models" / f"{model}.latency.json")
        assert latency["macs"] > 0
        for variant in ("float32", "float16", "int8"):
            assert 0 < latency[variant]["1"]["median_ms"] <= latency[variant]["1"]["p90_ms"]
        assert (root / "metrics" / "models" / model / "gradcam.png").stat().st_size > 0
        assert (root / "models" / model / "history.csv").read_text().startswith("epoch")
    comparison = (root / "metrics" / "comparison.md").read_text()
    # The main table: one row per model, with ours and the study's accuracy side by side.
    rows = [line for line in comparison.splitlines() if any(line.startswith(f"| `{m}` |") for m in MODELS) and "%" in line]
    assert len(rows) == 4, comparison
    assert (root / "metrics" / "accuracy_vs_latency.png").stat().st_size > 0
    datasets = read_json(root / "metrics" / "comparison.json")["datasets"]
    assert {row["model"] for run in datasets for row in run["rows"]} == set(MODELS)


def test_mlflow_has_one_run_per_model_with_params_metrics_tags_and_model(project):
    root, _ = project
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(MODELS)
    for r in runs:
        model = r.data.tags["model"]
        assert r.data.params["train.epochs"] == "1"
        assert r.data.params["data.max_per_class"] == "30"
        for key in ("test_top1", "test_top5", "tflite.int8.top1", "macs", "latency.float32.threads1.median_ms"):
            assert key in r.data.metrics, (model, key)
        assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 1  # one epoch
        assert len(r.data.tags["git_commit"]) == 40
        assert len(r.data.tags["dataset_manifest_sha256"]) == 64
        assert json.loads((root / "models" / model / "mlflow_run.json").read_text())["run_id"] == r.info.run_id
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                             filter_string=f"source_run_id = '{r.info.run_id}'", output_format="list")
        assert len(logged) == 1, model
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "tflite")}
        assert {"tflite/float32.tflite", "tflite/float16.tflite", "tflite/int8.tflite"} <= artifacts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_serves_the_pipeline_runs(project):
    root, env = project
    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=cifar10", timeout=5) as r:
                    experiment_id = json.load(r)["experiment"]["experiment_id"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                assert time.time() < deadline, "mlflow server did not answer within 90 s"
                time.sleep(1)
        request = urllib.request.Request(f"{base}/runs/search", data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            runs = json.load(r)["runs"]
        by_model = {next(t["value"] for t in run["data"]["tags"] if t["key"] == "model"): run for run in runs}
        assert sorted(by_model) == sorted(MODELS)
        for run_data in by_model.values():
            metrics = {m["key"]: m["value"] for m in run_data["data"]["metrics"]}
            assert 0.0 <= metrics["test_top1"] <= 1.0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_changing_one_models_setting_dirties_only_that_model(project):
    root, env = project
    params_path = root / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["per_model"]["our_small"]["label_smoothing"] = 0.2
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        status = run(["dvc", "status"], root, env).stdout
        assert "train@our_small" in status
        for other in ("mobilenetv3_large", "mobilenetv3_small", "our_large"):
            assert other not in status, status
        assert "fetch" not in status and "preprocess" not in status
    finally:
        params_path.write_text(original)
    assert "up to date" in run(["dvc", "status"], root, env).stdout


def test_forced_retraining_is_deterministic(project):
    root, env = project
    stages = ["train@our_small", "evaluate@our_small"]
    outputs = []
    for _ in range(2):
        run(["dvc", "repro", "-f", "-s", *stages], root, env)
        outputs.append(((root / "metrics/models/our_small.json").read_bytes(),
                        (root / "models/our_small/history.csv").read_text()))
    assert outputs[0][0] == outputs[1][0]
    strip_time = [[row.rsplit(",", 1)[0] for row in history.splitlines()] for _, history in outputs]
    assert strip_time[0] == strip_time[1]


def test_exp_run_with_one_model_runs_only_its_stages(project):
    root, env = project
    proc = run(["dvc", "exp", "run", "-n", "only-our-large", "-S", "model=our_large", "-S", "train.epochs=2"], root, env)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@our_large", "evaluate@our_large", "export@our_large", "benchmark@our_large", "report"}, proc.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    revs = [r for baseline in shown for exp in (baseline.get("experiments") or []) for r in exp["revs"]]
    names = {r.get("name") for r in revs}
    assert "only-our-large" in names, names
    data = next(r for r in revs if r.get("name") == "only-our-large")["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["selected"] == ["our_large"]
    metrics = data["metrics"]["metrics/models/our_large.json"]["data"]
    assert 0.0 <= metrics["top1"] <= 1.0
    train = data["metrics"]["metrics/models/our_large.train.json"]["data"]
    assert train["epochs_run"] == 2
