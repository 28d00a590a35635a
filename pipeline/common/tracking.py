"""MLflow tracking: one run per model and seed per pipeline execution, never touched by another.

An *execution* is one `dvc repro` / `dvc exp run` (one DVC process; a queued experiment is its
own), or one stage script run by hand. Its id is the DVC process's pid and start time, so every
stage of one execution finds the same run and no stage of another execution ever does.

- train opens the execution's run of its model (or, resuming a killed training, adopts its
  own earlier run), logs params and the dataset, per-epoch curves and the model, and ends it.
- evaluate, export and benchmark only write their metrics files (DVC outputs).
- record, the last stage of each model, writes everything the execution's run does not hold
  yet from those files (a run it creates itself when DVC skipped or restored the training),
  tags the run that trained the model, and ends the run FINISHED. A run it creates names the
  model that the training run logged (an MLflow model input: one copy of each model file,
  whatever the number of executions that evaluate or benchmark it), or logs the model itself
  when no tracked run logged that file (an untracked training).
A stage that fails ends its execution's run FAILED, one that is interrupted KILLED; a run left
RUNNING by a SIGKILLed execution is ended KILLED by the next execution that touches the model.
Run ids live in MLflow and in files DVC does not track: they are never DVC dependencies.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.common.errors import TrackingError
from pipeline.common.paths import HOME_ROOT

DEFAULT_DB = HOME_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = HOME_ROOT / "mlartifacts"
# What an MLflow model of ours needs to load; given explicitly so that logging never
# spends time (or network) inferring requirements.
MODEL_REQUIREMENTS = ["tensorflow>=2.21,<2.22", "keras>=3.10,<4", "lightcnn"]
EXECUTION_TAG = "lightcnn.execution"
MODEL_DIGEST_TAG = "lightcnn.model_sha256"
TRAINED_IN_TAG = "lightcnn.trained_in_run"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the sqlite database at the project root.

    The path is absolute (HOME_ROOT), so that queued and --temp DVC experiments, which run
    in a copy of the workspace, record into the same database as the workspace.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def default_tracking_uri() -> str:
    """The project's own sqlite database (DEFAULT_DB)."""
    return f"sqlite:///{DEFAULT_DB}"


def experiment_name(manifest: dict) -> str:
    """MLflow experiment per dataset: cifar10, cifar100, birds-325, folder-<name>-12..."""
    dataset, num_classes = manifest["dataset"], manifest["num_classes"]
    if dataset in ("cifar10", "cifar100"):
        return dataset
    if dataset == "birds":
        return f"birds-{num_classes}"
    source = manifest.get("source") or {}
    where = source.get("path") or source.get("url") or "folder" if isinstance(source, dict) else str(source)
    return f"folder-{Path(str(where)).name.split('.')[0]}-{num_classes}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=HOME_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source and Version columns) and the DVC experiment."""
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git("rev-parse", "HEAD") or "unknown"
    remote = re.sub(r"^(\w+://)[^/@]+@", r"\1", _git("remote", "get-url", "origin"))  # never a credential
    # The UI shows a PROJECT source as the name's last path part up to its last '.', then
    # ":<entry point>": "lightcnn:dvc.yaml".
    tags = {"mlflow.source.type": "PROJECT", "mlflow.source.name": remote or "lightcnn",
            "mlflow.project.entryPoint": "dvc.yaml", "mlflow.source.git.commit": commit, "git_commit": commit}
    if remote:
        tags["mlflow.source.git.repoURL"] = remote
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def execution_id() -> str:
    """host:pid:start-time of the DVC process running this stage (this process when none)."""
    import psutil

    process = psutil.Process()
    chosen = process
    for parent in process.parents():
        try:
            argv = parent.cmdline()
        except psutil.Error:
            continue
        if any(Path(arg).name == "dvc" for arg in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
            chosen = parent
            break
    return f"{socket.gethostname()}:{chosen.pid}:{chosen.create_time():.3f}"


def _execution_alive(execution: str) -> bool:
    import psutil

    host, pid, started = execution.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's: not ours to judge
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1e-2
    except (psutil.Error, ValueError):
        return False


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """MLflow's HTTP client retries a refused connection for minutes (7 retries, doubling
    waits): where the question is only whether the backend answers, ask it briefly."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client():
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


def _get_or_create_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifact_location = None
        # On the project's database, artifacts go beside it (an absolute path): MLflow's default,
        # ./mlruns of the working directory, would put a queued experiment's artifacts into its
        # temporary copy of the workspace, deleted when it ends. (The environment cannot tell:
        # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI.)
        if tracking_uri() == default_tracking_uri():
            artifact_location = (DEFAULT_ARTIFACTS / name).as_uri()
        experiment_id = client.create_experiment(name, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
    # MLflow 3 opens experiments on its GenAI overview unless told they hold model training.
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    return experiment_id


def _backend_error(exc: Exception) -> TrackingError:
    return TrackingError(
        f"MLflow tracking backend {tracking_uri()!r} cannot be used ({type(exc).__name__}: {exc}). Nothing was "
        "trained. Fix the backend, or point MLFLOW_TRACKING_URI at one that works "
        f"(unset it to use the project's sqlite database {DEFAULT_DB}).")


def _run_filter(model: str, seed: int) -> str:
    return f"tags.model = '{model}' and tags.seed = '{seed}'"


class ModelRun:
    """The MLflow run of one model and seed in this execution. Logging failures only warn."""

    def __init__(self, client, run_id: str, experiment_id: str, created: bool):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.created = created  # by this stage (so nothing of earlier stages is in it yet)
        self._warned = False

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, model: str, seed: int, manifest: dict, adopt_run_id: str | None = None) -> "ModelRun":
        """This execution's run of (model, seed): found, adopted (a resumed training's own), or created.

        Runs of (model, seed) left RUNNING by executions that are no longer alive are ended
        KILLED first. Raises TrackingError when the backend does not answer.
        """
        execution = execution_id()
        try:
            client = _client()
            with _fail_fast():
                client.search_experiments(max_results=1)  # the backend answers, or we stop here
            experiment_id = _get_or_create_experiment(client, experiment_name(manifest))
            if adopt_run_id is not None:
                client.set_tag(adopt_run_id, EXECUTION_TAG, execution)
            runs = client.search_runs([experiment_id], _run_filter(model, seed), max_results=200)
            mine = None
            for run in runs:
                owner = run.data.tags.get(EXECUTION_TAG, "")
                if owner == execution:
                    mine = run
                elif run.info.status == "RUNNING" and not _execution_alive(owner):
                    client.set_terminated(run.info.run_id, "KILLED")
            if mine is not None:
                client.update_run(mine.info.run_id, status="RUNNING")
                return cls(client, mine.info.run_id, experiment_id, created=False)
            tags = {"mlflow.runName": f"{model} seed {seed}", "model": model, "seed": str(seed),
                    EXECUTION_TAG: execution, "dataset_manifest_sha256": manifest_digest(manifest),
                    **source_tags()}
            run_id = client.create_run(experiment_id, tags=tags).info.run_id
        except Exception as exc:  # noqa: BLE001 - any backend failure means the same to the user
            raise _backend_error(exc) from exc
        run = cls(client, run_id, experiment_id, created=True)
        run.log_dataset(manifest)
        return run

    @classmethod
    def of_this_execution(cls, model: str, seed: int) -> "ModelRun | None":
        """This execution's run of (model, seed) if one exists (any experiment); never creates one."""
        try:
            client = _client()
            with _fail_fast():
                experiments = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(experiments, _run_filter(model, seed)
                                      + f" and tags.`{EXECUTION_TAG}` = '{execution_id()}'", max_results=1)
        except Exception:  # noqa: BLE001 - only used on the way out of a failing stage
            return None
        return cls(client, runs[0].info.run_id, runs[0].info.experiment_id, created=False) if runs else None

    # -- logging (never fatal) -------------------------------------------------------
    def _safely(self, what: str, fn, *args, **kwargs) -> Any:
        """Call the backend; after its first failure, stop calling it (each call would retry
        for minutes) and finish the stage untracked."""
        if self._warned:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"MLflow: {what} failed ({type(exc).__name__}: {exc}); continuing untracked — "
                          "models and metrics are still written to disk", stacklevel=3)
            self._warned = True
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self._safely("logging params", self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in sorted(metrics.items())
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(items), 500):
            self._safely("logging metrics", self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def log_history(self, history_csv: Path) -> None:
        """Per-epoch curves from a history.csv (one step per epoch)."""
        from mlflow.entities import Metric

        if not history_csv.exists():
            return
        with open(history_csv, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        items = [Metric(key, float(value), 0, int(row["epoch"])) for row in rows for key, value in row.items()
                 if key != "epoch" and value not in ("", None)]
        for i in range(0, len(items), 500):
            self._safely("logging curves", self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._safely("setting tags", self.client.set_tag, self.run_id, key, value)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if Path(path).exists():
                self._safely(f"logging {path}", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dataset(self, manifest: dict) -> None:
        """The dataset as an MLflow dataset input (the UI's Dataset column): name, digest, source."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source = manifest.get("source")
        dataset = Dataset(
            name=manifest["dataset"], digest=manifest_digest(manifest)[:12],
            source_type="local" if not isinstance(source, dict) or source.get("kind") != "download" else "http",
            source=json.dumps(source if source is not None else {}, sort_keys=True, default=str),
            profile=json.dumps({"num_classes": manifest["num_classes"],
                                "examples": {s: v.get("num_examples") for s, v in manifest.get("splits", {}).items()}}))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        self._safely("logging the dataset", self.client.log_inputs, self.run_id, datasets=inputs)

    def log_keras_model(self, model_path: Path, name: str = "model", model_sha256: str | None = None) -> None:
        """Log the Keras model file as this run's MLflow model and tag its sha256 (model_sha256:
        the digest when the caller has it already)."""
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        from lightcnn.models import load_model

        def log() -> None:
            model = load_model(model_path)
            # Shapes and dtypes are all a signature holds: no need to run the model for them.
            example = np.zeros((1, *model.input_shape[1:]), dtype="float32")
            signature = infer_signature(example, np.zeros((1, *model.output_shape[1:]), dtype="float32"))
            with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
                mlflow.keras.log_model(model, name=name, pip_requirements=MODEL_REQUIREMENTS, signature=signature)
        self._safely("logging the Keras model", log)
        self.set_tags({MODEL_DIGEST_TAG: model_sha256 or file_sha256(model_path)})

    def logged_model_of(self, run_id: str) -> str | None:
        """The id of the model (MLflow LoggedModel, ready) that run `run_id` of this run's experiment
        logged, if any."""
        from mlflow.entities import LoggedModelStatus

        found = self._safely("searching logged models", self.client.search_logged_models,
                             [self.experiment_id], f"source_run_id = '{run_id}'")
        ready = [model for model in found or [] if model.status == LoggedModelStatus.READY]
        return max(ready, key=lambda model: model.creation_timestamp).model_id if ready else None

    def link_model(self, model_id: str, model_sha256: str) -> None:
        """Name an already logged model as this run's; model_sha256: the digest of the file it holds."""
        from mlflow.entities import LoggedModelInput

        self._safely("linking the model", self.client.log_inputs, self.run_id, models=[LoggedModelInput(model_id)])
        self.set_tags({MODEL_DIGEST_TAG: model_sha256})

    def holds(self) -> tuple[set[str], set[str]]:
        """The metric keys and param keys this run already has."""
        run = self._safely("reading the run", self.client.get_run, self.run_id)
        if run is None:
            return set(), set()
        return set(run.data.metrics), set(run.data.params)

    def run_that_trained(self, model_sha256: str) -> str | None:
        """The id of the run of this experiment whose training produced the model file with this sha256."""
        found = self._safely("searching runs", self.client.search_runs, [self.experiment_id],
                             f"tags.`{MODEL_DIGEST_TAG}` = '{model_sha256}' and tags.`lightcnn.trained` = 'true'",
                             order_by=["attributes.start_time ASC"], max_results=1)
        return found[0].info.run_id if found else None

    def finish(self, status: str = "FINISHED") -> None:
        self._safely("closing the run", self.client.set_terminated, self.run_id, status)


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()


def run_params(model: str, train_config: dict, manifest: dict) -> dict[str, Any]:
    """What every run of a model holds as params, whichever stage opened it: the model, its
    training settings (train.json's config) and the data's (the manifest's preprocess params)."""
    return {"model": model, **flatten("train", train_config), **flatten("data", manifest.get("params", {})),
            "data.num_classes_effective": manifest["num_classes"]}


def result_params(tflite: dict, latency: dict) -> dict[str, Any]:
    """The settings that made a run's export and latency files, read from those files (so a
    run completed from files DVC restored names what made them): export.representative_images,
    export.int8_recipe.*, benchmark.threads, benchmark.warmup, benchmark.runs."""
    params = {}
    if tflite:
        params["export.representative_images"] = tflite.get("representative_images")
        params.update(flatten("export.int8_recipe", tflite.get("int8_recipe", {})))
    timed = [result for variant, per_thread in latency.items() if variant != "cpu" and isinstance(per_thread, dict)
             for result in per_thread.values() if isinstance(result, dict)]
    if timed:
        params["benchmark.threads"] = sorted({result["threads"] for result in timed})
        params.update({f"benchmark.{key}": timed[0][key] for key in ("warmup", "runs") if key in timed[0]})
    return {key: value for key, value in params.items() if value is not None}


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}: nested settings as MLflow params/metrics."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: obj}
