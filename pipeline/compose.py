"""Write params.yaml from conf/ with Hydra, exactly as `dvc exp run` does.

    python -m pipeline.compose                      # the defaults
    python -m pipeline.compose model=our_small train.epochs=3
    python -m pipeline.compose 'model.selected=[our_small,mobilenetv3_small]'   # several models
"""
from __future__ import annotations

import sys

from dvc.utils.hydra import compose_and_dump

from pipeline.common.errors import ParamsError
from pipeline.common.paths import PROJECT_ROOT


def refuse_several_model_options(overrides: list[str]) -> None:
    """`model=[a,b]` is Hydra's multi-select of the `model` group: it merges the options'
    files and the last one's `selected` wins, so it would silently train one model."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group == "model" and isinstance(override.value(), list):
            names = ",".join(map(str, override.value()))
            raise ParamsError(f"{override.input_line}: a list for the model group keeps only its last entry; "
                              f"to select several models write 'model.selected=[{names}]'")


def compose(overrides: list[str]) -> None:
    refuse_several_model_options(overrides)
    compose_and_dump(PROJECT_ROOT / "params.yaml", str(PROJECT_ROOT / "conf"), None, "config",
                     str(PROJECT_ROOT), overrides)


if __name__ == "__main__":
    try:
        compose(sys.argv[1:])
    except ParamsError as error:
        sys.exit(f"error: {error}")
    from pipeline.common.params import load_params

    load_params()
    print("params.yaml written from conf/ and validated")
