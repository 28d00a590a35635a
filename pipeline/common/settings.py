"""The one schema of params.yaml: every key that `dvc exp run -S` may set, declared once.

The `train` section and each `per_model.<model>` section take the fields of
lightcnn.training.TrainConfig (null = the recipe's value), derived from it here so that a new
training setting is declared in one place. conf/config.yaml must declare the same keys (Hydra
composes in struct mode: a key it does not know needs `+`); tests/test_settings.py checks it.

validate(params) checks the whole mapping and raises ParamsError listing every problem, each
naming its key, what is allowed and what was given.
"""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, Field, create_model

from lightcnn.data import DATASETS
from lightcnn.models import MODEL_NAMES
from lightcnn.training import TrainConfig, resolve_config
from pipeline.common.errors import ParamsError

ModelName = Literal[MODEL_NAMES]  # type: ignore[valid-type]
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]
PositiveInt = pydantic.conint(strict=True, gt=0)
# Settings of TrainConfig that params.yaml does not take as such: the seed comes from
# train.seeds (one stage per model and seed), the recipe is a plain choice.
NOT_FROM_TRAIN_CONFIG = ("seed",)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelSettings(Section):
    selected: list[ModelName] = Field(min_length=1, description="models to train (conf/model/ groups)")

    @pydantic.field_validator("selected")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat models (got {value})")
        return value


class DataSettings(Section):
    dataset: DatasetName
    source: Optional[str] = Field(description='"auto" (the local copy when there, else the download), null '
                                              '(the official download) or a path (must exist)')
    local_copies: dict[DatasetName, Optional[str]] = Field(  # type: ignore[valid-type]
        description='per dataset, the local copy that source "auto" uses when it exists')
    url: Optional[str] = Field(description="CIFAR only: a mirror of the official archive")
    kaggle_version: Optional[PositiveInt] = None  # type: ignore[valid-type]
    num_classes: Optional[pydantic.conint(strict=True, ge=2)] = Field(  # type: ignore[valid-type]
        None, description="keep the first N classes (a classifier needs 2)")
    # square; under 16 px the networks' five halvings leave nothing (a folder dataset's own size may be oblong)
    image_size: Optional[pydantic.conint(strict=True, ge=16, le=4096)] = None  # type: ignore[valid-type]
    val_fraction: float = Field(gt=0, lt=1)
    max_per_class: Optional[PositiveInt] = None  # type: ignore[valid-type]
    seed: int


def _train_config_fields() -> dict[str, tuple[Any, str]]:
    """TrainConfig's fields as {name: (annotation with its constraints, description)}."""
    return {name: (Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation,
                   info.description or "") for name, info in TrainConfig.model_fields.items()}


def _optional_train_fields() -> dict[str, Any]:
    fields = {}
    for name, (annotation, description) in _train_config_fields().items():
        if name in NOT_FROM_TRAIN_CONFIG:
            continue
        fields[name] = (Optional[annotation], Field(None, description=f"{description} (null = the recipe's)"))
    return fields


# per_model.<model>: any training setting for that model alone (null = the train section's).
PerModelSettings = create_model("PerModelSettings", __base__=Section, **_optional_train_fields())
_seeds = (list[pydantic.conint(strict=True, ge=0)], Field(min_length=1, description="one training run per seed"))
TrainSettings = create_model("TrainSettings", __base__=Section, seeds=_seeds, **_optional_train_fields())
PerModelSection = create_model(
    "PerModelSection", __base__=Section, **{name: (PerModelSettings, ...) for name in MODEL_NAMES})


class ExportSettings(Section):
    representative_images: PositiveInt  # type: ignore[valid-type]
    eval_images: Optional[PositiveInt] = None  # type: ignore[valid-type]


class BenchmarkSettings(Section):
    threads: list[PositiveInt] = Field(min_length=1)  # type: ignore[valid-type]
    warmup: pydantic.conint(strict=True, ge=0)  # type: ignore[valid-type]
    runs: pydantic.conint(strict=True, ge=200)  # type: ignore[valid-type]
    rounds: pydantic.conint(strict=True, ge=5)  # type: ignore[valid-type]
    runs_per_round: PositiveInt  # type: ignore[valid-type]


class ReportSettings(Section):
    gradcam_images: PositiveInt  # type: ignore[valid-type]
    gradcam_layer: Optional[str] = None


class Params(Section):
    model: ModelSettings
    data: DataSettings
    train: TrainSettings  # type: ignore[valid-type]
    per_model: PerModelSection  # type: ignore[valid-type]
    export: ExportSettings
    benchmark: BenchmarkSettings
    report: ReportSettings


SECTIONS = tuple(Params.model_fields)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema model that holds the key at `loc` (for listing the allowed keys)."""
    model: Any = Params
    for key in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
            return None
        model = model.model_fields[key].annotation
        if getattr(model, "__origin__", None) is not None:  # Optional[...] of a section
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def unknown_key_message(loc: tuple | str) -> str:
    """'<key>: unknown key (did you mean ...?); allowed: ...' for a key the schema does not
    declare (a dotted string or its parts)."""
    loc = tuple(loc.split(".")) if isinstance(loc, str) else tuple(str(part) for part in loc)
    holder = _model_at(loc)
    allowed = list(holder.model_fields) if holder else []
    close = difflib.get_close_matches(loc[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{'.'.join(loc)}: unknown key{hint}; allowed: {', '.join(allowed)}"


def _describe(error: dict) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown_key_message(loc)
    if kind == "missing":
        return f"{key}: missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{key}: must be one of {expected} (got {error.get('input')!r})"
    message = error["msg"][0].lower() + error["msg"][1:]
    hint = ""
    given = error.get("input")
    if isinstance(given, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", given.strip()):
        hint = f" (YAML reads {given} as text: write it with a decimal point and a signed exponent, e.g. 1.0e-3)"
    return f"{key}: {message} (got {error.get('input')!r}){hint}"


def effective_train_settings(params: dict, model: str, seed: int) -> dict:
    """The train section with this model's per_model values and the seed applied (nulls = recipe)."""
    train = {key: value for key, value in params["train"].items() if key != "seeds"}
    overrides = {key: value for key, value in params["per_model"][model].items() if value is not None}
    return {**train, **overrides, "seed": seed}


def validate(params: Any, source: str = "params.yaml") -> dict:
    """Check the whole params mapping; raise ParamsError listing every problem found."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
    errors: list[str] = []
    try:
        Params.model_validate(params)
    except pydantic.ValidationError as exc:
        errors += [_describe(error) for error in exc.errors()]
    if not errors:  # values that depend on each other, checked by the library's one validator
        for model in MODEL_NAMES:
            settings = effective_train_settings(params, model, params["train"]["seeds"][0])
            try:
                resolve_config(**settings)
            except ValueError as exc:
                errors.append(f"train / per_model.{model}: {exc}")
    if errors:
        raise ParamsError(f"{source} is invalid:\n  - " + "\n  - ".join(errors)
                          + "\nEdit conf/config.yaml (then `python -m pipeline.compose`) "
                            "or pass `dvc exp run -S key=value`.")
    return params
