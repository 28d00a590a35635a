"""The pipeline's stage scripts (`python -m pipeline.<stage>`) and what they share (pipeline.common).

Importing the package, which every stage process does first, keeps TensorFlow's and Keras'
unused optional integrations from loading (pipeline/common/lean_imports.py).
"""
from pipeline.common.lean_imports import skip_unused_integrations

skip_unused_integrations()
