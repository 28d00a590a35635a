"""Write params.yaml from conf/ with Hydra, exactly as `dvc exp run` does.

    python -m pipeline.compose                      # the defaults
    python -m pipeline.compose model=our_small train.epochs=3
"""
from __future__ import annotations

import sys

from dvc.utils.hydra import compose_and_dump

from pipeline.common.paths import PROJECT_ROOT


def compose(overrides: list[str]) -> None:
    compose_and_dump(PROJECT_ROOT / "params.yaml", str(PROJECT_ROOT / "conf"), None, "config",
                     str(PROJECT_ROOT), overrides)


if __name__ == "__main__":
    compose(sys.argv[1:])
    from pipeline.common.params import load_params

    load_params()
    print("params.yaml written from conf/ and validated")
