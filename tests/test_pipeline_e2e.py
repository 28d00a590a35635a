"""End to end: the real DVC pipeline, in a temporary copy of the repository.

`dvc repro` runs every stage for our_small with two seeds on a small subset of the real
CIFAR-10 (12 images per class and split, one epoch); MLflow records into the copy's sqlite
database. The tests inspect what a user would: metrics files, the two-seed comparison table,
MLflow runs (one per model and seed per execution), `dvc status` and `dvc exp run --dry`.
Each stage's params reads are audited against its declared params.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline_project import read_json, make_project, run

MODEL, SEEDS = "our_small", [1, 2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("e2e") / "project"
    audit = root.parent / "params-audit.jsonl"
    env = make_project(root, models=[MODEL], seeds=SEEDS, extra_env={"LIGHTCNN_PARAMS_AUDIT": str(audit)})
    run(["dvc", "repro"], root, env)
    return root, env


def mlflow_runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10")
    return client, experiment, client.search_runs([experiment.experiment_id])


def test_repro_writes_every_output_for_each_seed(project):
    root, _ = project
    for seed in SEEDS:
        metrics = root / "metrics" / "models" / MODEL / f"seed-{seed}"
        evaluation = read_json(metrics / "eval.json")
        assert 0.0 <= evaluation["top1"] <= evaluation["top5"] <= 1.0
        assert evaluation["num_examples"] == 12 * 10
        train = read_json(metrics / "train.json")
        assert train["seed"] == seed and train["epochs_run"] == 1 and train["config"]["seed"] == seed
        tflite = read_json(metrics / "tflite.json")
        model_dir = root / "models" / MODEL / f"seed-{seed}"
        for variant in ("float32", "float16", "int8"):
            assert (model_dir / "tflite" / f"{variant}.tflite").stat().st_size == tflite[variant]["size_bytes"]
        latency = read_json(metrics / "latency.json")
        assert 0 < latency["float32"]["1"]["median_ms"] <= latency["float32"]["1"]["p90_ms"]
        assert (metrics / "gradcam.png").stat().st_size > 0
        assert (model_dir / "history.csv").read_text().startswith("epoch")
    # Two seeds trained differently (the seed reaches the weights and the data order).
    histories = [(root / "models" / MODEL / f"seed-{s}" / "history.csv").read_text() for s in SEEDS]
    assert histories[0] != histories[1]


def test_the_two_seed_table_gives_mean_std_and_n_and_says_what_each_number_is(project):
    root, _ = project
    comparison = (root / "metrics" / "comparison.md").read_text()
    row = next(line for line in comparison.splitlines() if line.startswith(f"| `{MODEL}` |"))
    assert "±" in row and "n=2" in row, row
    for header in ("JPEG copy", "Recipe", "`default`", "corrected", "Seeds", "1, 2", "Commit",
                   "150 epochs", "Snapdragon 865"):
        assert header in comparison, header
    rows = read_json(root / "metrics" / "comparison.json")["datasets"][0]["rows"]
    assert [r["model"] for r in rows] == [MODEL]
    assert (root / "metrics" / "accuracy_vs_latency.png").stat().st_size > 0


def test_one_complete_mlflow_run_per_model_and_seed(project):
    root, _ = project
    import mlflow

    client, experiment, runs = mlflow_runs(root)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert sorted(r.data.tags["seed"] for r in runs) == [str(s) for s in SEEDS]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["train.epochs"] == "1" and r.data.params["train.seed"] == r.data.tags["seed"]
        assert r.data.params["data.max_per_class"] == "12"
        for key in ("test_top1", "tflite.int8.top1", "tflite.float32.size_bytes", "macs",
                    "latency.float32.threads1.median_ms", "val_accuracy", "train_best_val_accuracy"):
            assert key in r.data.metrics, key
        assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 1  # one epoch
        assert len(r.data.tags["mlflow.source.git.commit"]) == 40
        assert r.data.tags["lightcnn.trained_in_run"] == r.info.run_id  # trained in this very run
        assert [i.dataset.name for i in r.inputs.dataset_inputs] == ["cifar10"]
        logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                             filter_string=f"source_run_id = '{r.info.run_id}'", output_format="list")
        assert len(logged) == 1
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "tflite")}
        assert {"tflite/float32.tflite", "tflite/float16.tflite", "tflite/int8.tflite"} <= artifacts
        assert {a.path for a in client.list_artifacts(r.info.run_id, "evaluation")} >= {"evaluation/gradcam.png"}


def test_each_stage_read_exactly_the_params_it_declares(project):
    """Measured: every key a stage declares in dvc.yaml was read by it, and it read no other."""
    root, _ = project
    last: dict[str, dict] = {}
    for line in (root.parent / "params-audit.jsonl").read_text().splitlines():
        entry = json.loads(line)
        last[entry["stage"]] = entry  # the last line of a stage has all it read
    stages = {"fetch", "preprocess", "latency", "report"} | {f"{s}@{MODEL}-{seed}" for s in
                                                 ("train", "evaluate", "export", "benchmark", "record")
                                                 for seed in SEEDS}
    assert set(last) == stages - {f"record@{MODEL}-{seed}" for seed in SEEDS}  # record reads no params
    for stage, entry in last.items():
        declared = set(entry["declared"])
        read = set(entry["read"])
        unread = {d for d in declared if not any(r == d or r.startswith(d + ".") for r in read)}
        assert not unread, f"{stage} declares params it never reads: {sorted(unread)}"


def test_changing_a_seed_or_an_unselected_model_dirties_only_what_it_should(project):
    root, env = project
    params_path = root / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["per_model"]["mobilenetv3_small"]["learning_rate"] = 0.5  # a model that is not selected
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert set(json.loads(run(["dvc", "status", "--json"], root, env).stdout)) <= {"fetch"}  # fetch: always
        params["per_model"][MODEL]["label_smoothing"] = 0.2
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        status = run(["dvc", "status", "--json"], root, env).stdout
        changed = {name for name in json.loads(status) if name != "fetch"}  # fetch: always changed
        assert changed == {f"train@{MODEL}-{seed}" for seed in SEEDS}, changed
        params["per_model"][MODEL]["label_smoothing"] = None
        params["train"]["seeds"] = SEEDS + [3]
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        changed = {name for name in json.loads(run(["dvc", "status", "--json"], root, env).stdout) if name != "fetch"}
        assert {f"train@{MODEL}-1", f"train@{MODEL}-2"}.isdisjoint(changed) and f"train@{MODEL}-3" in changed, changed
    finally:
        params_path.write_text(original)


def test_selecting_another_model_brings_in_only_its_stages(project):
    """`dvc exp run -S model=our_large` composes this selection; DVC would then run our_large's stages."""
    root, env = project
    params_path = root / "params.yaml"
    original = params_path.read_text()
    try:
        run([sys.executable, "-m", "pipeline.compose", "model=our_large"], root, env)
        pending = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout)) - {"fetch"}
        per_model = {name for name in pending if "@" in name}
        assert per_model == {f"{stage}@our_large-{seed}" for stage in ("train", "evaluate", "export", "benchmark",
                                                                          "record") for seed in SEEDS}, pending
        assert pending - per_model <= {"latency", "report"}, pending
    finally:
        params_path.write_text(original)
