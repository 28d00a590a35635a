"""Where every stage reads and writes, in one place (dvc.yaml spells the same paths)."""
from __future__ import annotations

from pathlib import Path

# The workspace this stage runs in. For a queued or --temp DVC experiment that is a copy
# under <project>/.dvc/tmp/exps/; HOME_ROOT is then the project it was copied from.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_EXPS_MARK = "/.dvc/tmp/exps/"
HOME_ROOT = Path(str(PROJECT_ROOT).split(_EXPS_MARK)[0]) if _EXPS_MARK in str(PROJECT_ROOT) else PROJECT_ROOT

RAW_DIR = PROJECT_ROOT / "data" / "raw"
PROCESSED_DIR = PROJECT_ROOT / "data" / "processed"
METRICS_DIR = PROJECT_ROOT / "metrics"
MODEL_METRICS_DIR = METRICS_DIR / "models"
LATENCY_JSON = METRICS_DIR / "latency.json"          # the latency stage's interleaved figures, read by report


def latency_key(model: str, seed: int) -> str:
    """How the latency stage names one training run's files in LATENCY_JSON."""
    return f"{model}@{seed}"


class ModelPaths:
    """The files of one model's stages for one training seed."""

    def __init__(self, model: str, seed: int, root: Path = PROJECT_ROOT):
        self.model = model
        self.seed = seed
        self.dir = root / "models" / model / f"seed-{seed}"
        self.best = self.dir / "best.keras"
        self.history = self.dir / "history.csv"              # written by training, a DVC plot
        self.checkpoint = self.dir / "checkpoint"          # not a DVC out: survives a killed run
        self.resume_run = self.dir / "checkpoint-mlflow-run.json"  # not a DVC out either
        self.tflite_dir = self.dir / "tflite"
        self.metrics = root / "metrics" / "models" / model / f"seed-{seed}"
        self.train_metrics = self.metrics / "train.json"
        self.eval_metrics = self.metrics / "eval.json"
        self.tflite_metrics = self.metrics / "tflite.json"
        self.latency_metrics = self.metrics / "latency.json"
        self.extras = self.metrics                           # plots, PNGs, per-class figures

    def tflite(self, variant: str) -> Path:
        return self.tflite_dir / f"{variant}.tflite"
