"""A small table of the study's own blocks, for tests whose claim is about training, not an architecture.

Data-parallel agreement, determinism, exact resume and agreement between processes are
properties of the training code: they hold (or break) for any network built from the same
blocks. Most of a short run's time on a CPU is tracing or compiling the network, in
proportion to its layers; this one has every kind of layer the four models have (conv rows,
an inverted residual and a CSP stage, squeeze-and-excitation, ReLU and hard-swish, BatchNorm,
strides, stochastic depth) in a third of our_small's layers (71 against 220): TensorFlow's
data-parallel comparison took 27 s here instead of 69 s (AMD EPYC, 2 cores, run alone). The
four real architectures are trained, saved, exported and counted in test_models.py,
test_export.py and the end-to-end DVC test.
"""
from __future__ import annotations

from lightcnn.models.specs import ModelSpec, Row

TINY_NAME = "tiny"
TINY_SPEC = ModelSpec(rows=(
    #   kind, expansions, filters, kernel, stride cifar, stride birds, activation, SE, stage
    Row("conv", (), 8, 3, 1, 2, "HS", False, None),
    Row("mb", (16,), 8, 3, 1, 2, "RE", True, 1),
    Row("csp", (24, 24), 16, 3, 2, 2, "HS", True, 2),
    Row("conv", (), 32, 1, 1, 1, "HS", False, None),
), survival_decay=0.01)
