"""pipeline/common/tracking.py on MLflow's default backend for this project (a sqlite file at
the project root), without DVC: what the pipeline tests (which use an `mlflow server`) do not
cover. Real MLflow, a real sqlite database in a temporary folder."""
from __future__ import annotations

import socket

import pytest

from pipeline.common import tracking
from pipeline.common.errors import TrackingError

MANIFEST = {"dataset": "cifar10", "num_classes": 10, "source": {"kind": "local", "path": "x.tar.gz"},
            "splits": {"train": {"num_examples": 120}}}


@pytest.fixture
def sqlite_default(tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI: the project's sqlite database, here in tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "DEFAULT_DB", tmp_path / "mlflow.db")
    monkeypatch.setattr(tracking, "DEFAULT_ARTIFACTS", tmp_path / "mlartifacts")
    return tmp_path


def test_without_a_uri_runs_go_to_the_project_sqlite_database(sqlite_default, tmp_path):
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tracking.ModelRun.open("our_small", 3, MANIFEST)
    assert run.created and (tmp_path / "mlflow.db").exists()
    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,val_accuracy\n1,0.5,0.4\n2,0.6,0.55\n")
    run.log_params({"train.epochs": 2, "train.milestones": [1, 2]})
    run.log_history(history)
    run.log_artifacts([history])
    run.finish()

    stored = run.client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.artifact_uri.startswith((tmp_path / "mlartifacts" / "cifar10").as_uri())
    assert stored.data.params == {"train.epochs": "2", "train.milestones": "[1, 2]"}
    assert [m.value for m in run.client.get_metric_history(run.run_id, "val_accuracy")] == [0.4, 0.55]
    assert [i.dataset.name for i in stored.inputs.dataset_inputs] == ["cifar10"]
    assert {a.path for a in run.client.list_artifacts(run.run_id)} == {"history.csv"}
    experiment = run.client.get_experiment(stored.info.experiment_id)
    assert experiment.name == "cifar10" and experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_one_execution_reopens_its_own_run_and_sweeps_dead_ones(sqlite_default, monkeypatch):
    # An earlier execution whose DVC process is gone (no such pid), its run left RUNNING.
    with monkeypatch.context() as patch:
        patch.setattr(tracking, "execution_id", lambda: f"{socket.gethostname()}:999999999:1.000")
        dead = tracking.ModelRun.open("our_small", 3, MANIFEST)
    first = tracking.ModelRun.open("our_small", 3, MANIFEST)  # this execution (this live process)
    assert first.created and first.run_id != dead.run_id
    assert first.client.get_run(dead.run_id).info.status == "KILLED"
    assert tracking.ModelRun.open("our_small", 3, MANIFEST).run_id == first.run_id  # same execution: same run
    assert tracking.ModelRun.open("our_small", 4, MANIFEST).run_id != first.run_id  # another seed
    assert tracking.ModelRun.of_this_execution("our_small", 3).run_id == first.run_id
    assert first.client.get_run(first.run_id).info.status == "RUNNING"  # alive: never swept


def test_an_unreachable_backend_is_refused_at_once_with_its_address(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingError, match=rf"MLflow tracking backend 'http://127.0.0.1:{port}' cannot be used"):
        tracking.ModelRun.open("our_small", 3, MANIFEST)
