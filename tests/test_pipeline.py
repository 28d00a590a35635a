"""The real DVC pipeline end to end, then a fault sweep on the same project.

One temporary copy of the repository (tests/pipeline_project.py) for the whole module, with
MLflow behind an `mlflow server` on 127.0.0.1 started by the test. Its tests run in file order
and each builds on the state the previous ones left, as a user's project would:

1. `dvc repro` runs every stage for the smoke network (lightcnn.models.specs: one block of each
   kind), one seed, on a small subset of the real CIFAR-10 (12 images per class and split, one
   epoch). What is tested here is the pipeline and its record, not an architecture: the study's
   networks are built, trained, saved and exported by the other test files (test_models,
   test_export, test_model_modes); our_small here cost 26 s more per `dvc repro` alone
   (79 s against 53 s, AMD EPYC 2 cores). The tests inspect what a user would: metrics
   files, the comparison table, the MLflow run, `dvc status` (what a change of seeds, of an
   unselected model's settings or of the selection would rerun); each stage's params reads are
   audited against its declared params. How several seeds are aggregated is tested on the
   report alone (test_report.py): a second seed here would repeat every stage for nothing new.
2. The fault sweep (README, "Faults tried"), each fault where it costs least, on one new
   training (a new learning rate): the MLflow server stops in the middle of training and the
   same execution is SIGKILLed in export; the next one, the server still down, is SIGKILLed in
   benchmark; the next stops at record, clearly; then the server is back, and back at the first
   settings DVC restores the first training from its run cache. Two queued experiments run in
   parallel. After every fault `dvc repro` recovers, nothing half-written is used, no
   MLflow run is left RUNNING and no execution writes into another's run.

MLflow's HTTP client retries a refused connection for about four minutes by default; the
project's environment shortens that with MLflow's own settings (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
..._BACKOFF_FACTOR), so that the vanished server is noticed in seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.common.tracking import TRAINED_IN_TAG
from tests.pipeline_project import MlflowServer, make_project, read_json, run

MODEL, SEED = "smoke", 1
NEW_LEARNING_RATE = f"per_model.{MODEL}.learning_rate=0.01"  # a new training of the same stage
PER_MODEL_STAGES = ("train", "evaluate", "export", "benchmark", "record")  # one of each per model and seed
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, cifar10_subset):
    """(root, env, MLflow server, id of the run that trained the model, train.json as first written).

    The data: the session's subset of the shared CIFAR-10 JPEG archive (conftest.cifar10_subset),
    whose first 12 images per class and split are the whole archive's: fetch hashes 1 MB
    instead of 19 MB and preprocess lists 3,000 members instead of 60,000 (twice)."""
    root = tmp_path_factory.mktemp("pipeline") / "project"
    root.mkdir(parents=True)
    audit = root.parent / "params-audit.jsonl"
    server = MlflowServer(root.parent / "mlflow.db", root.parent, dict(os.environ)).start()
    try:  # the server is stopped even when the first repro fails
        env = make_project(root, source=cifar10_subset, models=[MODEL], seeds=[SEED], extra_env={
            "LIGHTCNN_PARAMS_AUDIT": str(audit), "MLFLOW_TRACKING_URI": server.uri,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
        server.env = env
        run(["dvc", "repro"], root, env)
        trained_in = [r.info.run_id for r in all_runs(server)]
        assert len(trained_in) == 1, trained_in
        first_train_json = (metrics_dir(root) / "train.json").read_text()
        yield root, env, server, trained_in[0], first_train_json
    finally:
        server.stop()


# ----------------------------------------------------------------------------- MLflow helpers


def client_for(server: MlflowServer):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def all_runs(server: MlflowServer) -> list:
    client = client_for(server)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def models_logged_in(server: MlflowServer, run_id: str) -> list[str]:
    """The ids of the models (MLflow LoggedModels) that run `run_id` logged itself."""
    client = client_for(server)
    experiment_id = client.get_run(run_id).info.experiment_id
    return [m.model_id for m in client.search_logged_models([experiment_id], f"source_run_id = '{run_id}'")]


def models_named_by(server: MlflowServer, run_id: str) -> list[str]:
    """The ids of the logged models that run `run_id` names as its inputs."""
    return [m.model_id for m in client_for(server).get_run(run_id).inputs.model_inputs]


def assert_no_run_left_running(server: MlflowServer) -> None:
    running = [(r.info.run_name, r.info.run_id) for r in all_runs(server) if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"


def snapshot(server: MlflowServer) -> dict:
    """Every run's status, metrics and training tag, to show that later executions never write into them."""
    return {r.info.run_id: (r.info.status, dict(r.data.metrics), r.data.tags.get("lightcnn.trained_in_run"))
            for r in all_runs(server)}


def repro_killed_at(progress: str, root: Path, env: dict, on_line: dict | None = None) -> str:
    """Start `dvc repro`, SIGKILL its whole process group as soon as a stage prints a progress
    line starting with `progress` (pipeline.common.stage.say): the stage is then in the middle
    of its work on any machine, where a fixed delay would land after the end on a fast one.

    on_line: {line prefix: callable} to call when such a line is printed, earlier in the same
    execution. Returns what `dvc repro` printed.
    """
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            for prefix, action in (on_line or {}).items():
                if line.startswith(prefix):
                    action()
            if line.startswith(progress):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(seen)
    assert any(line.startswith(progress) for line in seen), text[-3000:]
    return text


def stop_queue_workers(root: Path, env: dict, grace_s: float = 30.0) -> None:
    """`dvc queue stop`, then SIGTERM any queue worker of this project still alive after `grace_s`.

    A worker can outlive its queue: once (2026-11-27) dvc-task's monitor decided to shut a
    worker down ("shutting down due to empty queue") while that worker's task was still
    running; the task succeeded, the worker never exited and ignored `dvc queue stop`, and a
    SIGTERM ended it (a warm shutdown). The workers are those DVC records as not yet exited
    (.dvc/tmp/exps/celery/dvc-exp-worker-N.json), checked to be queue workers before the signal."""
    run(["dvc", "queue", "stop"], root, env, check=False)
    records = (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")
    alive = [info["pid"] for info in map(read_json, records) if info.get("returncode") is None]
    deadline = time.time() + grace_s
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [pid for pid in alive if _is_queue_worker(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGTERM)


def _is_queue_worker(pid: int) -> bool:
    try:
        return b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # exited (or no /proc: nothing to check it against, so no signal either)
        return False


def set_param(root: Path, env: dict, *overrides: str) -> None:
    run([sys.executable, "-m", "pipeline.compose", *overrides], root, env)


def metrics_dir(root: Path, model: str = MODEL) -> Path:
    return root / "metrics" / "models" / model / f"seed-{SEED}"


def model_dir(root: Path, model: str = MODEL) -> Path:
    return root / "models" / model / f"seed-{SEED}"


def changed_stages(root: Path, env: dict) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], root, env).stdout)) - {"fetch"}  # fetch: always


# ----------------------------------------------------------------------------- 1. the pipeline


def test_repro_writes_every_output(project):
    root, *_ = project
    metrics, models = metrics_dir(root), model_dir(root)
    evaluation = read_json(metrics / "eval.json")
    assert 0.0 <= evaluation["top1"] <= evaluation["top5"] <= 1.0
    assert evaluation["num_examples"] == 12 * 10
    train = read_json(metrics / "train.json")
    assert train["seed"] == SEED and train["epochs_run"] == 1 and train["config"]["seed"] == SEED
    tflite = read_json(metrics / "tflite.json")
    for variant in ("float32", "float16", "int8"):
        assert (models / "tflite" / f"{variant}.tflite").stat().st_size == tflite[variant]["size_bytes"]
    latency = read_json(metrics / "latency.json")
    assert 0 < latency["float32"]["1"]["median_ms"] <= latency["float32"]["1"]["p90_ms"]
    assert (metrics / "gradcam.png").stat().st_size > 0
    assert (models / "history.csv").read_text().startswith("epoch")


def test_the_table_says_what_each_number_is(project):
    root, *_ = project
    comparison = (root / "metrics" / "comparison.md").read_text()
    assert any(line.startswith(f"| `{MODEL}` |") for line in comparison.splitlines()), comparison
    for header in ("JPEG copy", "Recipe", "`default`", "corrected", "Seeds", "Commit", "150 epochs",
                   "Snapdragon 865"):
        assert header in comparison, header
    rows = read_json(root / "metrics" / "comparison.json")["datasets"][0]["rows"]
    assert [r["model"] for r in rows] == [MODEL]
    assert (root / "metrics" / "accuracy_vs_latency.png").stat().st_size > 0


def test_one_complete_mlflow_run_per_model_and_seed(project):
    _, _, server, trained_in_e2e, _ = project
    import mlflow

    client = client_for(server)
    experiment = client.get_experiment_by_name("cifar10")
    runs = client.search_runs([experiment.experiment_id])
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert [r.data.tags["seed"] for r in runs] == [str(SEED)]
    mlflow.set_tracking_uri(server.uri)
    (r,) = runs
    assert r.info.status == "FINISHED"
    assert r.data.params["train.epochs"] == "1" and r.data.params["train.seed"] == r.data.tags["seed"]
    assert r.data.params["data.max_per_class"] == "12"
    # train logged the run's settings; record added those of export and benchmark, from their files
    assert r.data.params["export.representative_images"] == "16" and r.data.params["benchmark.runs"] == "200"
    assert r.data.params["benchmark.threads"] == "[1]"
    for key in ("test_top1", "tflite.int8.top1", "tflite.float32.size_bytes", "macs",
                "latency.float32.threads1.median_ms", "val_accuracy", "train_best_val_accuracy"):
        assert key in r.data.metrics, key
    assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 1  # one epoch
    assert len(r.data.tags["mlflow.source.git.commit"]) == 40
    assert r.data.tags[TRAINED_IN_TAG] == r.info.run_id == trained_in_e2e  # trained in this very run
    assert [i.dataset.name for i in r.inputs.dataset_inputs] == ["cifar10"]
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                         filter_string=f"source_run_id = '{r.info.run_id}'", output_format="list")
    assert len(logged) == 1
    signature = mlflow.models.get_model_info(f"models:/{logged[0].model_id}").signature.to_dict()
    assert (json.loads(signature["inputs"])[0]["tensor-spec"], json.loads(signature["outputs"])[0]["tensor-spec"]) == (
        {"dtype": "float32", "shape": [-1, 32, 32, 3]}, {"dtype": "float32", "shape": [-1, 10]})
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "tflite")}
    assert {"tflite/float32.tflite", "tflite/float16.tflite", "tflite/int8.tflite"} <= artifacts
    assert {a.path for a in client.list_artifacts(r.info.run_id, "evaluation")} >= {"evaluation/gradcam.png"}


def test_each_stage_read_exactly_the_params_it_declares(project):
    """Measured: every key a stage declares in dvc.yaml was read by it, and it read no other."""
    root, *_ = project
    last: dict[str, dict] = {}
    for line in (root.parent / "params-audit.jsonl").read_text().splitlines():
        entry = json.loads(line)
        last[entry["stage"]] = entry  # the last line of a stage has all it read
    stages = {"fetch", "preprocess", "latency", "report"} | {f"{s}@{MODEL}-{SEED}" for s in PER_MODEL_STAGES
                                                             if s != "record"}  # record reads no params
    assert set(last) == stages
    for stage, entry in last.items():
        declared = set(entry["declared"])
        read = set(entry["read"])
        unread = {d for d in declared if not any(r == d or r.startswith(d + ".") for r in read)}
        assert not unread, f"{stage} declares params it never reads: {sorted(unread)}"


def test_changing_a_seed_or_an_unselected_model_dirties_only_what_it_should(project):
    root, env, *_ = project
    params_path = root / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["per_model"]["mobilenetv3_small"]["learning_rate"] = 0.5  # a model that is not selected
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert changed_stages(root, env) == set()
        params["per_model"][MODEL]["label_smoothing"] = 0.2
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert changed_stages(root, env) == {f"train@{MODEL}-{SEED}"}
        params["per_model"][MODEL]["label_smoothing"] = None
        params["train"]["seeds"] = [SEED, 3]  # a second seed: its own stages, the first seed's untouched
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        changed = changed_stages(root, env)
        assert f"train@{MODEL}-{SEED}" not in changed and f"train@{MODEL}-3" in changed, changed
        assert {name for name in changed if "@" in name} == {f"{stage}@{MODEL}-3" for stage in PER_MODEL_STAGES}, \
            changed
    finally:
        params_path.write_text(original)


def test_selecting_another_model_brings_in_only_its_stages(project):
    """`dvc exp run -S model=our_large` composes this selection; DVC would then run our_large's stages."""
    root, env, *_ = project
    params_path = root / "params.yaml"
    original = params_path.read_text()
    try:
        run([sys.executable, "-m", "pipeline.compose", "model=our_large"], root, env)
        pending = changed_stages(root, env)
        per_model = {name for name in pending if "@" in name}
        assert per_model == {f"{stage}@our_large-{SEED}" for stage in PER_MODEL_STAGES}, pending
        assert pending - per_model <= {"latency", "report"}, pending
    finally:
        params_path.write_text(original)


# ----------------------------------------------------------------------------- 2. the fault sweep


def test_mlflow_server_stopping_mid_training_then_sigkills_in_export_and_in_benchmark(project):
    """A sequence of faults on one new training (a new learning rate), each met by the next
    `dvc repro`: the MLflow server stops while the model trains (training goes on untracked),
    and that execution is SIGKILLed in export. With the server still down, the next execution
    reruns export and is SIGKILLed in benchmark; the one after it reruns benchmark and stops at
    record with one clear message. Once the server is back, `dvc repro` finishes and ends the
    cut-off run KILLED. Back at the first settings, DVC restores the first training (and what
    follows it) from its run cache: the run of that execution names the run that trained the
    model. Every earlier run is left as it was.

    Each kill comes when the stage says it has begun the work that writes its results: export
    when it starts converting (before any file is written), benchmark when it starts timing the
    first variant. That execution times 20,000 runs per variant (about 2.3 s each here; the
    quick settings' 200 could end before the signal on a fast machine); the executions after
    it are back at the quick settings."""
    root, env, server, trained_in_e2e, first_train_json = project
    metrics, paths = metrics_dir(root), model_dir(root)
    before = snapshot(server)
    set_param(root, env, NEW_LEARNING_RATE, "benchmark.runs=20000")  # this execution trains again

    # The server stops once training has opened its run and says so, before its first epoch.
    printed = repro_killed_at(f"export@{MODEL}-{SEED}: converting", root, env,
                              on_line={f"train@{MODEL}-{SEED}: starting": server.stop})
    assert "continuing untracked" in printed, printed[-3000:]  # training went on and said so
    assert not (metrics / "tflite.json").exists()  # killed before export wrote its results
    retrained = read_json(metrics / "train.json")  # training finished and wrote its results untracked
    assert retrained["epochs_run"] == 1 and retrained["config"]["learning_rate"] == 0.01, retrained["config"]
    assert (metrics / "train.json").read_text() != first_train_json

    printed = repro_killed_at(f"benchmark@{MODEL}-{SEED}: timing", root, env)
    assert f"Running stage 'export@{MODEL}-{SEED}'" in printed, printed[-3000:]  # export rerun after its kill
    assert (metrics / "tflite.json").exists() and not (metrics / "latency.json").exists()  # killed in benchmark

    set_param(root, env, NEW_LEARNING_RATE)  # the quick benchmark settings again
    proc = run(["dvc", "repro"], root, env, check=False)
    assert proc.returncode != 0  # record cannot reach the backend: the pipeline stops there, clearly
    text = proc.stdout + proc.stderr
    assert "MLflow tracking backend" in text and "Traceback" not in text, text[-3000:]
    assert f"Running stage 'benchmark@{MODEL}-{SEED}'" in text  # benchmark was rerun after its kill
    assert "Running stage 'export@" not in text

    server.start()
    run(["dvc", "repro"], root, env)  # completes the record; the run cut off is ended KILLED
    assert changed_stages(root, env) == set()
    tflite = read_json(metrics / "tflite.json")
    for variant in ("float32", "float16", "int8"):
        assert (paths / "tflite" / f"{variant}.tflite").stat().st_size == tflite[variant]["size_bytes"]
    assert read_json(metrics / "latency.json")["float32"]["1"]["median_ms"] > 0
    assert not list(root.rglob("*.tmp*")), list(root.rglob("*.tmp*"))
    after = snapshot(server)
    assert {k: after[k] for k in before} == before  # no execution wrote into an earlier one's run
    cut_off = [r for r in all_runs(server) if r.data.tags.get("lightcnn.trained") == "true"
               and r.info.run_id not in before]
    assert [r.info.status for r in cut_off] == ["KILLED"], cut_off
    (completed,) = [r for r in all_runs(server) if r.info.run_id not in before and r.info.run_id != cut_off[0].info.run_id]
    assert completed.data.tags[TRAINED_IN_TAG].startswith("unknown")  # no tracked run logged that model file
    assert len(models_logged_in(server, completed.info.run_id)) == 1  # so record logged it itself
    assert_no_run_left_running(server)

    before = snapshot(server)
    set_param(root, env)  # the first settings
    printed = run(["dvc", "repro"], root, env).stdout
    for stage in ("train", "evaluate", "export", "benchmark"):  # each restored, none run again
        assert f"Stage '{stage}@{MODEL}-{SEED}' is cached - skipping run, checking out outputs" in printed, \
            printed[-3000:]
    assert (metrics / "train.json").read_text() == first_train_json  # restored, not trained
    assert changed_stages(root, env) == set()
    after = snapshot(server)
    assert {k: after[k] for k in before} == before
    new = set(after) - set(before)
    assert len(new) == 1, new
    restored_run = new.pop()
    data = client_for(server).get_run(restored_run).data
    assert "lightcnn.trained" not in data.tags  # DVC restored train: nothing trained in this execution
    for key in ("test_top1", "tflite.int8.top1", "latency.float32.threads1.median_ms", "val_accuracy"):
        assert key in data.metrics, key
    # the whole record's settings, though this execution trained nothing: read from the files DVC restored
    for key in ("train.learning_rate", "data.seed", "data.image_size", "export.representative_images",
                "benchmark.runs", "benchmark.threads"):
        assert key in data.params, (key, sorted(data.params))
    assert data.tags[TRAINED_IN_TAG] == trained_in_e2e  # the run that trained this exact model file
    # ... and the model that run logged, named, not uploaded again
    assert models_named_by(server, restored_run) == models_logged_in(server, trained_in_e2e) != []
    assert models_logged_in(server, restored_run) == []
    assert_no_run_left_running(server)


def test_parallel_queued_experiments_each_get_their_own_complete_run(project):
    """Two queued experiments that rerun only some stages, run by `dvc queue start -j 2`: each
    gets a new complete run; every earlier run is left as it was.

    First the results are committed, as a user does after `dvc repro` (dvc.lock, the metrics):
    a queued experiment starts from a commit, and without a committed dvc.lock it would rerun
    evaluate too (its outputs are not in DVC's cache): 61 s in the suite instead of 47."""
    root, env, server, trained_in_e2e, _ = project
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "results"]):
        run(cmd, root, env)
    before = snapshot(server)
    for warmup in (5, 6):
        run(["dvc", "exp", "run", "--queue", "-n", f"queued-{warmup}", "-S", f"benchmark.warmup={warmup}"], root, env)
    start_log = root.parent / "queue-start.log"
    try:
        with open(start_log, "w") as log:  # not a pipe: the workers it spawns would hold it open
            started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=root, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, timeout=120)
        assert started.returncode == 0, start_log.read_text()
        # Wait for each experiment's own terminal status: neither "Queued" nor "Running" in the
        # listing is not enough, since a task that a worker is taking from DVC's file broker is
        # listed under neither for a moment (seen once: the test went on while a record stage
        # still had its run open).
        deadline = time.time() + 900
        while time.time() < deadline:
            status = run(["dvc", "queue", "status"], root, env).stdout
            ended = {line.split()[1] for line in status.splitlines()
                     if len(line.split()) >= 3 and line.split()[-1] in ("Success", "Failed")}
            if {"queued-5", "queued-6"} <= ended:
                break
            time.sleep(3)
    finally:
        stop_queue_workers(root, env)
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "queued-5"], root, env, check=False).stdout
    assert {"queued-5", "queued-6"} <= ended, status  # both ended within the deadline
    after = snapshot(server)
    assert {k: after[k] for k in before} == before
    new = [client_for(server).get_run(run_id) for run_id in set(after) - set(before)]
    assert sorted(r.data.tags.get("dvc_exp_name", "") for r in new) == ["queued-5", "queued-6"]
    for r in new:
        assert r.info.status == "FINISHED" and "latency.float32.threads1.median_ms" in r.data.metrics
        assert r.data.tags[TRAINED_IN_TAG] == trained_in_e2e and r.data.params["train.epochs"] == "1"
        # the setting each experiment changed, as a param of its own run (read from its latency file)
        assert r.data.params["benchmark.warmup"] == r.data.tags["dvc_exp_name"].removeprefix("queued-")
        assert models_named_by(server, r.info.run_id) == models_logged_in(server, trained_in_e2e) != []
    assert_no_run_left_running(server)
