"""The errors a stage reports as one clear message (no traceback): see pipeline/stage.py."""
from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml, or a stage's use of it, has a problem; the message says what and how to fix it."""


class TrackingError(RuntimeError):
    """The MLflow backend cannot be used."""
