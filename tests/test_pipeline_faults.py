"""Fault sweep of the real pipeline (README, "Faults tried"): kills, a vanished MLflow server,
DVC's run cache and parallel queued experiments. MLflow runs behind an `mlflow server` on
127.0.0.1 started by the tests. After every fault: `dvc repro` recovers, nothing half-written
is used, no MLflow run is left RUNNING and no run is written by another execution.

Each test builds on the state the previous ones left (one project for the module), so they
run in file order.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.pipeline_project import MlflowServer, make_project, read_json, run

MODEL, SEED = "our_small", 7
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("faults") / "project"
    root.mkdir(parents=True)
    server = MlflowServer(root.parent / "mlflow.db", root.parent, dict(os.environ)).start()
    env = make_project(root, models=[MODEL], seeds=[SEED], extra_env={"MLFLOW_TRACKING_URI": server.uri})
    server.env = env
    run(["dvc", "repro"], root, env)
    yield root, env, server
    server.stop()


def client_for(server: MlflowServer):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def all_runs(server: MlflowServer) -> list:
    client = client_for(server)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def assert_no_run_left_running(server: MlflowServer) -> None:
    running = [(r.info.run_name, r.info.run_id) for r in all_runs(server) if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"


def snapshot(server: MlflowServer) -> dict:
    """Every run's metrics and tags, to show that later executions never write into them."""
    return {r.info.run_id: (r.info.status, dict(r.data.metrics), r.data.tags.get("lightcnn.trained_in_run"))
            for r in all_runs(server)}


def repro_killed_at(stage_prefix: str, root: Path, env: dict, after_seconds: float = 4.0) -> None:
    """Start `dvc repro`, SIGKILL its whole process group a few seconds into `stage_prefix`."""
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(f"Running stage '{stage_prefix}"):
                time.sleep(after_seconds)
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(line.startswith(f"Running stage '{stage_prefix}") for line in seen), "".join(seen)[-3000:]


def set_param(root: Path, env: dict, *overrides: str) -> None:
    run(["python", "-m", "pipeline.compose", *overrides], root, env)


def test_a_rerun_of_one_stage_opens_a_new_complete_run_and_leaves_the_old_one_alone(project):
    root, env, server = project
    before = snapshot(server)
    (trained,) = before
    run(["dvc", "exp", "run", "-n", "more-warmup", "-S", "benchmark.warmup=3"], root, env)
    after = snapshot(server)
    assert {k: after[k] for k in before} == before  # the training execution's run is untouched
    (new,) = set(after) - set(before)
    status, metrics, trained_in = after[new]
    assert status == "FINISHED" and trained_in == trained
    for key in ("test_top1", "tflite.int8.top1", "latency.float32.threads1.median_ms", "val_accuracy"):
        assert key in metrics, key
    run_data = client_for(server).get_run(new).data
    assert run_data.tags["dvc_exp_name"] == "more-warmup" and run_data.params["train.epochs"] == "1"


def test_sigkill_during_export_and_during_benchmark_then_repro_recovers(project):
    root, env, server = project
    paths = root / "models" / MODEL / f"seed-{SEED}"
    set_param(root, env, "export.eval_images=50")
    repro_killed_at("export@", root, env)
    set_param(root, env, "export.eval_images=50", "benchmark.warmup=4")
    repro_killed_at("benchmark@", root, env, after_seconds=2.0)
    run(["dvc", "repro"], root, env)
    assert set(json.loads(run(["dvc", "status", "--json"], root, env).stdout)) <= {"fetch"}  # fetch: always
    tflite = read_json(root / "metrics" / "models" / MODEL / f"seed-{SEED}" / "tflite.json")
    assert tflite["eval_images"] == 50
    for variant in ("float32", "float16", "int8"):
        assert (paths / "tflite" / f"{variant}.tflite").stat().st_size == tflite[variant]["size_bytes"]
    assert not list(root.rglob("*.tmp*")), list(root.rglob("*.tmp*"))
    assert_no_run_left_running(server)


def test_mlflow_server_stopping_mid_training_loses_no_results_and_leaves_no_run_running(project):
    root, env, server = project
    set_param(root, env, "export.eval_images=50", "benchmark.warmup=4", "train.label_smoothing=0.2")
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(f"Running stage 'train@"):
            deadline = time.time() + 120  # wait until the stage has opened its run, then pull the plug
            while not any(r.info.status == "RUNNING" for r in all_runs(server)) and time.time() < deadline:
                time.sleep(0.5)
            server.stop()
            break
    out += proc.stdout.readlines()
    assert proc.wait(timeout=900) != 0  # record cannot reach the backend: the pipeline stops there, clearly
    text = "".join(out)
    assert "MLflow tracking backend" in text and "Traceback" not in text, text[-3000:]
    train = read_json(root / "metrics" / "models" / MODEL / f"seed-{SEED}" / "train.json")
    assert train["config"]["label_smoothing"] == 0.2  # training finished and wrote its results untracked
    server.start()
    run(["dvc", "repro"], root, env)  # completes the record; the run cut off is ended KILLED
    assert_no_run_left_running(server)


def test_restored_from_the_run_cache_still_gets_a_complete_run(project):
    root, env, server = project
    before = set(snapshot(server))
    run(["dvc", "exp", "run", "-n", "back", "-S", "train.label_smoothing=null", "-S", "export.eval_images=50",
         "-S", "benchmark.warmup=4"], root, env)
    new = set(snapshot(server)) - before
    assert len(new) == 1, new  # DVC restored train (no training), record still opened this execution's run
    data = client_for(server).get_run(new.pop()).data
    assert "test_top1" in data.metrics and "val_accuracy" in data.metrics
    assert data.tags["lightcnn.trained_in_run"] in before  # the run that trained this exact model file
    assert_no_run_left_running(server)


def test_parallel_queued_experiments_each_get_their_own_complete_run(project):
    root, env, server = project
    before = set(snapshot(server))
    for warmup in (5, 6):
        run(["dvc", "exp", "run", "--queue", "-n", f"queued-{warmup}", "-S", f"benchmark.warmup={warmup}",
             "-S", "export.eval_images=50"], root, env)
    run(["dvc", "queue", "start", "-j", "2"], root, env)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], root, env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "queued-5"], root, env, check=False).stdout
    new = [r for r in all_runs(server) if r.info.run_id not in before]
    names = sorted(r.data.tags.get("dvc_exp_name", "") for r in new)
    assert names == ["queued-5", "queued-6"], names
    for r in new:
        assert r.info.status == "FINISHED" and "latency.float32.threads1.median_ms" in r.data.metrics
    assert_no_run_left_running(server)
