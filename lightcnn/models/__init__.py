"""The four lightweight classifiers: MobileNetV3 Large/Small and the CSPNet variants.

Importing this package registers the custom layers, so `keras.models.load_model(path)`
works on saved models without custom_objects.
"""
from lightcnn.models.blocks import ATTENTIONS, ChannelPool, StochasticDepth
from lightcnn.models.builder import MODEL_NAMES, STRIDES, build_model, resolve_strides

__all__ = [
    "ATTENTIONS",
    "MODEL_NAMES",
    "STRIDES",
    "ChannelPool",
    "StochasticDepth",
    "build_model",
    "resolve_strides",
]
