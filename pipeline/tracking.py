"""MLflow tracking for the pipeline: one run per model per pipeline run or experiment.

The train stage opens the run (after checking the backend answers, so that a broken
backend fails before any training time is spent) and records its id in
models/<model>/mlflow_run.json; evaluate, export and benchmark reopen that run and add
to it. Should the backend fail *during* a stage, the stage warns and finishes untracked:
its model and metrics files are written regardless (they are DVC outputs).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import keras

from lightcnn import io
from pipeline.paths import HOME_ROOT, PROCESSED_DIR

DEFAULT_DB = HOME_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = HOME_ROOT / "mlartifacts"
# What an MLflow model of ours needs to load; given explicitly so that logging never
# spends time (or network) inferring requirements.
MODEL_REQUIREMENTS = ["tensorflow>=2.21,<2.22", "keras>=3.10,<4", "lightcnn"]


class TrackingError(RuntimeError):
    """The MLflow backend cannot be used."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the sqlite database at the project root.

    The path is absolute (HOME_ROOT), so that queued and --temp DVC experiments, which run
    in a copy of the workspace, record into the same database as the workspace.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def experiment_name(data_params: dict, num_classes: int) -> str:
    """MLflow experiment per dataset run: cifar10, cifar100, birds-325, folder-<name>-12..."""
    dataset = data_params["dataset"]
    if dataset in ("cifar10", "cifar100"):
        return dataset
    if dataset == "birds":
        return f"birds-{num_classes}"
    source = data_params.get("source") or "folder"
    stem = Path(source).name.split(".")[0]
    return f"folder-{stem}-{num_classes}"


def manifest_hash() -> str:
    return hashlib.sha256((PROCESSED_DIR / "manifest.json").read_bytes()).hexdigest()


def git_commit() -> str:
    rev = os.environ.get("DVC_EXP_BASELINE_REV")
    if rev:
        return rev
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HOME_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client():
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


def _get_or_create_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        artifact_location = (DEFAULT_ARTIFACTS / name).as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


class ModelRun:
    """The MLflow run of one model. Logging failures after the start only warn."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self._warned = False

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def start(cls, run_file: Path, experiment: str, model: str, resume: bool) -> "ModelRun":
        """Open a new run for `model` (or, when resuming a killed training, its old run).

        Raises TrackingError when the backend does not answer: before training starts.
        """
        uri = tracking_uri()
        try:
            client = _client()
            experiment_id = _get_or_create_experiment(client, experiment)
            if resume and run_file.exists():
                run_id = json.loads(run_file.read_text())["run_id"]
                client.update_run(run_id, status="RUNNING")
            else:
                tags = {"mlflow.runName": model, "model": model, "git_commit": git_commit(),
                        "dataset_manifest_sha256": manifest_hash()}
                if os.environ.get("DVC_EXP_NAME"):
                    tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
                run_id = client.create_run(experiment_id, tags=tags).info.run_id
        except Exception as exc:  # noqa: BLE001 - any backend failure means the same to the user
            raise TrackingError(
                f"MLflow tracking backend {uri!r} cannot be used ({type(exc).__name__}: {exc}). Nothing was trained. "
                "Fix the backend, or point MLFLOW_TRACKING_URI at one that works "
                f"(unset it to use the project's sqlite database {DEFAULT_DB})."
            ) from exc
        io.write_json(run_file, {"run_id": run_id, "experiment": experiment})
        return cls(client, run_id)

    @classmethod
    def reopen(cls, run_file: Path) -> "ModelRun | None":
        """The run the train stage opened; None (with a warning) when it cannot be reached."""
        try:
            run_id = json.loads(run_file.read_text())["run_id"]
            client = _client()
            client.update_run(run_id, status="RUNNING")
            return cls(client, run_id)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"MLflow: cannot reopen the run in {run_file} ({exc}); this stage's results are "
                          "written to metrics/ but not tracked", stacklevel=2)
            return None

    # -- logging (never fatal) -------------------------------------------------------
    def _safely(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if not self._warned:
                warnings.warn(f"MLflow: {what} failed ({type(exc).__name__}: {exc}); continuing untracked — "
                              "models and metrics are still written to disk", stacklevel=3)
                self._warned = True
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self._safely("logging params", self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in sorted(metrics.items())
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self._safely("logging metrics", self.client.log_batch, self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._safely("setting tags", self.client.set_tag, self.run_id, key, value)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if Path(path).exists():
                self._safely(f"logging {path}", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_keras_model(self, model: keras.Model, name: str = "model") -> None:
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        def log() -> None:
            example = np.zeros((1, *model.input_shape[1:]), dtype="float32")
            signature = infer_signature(example, model.predict(example, verbose=0))
            with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
                mlflow.keras.log_model(model, name=name, pip_requirements=MODEL_REQUIREMENTS, signature=signature)
        self._safely("logging the Keras model", log)

    def finish(self, status: str = "FINISHED") -> None:
        self._safely("closing the run", self.client.set_terminated, self.run_id, status)


class EpochLogger(keras.callbacks.Callback):
    """Sends each epoch's Keras logs (loss, accuracy, val_*, lr) to the model's run."""

    def __init__(self, run: ModelRun):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}: nested settings as MLflow params/metrics."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: obj}
