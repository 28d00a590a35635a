"""Fidelity options: how closely a built model follows the study's code as it really ran.

The study (TF 2.8, tf.keras 2, tensorflow-addons 0.16) wrote some things it did not get:
tf.keras 2's DepthwiseConv2D ignores `kernel_initializer`, tfa's StochasticDepth draws one
Bernoulli per batch, its hard-swish CSP stages lost their part-2 activation to a comparison
bug, and its CBAM / coordinate attention differ from the papers. `ModelOptions` names each
such choice; `MODEL_MODES` holds the two presets:

- "faithful": the study's models exactly as its code behaved (to reproduce its training);
- "corrected": the project's default, the intended design (today's behaviour, unchanged).

Every choice here leaves the parameter count unchanged for SE models (the published ones).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import keras

STOCHASTIC_DEPTH_DRAWS = ("batch", "sample")
ATTENTION_FLAVOURS = ("study", "paper")


@dataclass(frozen=True)
class ModelOptions:
    """Every fidelity choice of the builder. Initialisers are Keras initializer names.

    conv_initializer: kernels of every Conv2D in the body, stem and top rows (the study
        passed "random_uniform", i.e. U(-0.05, 0.05), and tf.keras 2 honoured it).
    depthwise_initializer: kernels of every DepthwiseConv2D. The study passed
        kernel_initializer="random_uniform", which tf.keras 2's DepthwiseConv2D silently
        ignores (it reads depthwise_initializer): its depthwise kernels were glorot-uniform.
    attention_initializer: kernels of the SE / CBAM / CA Dense and Conv2D layers (the study
        gave them no initializer: glorot-uniform).
    head_initializer: kernel of the classifier Dense "logits" (study: none, glorot-uniform).
    stochastic_depth_draw: "batch" draws one Bernoulli per batch, shared by every sample
        (tfa.layers.StochasticDepth, which the study used); "sample" one per sample (drop path
        as in timm / Huang et al.).
    csp_part2_activation: whether hard-swish CSP stages apply hard-swish in part 2. The
        study's code compared the class `Activation` with "HS" (always False), so its
        hard-swish stages got no activation there; its ReLU stages kept theirs (that branch
        compared the argument). False reproduces that.
    attention_flavour: the CBAM and CA blocks (SE is the same in both): "study" builds them
        as the study's Layer/Attention.py did, "paper" as the project's own versions after
        Woo et al. 2018 and Hou et al. 2021.
    attention_l2: whether CBAM and CA kernels carry the model's L2 penalty (the study's had
        none). SE, conv, depthwise and head kernels always carry it: the study passed L2 to
        each, with the argument name each layer reads (depthwise_regularizer for depthwise).
    """

    conv_initializer: str = "random_uniform"
    depthwise_initializer: str = "random_uniform"
    attention_initializer: str = "random_uniform"
    head_initializer: str = "random_uniform"
    stochastic_depth_draw: Literal["batch", "sample"] = "sample"
    csp_part2_activation: bool = True
    attention_flavour: Literal["study", "paper"] = "paper"
    attention_l2: bool = True

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_initializer"):
                _check_initializer(field.name, value)
            elif field.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"ModelOptions.{field.name} must be True or False, got {value!r}")
        if self.stochastic_depth_draw not in STOCHASTIC_DEPTH_DRAWS:
            raise ValueError(f"ModelOptions.stochastic_depth_draw: unknown {self.stochastic_depth_draw!r}; "
                             f"choose one of: {', '.join(STOCHASTIC_DEPTH_DRAWS)}")
        if self.attention_flavour not in ATTENTION_FLAVOURS:
            raise ValueError(f"ModelOptions.attention_flavour: unknown {self.attention_flavour!r}; "
                             f"choose one of: {', '.join(ATTENTION_FLAVOURS)}")


def _check_initializer(field_name: str, name: str) -> None:
    """A Keras initializer *name* (a string, so each layer gets its own instance and draw)."""
    if not isinstance(name, str):
        raise ValueError(f"ModelOptions.{field_name} must be a Keras initializer name, got {name!r}")
    try:
        keras.initializers.get(name)
    except ValueError as error:
        raise ValueError(f"ModelOptions.{field_name}: {name!r} is not a Keras initializer name "
                         "(e.g. 'random_uniform', 'glorot_uniform', 'he_normal')") from error


MODEL_MODES: dict[str, ModelOptions] = {
    # The project's default: the intended design. Its initialisers are today's (random-uniform
    # everywhere) until a measured comparison says otherwise; keep them plain fields.
    "corrected": ModelOptions(),
    # The study's models as tf.keras 2.8 + tfa 0.16 really built and trained them.
    "faithful": ModelOptions(
        conv_initializer="random_uniform",
        depthwise_initializer="glorot_uniform",  # kernel_initializer ignored by tf.keras 2 DepthwiseConv2D
        attention_initializer="glorot_uniform",  # no initializer given: the Keras default
        head_initializer="glorot_uniform",  # no initializer given: the Keras default
        stochastic_depth_draw="batch",  # tfa.layers.StochasticDepth: one draw per batch
        csp_part2_activation=False,  # `Activation == "HS"` compared the class, never true
        attention_flavour="study",  # its Layer/Attention.py CBAM and CA
        attention_l2=False,  # its CBAM / CA layers got no regularizer
    ),
}


def resolve_mode(mode: str | ModelOptions) -> ModelOptions:
    """The options for a mode name ("corrected", "faithful") or a ModelOptions as given."""
    if isinstance(mode, ModelOptions):
        return mode
    if isinstance(mode, str) and mode in MODEL_MODES:
        return MODEL_MODES[mode]
    raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODEL_MODES)}, or pass a ModelOptions")
