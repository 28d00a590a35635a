"""The four lightweight classifiers: MobileNetV3 Large/Small and the CSPNet variants.

Importing this package registers the custom layers, so `keras.models.load_model(path)`
works on saved models without custom_objects. `build_model(..., mode=...)` builds them
"corrected" (the intended design, default) or "faithful" (as the study's code behaved);
MODEL_MODES and ModelOptions describe the difference.
"""
from lightcnn.models.blocks import ATTENTIONS, ChannelPool, StochasticDepth
from lightcnn.models.builder import MODEL_NAMES, STRIDES, build_model, resolve_strides
from lightcnn.models.options import MODEL_MODES, ModelOptions

__all__ = [
    "ATTENTIONS",
    "MODEL_MODES",
    "MODEL_NAMES",
    "STRIDES",
    "ChannelPool",
    "ModelOptions",
    "StochasticDepth",
    "build_model",
    "resolve_strides",
]
