"""Where every stage reads and writes, in one place (dvc.yaml spells the same paths)."""
from __future__ import annotations

from pathlib import Path

# The workspace this stage runs in. For a queued or --temp DVC experiment that is a copy
# under <project>/.dvc/tmp/exps/; HOME_ROOT is then the project it was copied from.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_EXPS_MARK = "/.dvc/tmp/exps/"
HOME_ROOT = Path(str(PROJECT_ROOT).split(_EXPS_MARK)[0]) if _EXPS_MARK in str(PROJECT_ROOT) else PROJECT_ROOT

RAW_DIR = PROJECT_ROOT / "data" / "raw"
PROCESSED_DIR = PROJECT_ROOT / "data" / "processed"
METRICS_DIR = PROJECT_ROOT / "metrics"
MODEL_METRICS_DIR = METRICS_DIR / "models"


class ModelPaths:
    """The files of one model's stages."""

    def __init__(self, model: str, root: Path = PROJECT_ROOT):
        self.model = model
        self.dir = root / "models" / model
        self.best = self.dir / "best.keras"
        self.checkpoint = self.dir / "checkpoint"          # not a DVC out: survives a killed run
        self.mlflow_run = self.dir / "mlflow_run.json"
        self.tflite_dir = self.dir / "tflite"
        metrics = root / "metrics" / "models"
        self.train_metrics = metrics / f"{model}.train.json"
        self.eval_metrics = metrics / f"{model}.json"
        self.tflite_metrics = metrics / f"{model}.tflite.json"
        self.latency_metrics = metrics / f"{model}.latency.json"
        self.extras = metrics / model                       # plots, PNGs, per-class figures
        self.history = self.dir / "history.csv"              # written by training, a DVC plot

    def tflite(self, variant: str) -> Path:
        return self.tflite_dir / f"{variant}.tflite"
