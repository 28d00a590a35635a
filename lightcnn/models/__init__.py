"""The four lightweight classifiers: MobileNetV3 Large/Small and the CSPNet variants.

`build_model(..., mode=...)` builds them "corrected" (the intended design, default) or
"faithful" (as the study's code behaved); MODEL_MODES and ModelOptions describe the
difference. `load_model(path)` loads a saved one (it registers the custom layers first);
`count_macs(model)` counts its multiply-accumulates per image.

Importing this package does not import Keras: MODEL_NAMES and the spec tables (specs.py)
need none, and the other names load on first use, so that settings can be validated
without the seconds Keras and TensorFlow take to import. Importing lightcnn.models.blocks
(which any Keras name here does) registers the custom layers, after which
`keras.models.load_model(path)` works without custom_objects.
"""
from __future__ import annotations

import importlib
from typing import Any

from lightcnn import lazy_names
from lightcnn.models.specs import MODEL_NAMES, MODEL_SPECS

_LAZY = {
    "ATTENTIONS": "blocks", "ChannelPool": "blocks", "StochasticDepth": "blocks",
    "STRIDES": "builder", "build_model": "builder", "resolve_strides": "builder",
    "MODEL_MODES": "options", "ModelOptions": "options", "count_macs": "macs",
}

__all__ = ["MODEL_NAMES", "MODEL_SPECS", "load_model", *_LAZY]


def load_model(path: Any) -> Any:
    """keras.models.load_model for a model saved by this package, its custom layers registered."""
    import keras

    importlib.import_module("lightcnn.models.blocks")
    return keras.models.load_model(path)


__getattr__ = lazy_names(__name__, _LAZY, globals())
