"""The smoke network (lightcnn.models.specs.SMOKE), for tests whose claim is about training, not
an architecture.

Data-parallel agreement, determinism, exact resume and agreement between processes are
properties of the training code: they hold (or break) for any network built from the same
blocks. Most of a short run's time on a CPU is tracing or compiling the network, in
proportion to its layers; this one has every kind of layer the four models have (conv rows,
an inverted residual and a CSP stage, squeeze-and-excitation, ReLU and hard-swish, BatchNorm,
strides, stochastic depth) in a third of our_small's layers (71 against 220): TensorFlow's
data-parallel comparison took 27 s here instead of 69 s (AMD EPYC, 2 cores, run alone). The
four real architectures are built, counted, saved and exported in test_models.py,
test_model_modes.py and test_export.py (which also trains our_small); the end-to-end DVC test
runs this network too.

Passed as a table of one's own (`spec=`), as a user's would be, under its registered name.
"""
from __future__ import annotations

from lightcnn.models import MODEL_SPECS

TINY_NAME = "smoke"
TINY_SPEC = MODEL_SPECS[TINY_NAME]
