"""Training: settings (TrainConfig, RECIPES, resolve_config), the backend and devices it runs
on, and train_model.

Modules: config (settings and recipes; no Keras), backend (backend selection, determinism
flags, precision, data parallelism; Keras only inside its functions), optimizer (schedules,
optimiser, compile), checkpoint (checkpoint files, run identity, history.csv), callbacks
(the epoch recorder) and loop (train_model).

Importing this package does not import Keras: the names from optimizer, checkpoint,
callbacks and loop load on first use, so a program can resolve its settings and call
select_backend(config.backend) before Keras is imported.
"""
from __future__ import annotations

from lightcnn import lazy_names
from lightcnn.training.backend import (
    BackendError,
    imported_backend,
    is_primary_process,
    prepare_process,
    select_backend,
)
from lightcnn.training.config import (
    BACKENDS,
    CONFIG_KEYS,
    DISTRIBUTIONS,
    LR_REFERENCE_BATCH,
    OPTIMIZERS,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    resolve_config,
)

_LAZY = {
    "make_learning_rate": "optimizer", "make_optimizer": "optimizer", "compile_model": "optimizer",
    "current_learning_rate": "optimizer",
    "HISTORY_COLUMNS": "checkpoint", "Checkpoint": "checkpoint", "checkpoint_epoch": "checkpoint",
    "write_history_csv": "checkpoint",
    "EpochRecorder": "callbacks",
    "train_model": "loop", "seed_everything": "loop", "check_dataset": "loop", "count_batches": "loop",
}

__all__ = [
    "BACKENDS", "CONFIG_KEYS", "DISTRIBUTIONS", "LR_REFERENCE_BATCH", "OPTIMIZERS", "PRECISIONS", "RECIPES",
    "SCHEDULES", "BackendError", "TrainConfig", "imported_backend", "is_primary_process", "prepare_process",
    "resolve_config", "select_backend", *_LAZY,
]


__getattr__ = lazy_names(__name__, _LAZY, globals())
