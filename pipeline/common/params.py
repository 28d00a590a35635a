"""How a stage reads params.yaml: validated once, then read through the stage's own view.

Every stage script starts with `params = stage_params("<stage name>")`. That validates the
whole params.yaml against the one schema (pipeline/settings.py), so a bad value anywhere
stops the pipeline at its first stage, before any work. The stage then reads its values only
through the returned StageParams, which refuses any key that dvc.yaml does not declare in the
stage's `params:` (resolved by DVC's own resolver of dvc.yaml, the one `dvc repro` uses): a
stage cannot depend on a setting that DVC would not rerun it for. Set LIGHTCNN_PARAMS_AUDIT to a file path
to have each stage append the keys it declared and the keys it read (tests compare them).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.common.errors import ParamsError
from pipeline.common.paths import PROJECT_ROOT
from pipeline.common.settings import validate

__all__ = ["ParamsError", "StageParams", "load_params", "stage_params", "validate"]


def load_params(path: Path | None = None) -> dict:
    """Read and validate params.yaml (the project's, unless a path is given)."""
    path = Path(path) if path else PROJECT_ROOT / "params.yaml"
    if not path.exists():
        raise ParamsError(f"{path} not found: run `python -m pipeline.compose` to write it from conf/")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return validate(params, str(path))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _value_at(tree: Any, key: str) -> Any:
    """The value at a dotted key of nested dicts; KeyError or TypeError where there is none."""
    for part in key.split("."):
        tree = tree[part]
    return tree


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser where PyYAML has it


def declared_params(stage: str, root: Path = PROJECT_ROOT) -> dict:
    """{key: value in params.yaml} for each param dvc.yaml declares for `stage`, its templates
    (foreach/matrix items, ${...}) resolved by DVC's own resolver, as `dvc repro` resolves them.

    The resolver alone, not dvc.api.params_show(stages=...), which gives the same keys but also
    loads dvc.lock and every stage with DVC's round-trip YAML parser: in a new process, with
    this module's imports, 0.82-0.85 s against 0.46-0.49 s (AMD EPYC, 2 cores), paid by every
    stage of every run."""
    try:
        from dvc.parsing import DataResolver
        from dvc.repo import Repo

        definition = yaml.load((root / "dvc.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
        with Repo(str(root)) as repo:
            entries = DataResolver(repo, repo.root_dir, definition).resolve_one(stage)[stage].get("params", [])
    except Exception as exc:  # noqa: BLE001 - DVC raises many kinds; all mean the same here
        raise ParamsError(f"cannot read the params dvc.yaml declares for stage {stage!r} ({type(exc).__name__}: "
                          f"{exc}); run stages through `dvc repro` from the project root") from exc
    keys: list[str] = []
    for entry in entries:  # a key of params.yaml, or {file: [keys]}
        files = entry if isinstance(entry, dict) else {"params.yaml": [entry]}
        for file, file_keys in files.items():
            if file != "params.yaml":
                raise ParamsError(f"stage {stage} declares params of {file}: stages read params.yaml alone")
            keys.extend(file_keys)
    params = yaml.load((root / "params.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    declared = {}
    for key in keys:
        try:
            declared[key] = _value_at(params, key)
        except (KeyError, TypeError):
            raise ParamsError(f"stage {stage} declares param {key!r} in dvc.yaml, which params.yaml does not have: "
                              "remove it from the stage's `params:` or add it to the schema") from None
    return declared


class StageParams:
    """Read-only view of the validated params, limited to what dvc.yaml declares for one stage."""

    def __init__(self, stage: str, params: dict, declared: dict):
        self.stage = stage
        self._params = params
        self._declared = set(_flatten(declared))
        self._read: set[str] = set()

    def _covered(self, key: str) -> bool:
        """Every leaf under `key` is a declared key or lies under one."""
        leaves = _flatten(_value_at(self._params, key), key)
        return all(any(leaf == d or leaf.startswith(d + ".") for d in self._declared) for leaf in leaves)

    def __getitem__(self, key: str) -> Any:
        """The value at a dotted key, e.g. params["train.epochs"] or params["benchmark"]."""
        try:
            value = _value_at(self._params, key)
        except (KeyError, TypeError):
            raise ParamsError(f"stage {self.stage}: params.yaml has no key {key!r}") from None
        if not self._covered(key):
            raise ParamsError(
                f"stage {self.stage} reads {key!r}, which its `params:` in dvc.yaml does not declare: add it "
                "there, or DVC will not rerun the stage when it changes")
        self._read.update(leaf for leaf in _flatten(value, key))
        self._audit()
        return value

    def _audit(self) -> None:
        path = os.environ.get("LIGHTCNN_PARAMS_AUDIT")
        if path:
            with open(path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"stage": self.stage, "declared": sorted(self._declared),
                                       "read": sorted(self._read)}) + "\n")


def stage_params(stage: str, root: Path = PROJECT_ROOT) -> StageParams:
    """Validate params.yaml, then return the view of it that `stage` may read."""
    params = load_params(root / "params.yaml")
    return StageParams(stage, params, declared_params(stage, root))
