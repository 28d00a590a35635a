"""Entry point shared by the stage scripts: user errors print one clear message, no traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

from pipeline.params import ParamsError
from pipeline.tracking import TrackingError


def user_errors() -> tuple[type[BaseException], ...]:
    from lightcnn.data import DataError

    return (ParamsError, TrackingError, DataError)


def run(main: Callable[..., None]) -> None:
    """Run a stage's main(*argv); set LIGHTCNN_DEBUG=1 to see tracebacks of user errors too."""
    try:
        main(*sys.argv[1:])
    except user_errors() as exc:
        if os.environ.get("LIGHTCNN_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
