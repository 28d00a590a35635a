"""Stage processes start without the optional integrations that TensorFlow and Keras import
eagerly and no stage uses: `import keras` on TensorFlow took 3.5 s of CPU instead of 5.9 s
(AMD EPYC, 2 cores; `python benchmarks/import_time.py` measures it).

- Keras' scikit-learn wrappers (keras.wrappers) import scikit-learn, which MLflow installs.
- tf.lite imports JAX for its JAX converter, and Keras' Orbax checkpoint callback imports JAX
  for a compatibility patch; JAX is installed for `train.backend: jax`.
- Keras' array slicing imports pandas (and pandas pyarrow) to accept DataFrames in fit();
  the stages give it arrays and tf.data datasets. MLflow installs both.
- Keras' image-gallery plot imports matplotlib.pyplot; the stages that draw import matplotlib
  themselves.

Only those importers are refused, and each treats the package as optional: it catches the
ImportError and carries on without it. Every other import is untouched: MLflow's scikit-learn
and pandas, the Grad-CAM figure's matplotlib, and JAX for Keras' JAX backend (which imports it
before tf.lite or the callback would ask; an imported module is never looked up again).
"""
from __future__ import annotations

import importlib.abc
import sys

# package -> the modules whose import of it is refused (prefixes of module names)
SKIPPED_INTEGRATIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("keras.src.wrappers.",),
    "jax": ("tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint"),
    "pandas": ("keras.src.trainers.data_adapters.",),
    "matplotlib": ("keras.src.visualization.",),
}


def _importing_module() -> str:
    """The name of the module whose code runs the import being looked up."""
    frame = sys._getframe(2)  # 0: here, 1: find_spec, then importlib's machinery
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith("importlib"):
            return name
        frame = frame.f_back
    return ""


class _SkipUnusedIntegrations(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        importers = SKIPPED_INTEGRATIONS.get(fullname)
        if importers:
            importer = _importing_module()
            if importer.startswith(importers):
                raise ModuleNotFoundError(f"{fullname} is not loaded for {importer} in a pipeline stage "
                                          "(pipeline/common/lean_imports.py)", name=fullname)
        return None


def skip_unused_integrations() -> None:
    """Install the refusal for this process (idempotent); before TensorFlow or Keras is imported."""
    if not any(isinstance(finder, _SkipUnusedIntegrations) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkipUnusedIntegrations())
