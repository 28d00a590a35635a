"""LightCNN: lightweight CSPNet / MobileNetV3 image classifiers, trained, compared and exported."""
from __future__ import annotations

import importlib
from typing import Any, Callable

__version__ = "0.1.0"


def lazy_names(package: str, homes: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A package's module-level __getattr__ (PEP 562): name -> `package.<homes[name]>`.name,
    imported on first use and kept in `namespace` (the package's globals()), so that importing
    the package does not import what those modules need (Keras, TensorFlow)."""
    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        namespace[name] = value
        return value

    return __getattr__
