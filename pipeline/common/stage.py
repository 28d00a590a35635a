"""Entry point shared by the stage scripts.

    stage.run("train", main, per_model=True)   # python -m pipeline.train <model> <seed>

Validates params.yaml and builds the stage's params view (stage name `train@<model>-<seed>`
for per-model stages, as DVC names them), then calls main(params, ...). User errors print one
clear message and exit 2, no traceback (LIGHTCNN_DEBUG=1 shows it). When a per-model stage
fails or is interrupted (SIGINT, SIGTERM), its execution's MLflow run is ended FAILED or KILLED.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from lightcnn.data import DataError
from pipeline.common import tracking
from pipeline.common.errors import ParamsError, TrackingError
from pipeline.common.params import StageParams, load_params, stage_params
from pipeline.common.paths import PROJECT_ROOT

USER_ERRORS = (ParamsError, TrackingError, DataError)


class Interrupted(BaseException):
    """SIGTERM (e.g. `kill`, a scheduler's timeout) turned into an exception, like SIGINT's."""


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")


def model_and_seed(argv: list[str]) -> tuple[str, int]:
    if len(argv) != 2 or not argv[1].lstrip("-").isdigit():
        raise ParamsError(f"usage: python -m pipeline.<stage> <model> <seed> (got {' '.join(argv) or 'nothing'})")
    return argv[0], int(argv[1])


def _end_run(model: str, seed: int, status: str) -> None:
    run = tracking.ModelRun.of_this_execution(model, seed)
    if run is not None:
        run.finish(status)


def _exit_on_user_error(exc: BaseException) -> None:
    if isinstance(exc, USER_ERRORS) and not os.environ.get("LIGHTCNN_DEBUG"):
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def say(params: StageParams, message: str) -> None:
    """One line of progress on stdout, flushed at once so that `dvc repro` shows it as it
    happens: `<stage name>: <message>`."""
    print(f"{params.stage}: {message}", flush=True)


def check_params_first(*, per_model: bool = False) -> None:
    """Validate the command line and params.yaml before a stage's slow imports (Keras and
    TensorFlow: seconds), so that a mistake is reported at once; run() validates again."""
    try:
        if per_model:
            model_and_seed(sys.argv[1:])
        load_params(PROJECT_ROOT / "params.yaml")
    except USER_ERRORS as exc:
        _exit_on_user_error(exc)
        raise


def run(stage: str, main: Callable[..., None], *, per_model: bool = False) -> None:
    signal.signal(signal.SIGTERM, _raise_interrupted)
    argv = sys.argv[1:]
    model_seed: tuple[str, int] | None = None
    try:
        if per_model:
            model_seed = model_and_seed(argv)
            params: StageParams = stage_params(f"{stage}@{model_seed[0]}-{model_seed[1]}")
            main(params, *model_seed)
        else:
            main(stage_params(stage))
    except (KeyboardInterrupt, Interrupted):
        if model_seed:
            _end_run(*model_seed, "KILLED")
        raise SystemExit(130)
    except BaseException as exc:
        if model_seed and not isinstance(exc, SystemExit):
            _end_run(*model_seed, "FAILED")
        _exit_on_user_error(exc)
        raise
