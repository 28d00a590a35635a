"""params.yaml: load it and validate it once, at the start of every stage.

Every problem is reported at once, each naming its key and what is allowed, before any
work starts. Training values are checked by lightcnn.training.resolve_config, the one
place that knows the recipes.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable

import yaml

from lightcnn.data import DATASETS
from lightcnn.models import MODEL_NAMES
from pipeline.paths import PROJECT_ROOT

Check = Callable[[Any], "str | None"]  # returns an error text, or None when the value is fine


class ParamsError(ValueError):
    """params.yaml has a problem; the message lists every one found."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"must be one of: {', '.join(allowed)} (got {v!r})"


def positive_int(optional: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if _is_int(v) and v > 0:
            return None
        return f"must be a positive integer{' or null' if optional else ''} (got {v!r})"
    return check


def integer(v: Any) -> str | None:
    return None if _is_int(v) else f"must be an integer (got {v!r})"


def optional_str(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and v) else f"must be a non-empty string or null (got {v!r})"


def fraction(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else f"must be a number strictly between 0 and 1 (got {v!r})"


def list_of(item_check: Check, *, unique: bool = True) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or not v:
            return f"must be a non-empty list (got {v!r})"
        for item in v:
            if (error := item_check(item)) is not None:
                return f"item {item!r} {error}"
        if unique and len(set(map(str, v))) != len(v):
            return f"must not repeat items (got {v!r})"
        return None
    return check


SCHEMA: dict[str, dict[str, Check]] = {
    "model": {"selected": list_of(choice(*MODEL_NAMES))},
    "data": {
        "dataset": choice(*DATASETS),
        "source": optional_str,
        "url": optional_str,
        "kaggle_version": positive_int(optional=True),
        "num_classes": positive_int(optional=True),
        "image_size": positive_int(optional=True),
        "val_fraction": fraction,
        "max_per_class": positive_int(optional=True),
        "seed": integer,
    },
    "export": {
        "representative_images": positive_int(),
        "eval_images": positive_int(optional=True),
    },
    "benchmark": {
        "threads": list_of(positive_int()),
        "warmup": lambda v: None if _is_int(v) and v >= 0 else f"must be a non-negative integer (got {v!r})",
        "runs": lambda v: None if _is_int(v) and v >= 200 else f"must be an integer of at least 200 (got {v!r})",
    },
    "report": {
        "gradcam_images": positive_int(),
        "gradcam_layer": optional_str,
    },
}
# `train` and `per_model.<name>` take the fields of lightcnn.training.TrainConfig.
SECTIONS = ("model", "data", "train", "per_model", "export", "benchmark", "report")


def _unknown(key: str, allowed: list[str] | tuple[str, ...], where: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where}{key}: unknown key{hint}; allowed: {', '.join(allowed)}"


def _check_keys(section: dict, checks: dict[str, Check], where: str, errors: list[str]) -> None:
    for key in section:
        if key not in checks:
            errors.append(_unknown(key, list(checks), where))
    for key, check in checks.items():
        if key not in section:
            errors.append(f"{where}{key}: missing")
        elif (error := check(section[key])) is not None:
            errors.append(f"{where}{key} {error}")


def _check_training(params: dict, errors: list[str]) -> None:
    from lightcnn.training import TrainConfig, resolve_config

    TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
    errors_before = len(errors)

    train = params.get("train")
    if not isinstance(train, dict):
        errors.append("train: must be a mapping of training settings")
        return
    per_model = params.get("per_model")
    if not isinstance(per_model, dict):
        errors.append(f"per_model: must map each model ({', '.join(MODEL_NAMES)}) to its settings")
        return
    for key in train:
        if key not in TRAIN_KEYS:
            errors.append(_unknown(key, TRAIN_KEYS, "train."))
    for name, overrides in per_model.items():
        if name not in MODEL_NAMES:
            errors.append(_unknown(name, MODEL_NAMES, "per_model."))
            continue
        if not isinstance(overrides, dict):
            errors.append(f"per_model.{name}: must be a mapping of train settings (e.g. {{attention: se}})")
            continue
        for key in overrides:
            if key not in TRAIN_KEYS:
                errors.append(_unknown(key, TRAIN_KEYS, f"per_model.{name}."))
    for name in MODEL_NAMES:
        if name not in per_model:
            errors.append(f"per_model.{name}: missing (use {{attention: se}} for the study's settings)")
    if len(errors) > errors_before:  # the values below can only be checked on a sound structure
        return
    for name in MODEL_NAMES:
        try:
            resolve_config(**model_train_settings(params, name))
        except ValueError as exc:
            errors.append(f"train / per_model.{name}: {exc}")


def model_train_settings(params: dict, model: str) -> dict:
    """The train section with this model's per_model overrides applied (nulls dropped later)."""
    return {**params["train"], **params["per_model"][model]}


def validate(params: Any, source: str = "params.yaml") -> dict:
    """Check the whole params mapping; raise ParamsError listing every problem."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
    errors: list[str] = []
    for key in params:
        if key not in SECTIONS:
            errors.append(_unknown(key, SECTIONS, ""))
    for section, checks in SCHEMA.items():
        if not isinstance(params.get(section), dict):
            errors.append(f"{section}: missing section (expected keys: {', '.join(checks)})")
        else:
            _check_keys(params[section], checks, f"{section}.", errors)
    _check_training(params, errors)
    if errors:
        raise ParamsError(f"{source} is invalid:\n  - " + "\n  - ".join(errors)
                          + "\nEdit conf/config.yaml (then `python -m pipeline.compose`) or pass `dvc exp run -S key=value`.")
    return params


def load_params(path: Path | None = None) -> dict:
    """Read and validate params.yaml (the project's, unless a path is given)."""
    path = Path(path) if path else PROJECT_ROOT / "params.yaml"
    if not path.exists():
        raise ParamsError(f"{path} not found: run `python -m pipeline.compose` to write it from conf/")
    with open(path) as f:
        try:
            params = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return validate(params, str(path))


def check_model(params: dict, model: str) -> str:
    """A stage's model argument must be one of the selected models."""
    if model not in MODEL_NAMES:
        raise ParamsError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if model not in params["model"]["selected"]:
        raise ParamsError(f"model {model!r} is not selected (model.selected = {params['model']['selected']}); "
                          f"run `dvc exp run -S model={model}` or `-S model=all`")
    return model

