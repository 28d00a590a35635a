"""Write params.yaml from conf/ with Hydra, exactly as `dvc exp run` does.

    python -m pipeline.compose                      # the defaults
    python -m pipeline.compose model=our_small train.epochs=3
    python -m pipeline.compose 'model.selected=[our_small,mobilenetv3_small]'   # several models

The new params.yaml is composed under a temporary name and validated against the schema
before it replaces the old one: settings that are refused leave params.yaml as it was.
`dvc exp run -S ...` composes again from conf/ with its own overrides only: what was set here
is not carried over (see README, Settings and experiments).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import yaml
from dvc.utils.hydra import compose_and_dump
from hydra.errors import HydraException

from pipeline.common.errors import ParamsError
from pipeline.common.paths import PROJECT_ROOT
from pipeline.common.settings import unknown_key_message, validate


def refuse_several_model_options(overrides: list[str]) -> None:
    """`model=[a,b]` is Hydra's multi-select of the `model` group: it merges the options'
    files and the last one's `selected` wins, so it would silently train one model."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group == "model" and isinstance(override.value(), list):
            names = ",".join(map(str, override.value()))
            raise ParamsError(f"{override.input_line}: a list for the model group keeps only its last entry; "
                              f"to select several models write 'model.selected=[{names}]'")


def compose(overrides: list[str], target: Path | None = None) -> dict:
    """Compose conf/ with `overrides`, validate, and write `target` (default params.yaml) only
    if valid; returns the params. ParamsError names every refused key or value."""
    target = Path(target) if target else PROJECT_ROOT / "params.yaml"
    refuse_several_model_options(overrides)
    handle, scratch = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=".yaml", dir=target.parent)
    os.close(handle)
    try:
        try:
            compose_and_dump(Path(scratch), str(PROJECT_ROOT / "conf"), None, "config", str(PROJECT_ROOT),
                             overrides)
        except HydraException as error:  # an undeclared key, a missing config group option
            raise ParamsError(_hydra_message(error)) from None
        params = validate(yaml.safe_load(Path(scratch).read_text(encoding="utf-8")),
                          f"the settings composed from conf/ with {' '.join(overrides) or 'no overrides'}")
        os.replace(scratch, target)
        return params
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


def _hydra_message(error: Exception) -> str:
    """Hydra's refusal in the schema's words where it is about a key conf/ does not declare."""
    unknown = re.search(r"Could not override '([^']+)'", str(error))
    if unknown:
        return f"{unknown_key_message(unknown.group(1))} (conf/config.yaml declares every key that may be set)"
    return str(error).strip()


if __name__ == "__main__":
    try:
        compose(sys.argv[1:])
    except ParamsError as error:
        sys.exit(f"error: {error}\nparams.yaml was left as it was.")
    print("params.yaml written from conf/ and validated")
