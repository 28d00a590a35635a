"""Pick the Keras backend of a train stage before anything imports Keras.

Keras fixes its backend when first imported. So the train stage reads the one setting it
needs before its Keras imports, from params.yaml as written (already validated by
stage.check_params_first, which imports no Keras): `per_model.<model>.backend`, else
`train.backend`, else the recipe's (all declared in the stage's params). Anything malformed
is left to the validation, which reports it properly.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from lightcnn.training import RECIPES, select_backend


def backend_for(params: dict, model: str) -> str | None:
    train = params.get("train") or {}
    own = ((params.get("per_model") or {}).get(model) or {})
    chosen = own.get("backend") or train.get("backend")
    if chosen:
        return chosen
    recipe = own.get("recipe") or train.get("recipe")
    return RECIPES.get(recipe, {}).get("backend") if isinstance(recipe, str) else None


def select_backend_before_keras(params_file: Path, argv: list[str]) -> None:
    """Select the backend for `python -m pipeline.train <model> <seed>` (no-op on bad input)."""
    try:
        params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        name = backend_for(params, argv[0]) if argv and isinstance(params, dict) else None
        if name:
            select_backend(name)
    except (OSError, yaml.YAMLError, ValueError, AttributeError, TypeError):
        return  # validation reports it
