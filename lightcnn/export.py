"""Export Keras models to TFLite (float32, float16, int8) and run them in LiteRT.

`convert_variants` makes several variants at once (as the pipeline's export stage needs);
`convert` makes one.

Conversion route (Keras 3 + TF 2.21): the model's inference call is traced once as a
`tf.function` with a fixed batch-1 input and converted with
`tf.lite.TFLiteConverter.from_concrete_functions([function])`, which freezes the weights into
constants first; `serving_default` (input "images", output "output_0") is then written into the
file as the SignatureDef a SavedModel conversion would carry. A fixed batch of 1 is what
single-image latency and phone benchmarks measure, and it gives LiteRT static shapes throughout.
Measured on our_small (AMD EPYC, 2 cores): the same operators and bit-identical outputs as the
SavedModel route (`model.export(format="tf_saved_model")` + `from_saved_model`) for float32
and int8, in 2 to 2.5 s per variant instead of 23 to 25 s for float32 + int8, which spent most of
it writing the SavedModel and reading it back once per converter. TensorFlow calls this route
deprecated (it logs so; the message is filtered here) in favour of passing the model as
`trackable_obj`, which keeps the weights as resource variables: the int8 calibrator cannot
read those (READ_VARIABLE fails) and float files gave NaN outputs (measured). TensorFlow is
pinned below 2.22; the tests convert every model and compare it with Keras.

Before conversion the model is made lean (`lean_inference_model`, on a clone; the model
passed in is not changed): stochastic depth at inference is `x + p * f(x)`, and where the
branch f ends in BatchNorm -> ReLU, p * relu(bn(z)) = relu(p * bn(z)), so p goes into the
BatchNorm's gamma and beta (which the converter folds into the convolution) and the
multiply disappears. A hard-swish branch cannot take p that way (hard-swish does not
commute with a scale): in float variants the multiply stays; in int8 hard-swish is written
out (see below) and p goes into its constant, exactly.

Variants:
- "float32": plain conversion; BatchNorm is folded into the preceding convolutions.
- "float16": weights stored as float16, float32 inputs and outputs.
- "int8": full-integer quantisation calibrated on representative training images, as
  `Int8Recipe` says. The default: signed int8 input (the image pixels) and output (the
  probabilities), per-channel weights, and hard-swish written as relu6(x + 3) * (x / 6):
  LiteRT's XNNPACK delegate runs ADD, RELU6 and MUL in int8 but not an int8 HARD_SWISH, which
  would fall back to LiteRT's reference kernel and cut the graph into one XNNPACK partition
  per hard-swish (measured: int8 then ran slower than float32).
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lightcnn import io

VARIANTS = ("float32", "float16", "int8")

# Enough images to calibrate activation ranges; more only slows the conversion down.
MIN_REPRESENTATIVE_IMAGES = 10


def write_tflite(path: str | os.PathLike, tflite_bytes: bytes) -> Path:
    """Write a converted model to a .tflite file atomically; returns the path."""
    if not tflite_bytes[4:8] == b"TFL3":
        raise ValueError(f"refusing to write {path}: the data is not a TFLite flatbuffer "
                         "(no 'TFL3' identifier); pass the bytes returned by convert()")
    io.write_bytes(path, tflite_bytes)
    return Path(path)


# ----------------------------------------------------------------------------- lean inference graph

HARD_SWISH_FORMS = ("fused", "decomposed")


@dataclass(frozen=True)
class Int8Recipe:
    """How the "int8" variant is quantised; the defaults are the fastest found that keep accuracy.

    io_dtype: "int8" (signed, what XNNPACK takes directly) or "uint8" input and output; with
        uint8 LiteRT adds a QUANTIZE op at each end to convert to int8.
    per_channel: per-channel weight scales (the converter's default) or one scale per tensor.
    hard_swish: "decomposed" writes hard-swish as relu6(x + 3) * (x / 6) (ADD with fused
        RELU6, MUL, MUL: all run by XNNPACK in int8); "fused" keeps the converter's single
        HARD_SWISH op, which XNNPACK does not run in int8.
    fold_stochastic_depth: fold each residual's survival probability into the branch (see
        lean_inference_model); False keeps the multiply.
    """

    io_dtype: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    hard_swish: Literal["fused", "decomposed"] = "decomposed"
    fold_stochastic_depth: bool = True

    def __post_init__(self) -> None:
        if self.io_dtype not in ("int8", "uint8"):
            raise ValueError(f"Int8Recipe.io_dtype must be 'int8' or 'uint8', got {self.io_dtype!r}")
        if self.hard_swish not in HARD_SWISH_FORMS:
            raise ValueError(f"Int8Recipe.hard_swish must be one of {HARD_SWISH_FORMS}, got {self.hard_swish!r}")
        for name in ("per_channel", "fold_stochastic_depth"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Int8Recipe.{name} must be True or False, got {getattr(self, name)!r}")


def _activation_name(layer) -> str | None:
    """The activation of a Keras Activation layer by name ("relu", "hard_silu"), else None."""
    import keras

    if not isinstance(layer, keras.layers.Activation):
        return None
    name = layer.get_config().get("activation")
    return {"hard_swish": "hard_silu"}.get(name, name) if isinstance(name, str) else None


def _single_producer(tensor):
    """The layer that produced a functional-graph tensor."""
    return tensor._keras_history.operation


def _only_consumer_is(layer, consumer) -> bool:
    """Whether `layer` is called once and its output feeds `consumer` only (so rescaling it is safe)."""
    return (len(layer._inbound_nodes) == 1 and len(layer._outbound_nodes) == 1
            and layer._outbound_nodes[0].operation is consumer)


def _stochastic_depth_folds(model, hard_swish: str) -> tuple[dict, dict]:
    """Plan the fold of every foldable StochasticDepth of a functional model.

    Returns ({StochasticDepth layer name: survival p}, {BatchNormalization name: p}):
    the first lists the residual adds that become plain adds, the second the BatchNorms
    whose gamma and beta take p (ReLU branches); a hard-swish branch is folded only when
    hard_swish="decomposed" (p then goes into hard-swish's x / 6 constant).
    """
    import keras

    from lightcnn.models import StochasticDepth

    adds, batchnorms = {}, {}
    for layer in model.layers:
        if not isinstance(layer, StochasticDepth) or len(layer._inbound_nodes) != 1:
            continue
        residual = layer._inbound_nodes[0].input_tensors[1]
        branch_end = _single_producer(residual)
        activation = _activation_name(branch_end)
        if activation is None or not _only_consumer_is(branch_end, layer):
            continue
        if activation == "relu":
            batchnorm = _single_producer(branch_end._inbound_nodes[0].input_tensors[0])
            if (isinstance(batchnorm, keras.layers.BatchNormalization) and batchnorm.center and batchnorm.scale
                    and _only_consumer_is(batchnorm, branch_end)):
                adds[layer.name] = batchnorms[batchnorm.name] = layer.survival_probability
        elif activation == "hard_silu" and hard_swish == "decomposed":
            adds[layer.name] = layer.survival_probability
    return adds, batchnorms


def lean_inference_model(model, hard_swish: str = "fused", fold_stochastic_depth: bool = True):
    """An inference-only clone of a functional Keras model, with exact rewrites for a leaner TFLite graph.

    - fold_stochastic_depth: every StochasticDepth residual `x + p * f(x)` whose branch ends
      in BatchNorm -> ReLU becomes `x + f'(x)` with the BatchNorm's gamma and beta times p
      (p * relu(z) = relu(p * z) for p > 0); with hard_swish="decomposed" also those ending
      in hard-swish (p goes into the x / 6 constant below). Others keep their multiply.
    - hard_swish="decomposed": every hard-swish Activation becomes relu6(x + 3) * (x / 6),
      which the converter keeps as ADD (fused RELU6), MUL, MUL instead of one HARD_SWISH
      op; equal in real arithmetic, and what XNNPACK runs in int8. "fused" leaves it.
      Where such a hard-swish feeds one Conv2D / DepthwiseConv2D only, the 1/6 goes into
      that convolution's kernel (it is linear in its input) and hard-swish becomes
      relu6(x + 3) * x: ADD, MUL.

    The outputs equal the model's at inference up to float rounding. The clone has its own
    layers with copies of the model's weights (the model is left unchanged); it is for
    export, not training.
    """
    import keras
    from keras import ops

    if hard_swish not in HARD_SWISH_FORMS:
        raise ValueError(f"hard_swish must be one of {HARD_SWISH_FORMS}, got {hard_swish!r}")
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth") or isinstance(
            model, keras.Sequential):
        raise ValueError(f"lean_inference_model needs a functional Keras model, got {type(model).__name__}")
    adds, batchnorms = _stochastic_depth_folds(model, hard_swish) if fold_stochastic_depth else ({}, {})
    # The branch-ending hard-swish of each folded add, and the p it takes.
    hard_swish_scale = {}
    for layer in model.layers:
        if layer.name in adds and _activation_name(_single_producer(layer._inbound_nodes[0].input_tensors[1])) \
                == "hard_silu":
            hard_swish_scale[_single_producer(layer._inbound_nodes[0].input_tensors[1]).name] = adds[layer.name]

    # Decomposed hard-swishes that feed one convolution only: the convolution (linear in its
    # input) takes the 1/6 in its kernel, so hard-swish is relu6(x + 3) * x, one MUL fewer.
    one_sixth_into = {}
    if hard_swish == "decomposed":
        for layer in model.layers:
            if (_activation_name(layer) == "hard_silu" and layer.name not in hard_swish_scale
                    and len(layer._inbound_nodes) == 1 and len(layer._outbound_nodes) == 1):
                consumer = layer._outbound_nodes[0].operation
                if isinstance(consumer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D) \
                        and len(consumer._inbound_nodes) == 1:
                    one_sixth_into[layer.name] = consumer.name

    def clone_layer(layer):
        # Fresh layers (weights copied below): sharing the model's own would add call nodes to
        # them, and the model's graph must stay as it was.
        return layer.__class__.from_config(layer.get_config())

    def call_layer(layer, *args, **kwargs):
        if layer.name in adds:
            shortcut, residual = args[0]
            return ops.add(shortcut, residual)
        if hard_swish == "decomposed" and _activation_name(layer) == "hard_silu":
            (x,) = args
            if layer.name in one_sixth_into:
                return ops.relu6(x + 3.0) * x
            scale = hard_swish_scale.get(layer.name, 1.0)
            return ops.relu6(x + 3.0) * (x * (scale / 6.0))
        return layer(*args, **kwargs)

    lean = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name in batchnorms:
            gamma, beta, moving_mean, moving_variance = weights
            survival = batchnorms[layer.name]
            weights = [gamma * survival, beta * survival, moving_mean, moving_variance]
        if layer.name in one_sixth_into.values():
            weights = [weights[0] / 6.0, *weights[1:]]  # the kernel; the bias is unchanged
        lean.get_layer(layer.name).set_weights(weights)
    return lean


def _model_image_shape(model) -> tuple[int, int, int]:
    """(H, W, C) of the model's single image input; raises if it is not fully known."""
    if len(model.inputs) != 1:
        raise ValueError(f"expected a model with one image input, got {len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(dim is None for dim in shape):
        raise ValueError(f"the model input shape {model.inputs[0].shape} must be (None, H, W, C) with "
                         "H, W and C known; build the model with a fixed input_shape")
    return shape  # type: ignore[return-value]


def _check_images(images: np.ndarray, image_shape: tuple[int, ...], what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{what} must have shape (N, {', '.join(map(str, image_shape))}), "
                         f"got {images.shape}")
    if images.dtype == np.uint8:
        raise ValueError(f"{what} must be float32 in [0, 1], got uint8; divide by 255 first")
    images = images.astype(np.float32, copy=False)
    if images.size and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
        raise ValueError(f"{what} must be float32 in [0, 1] (the models' input scaling), got values in "
                         f"[{images.min():.3g}, {images.max():.3g}]")
    return images


def convert(model, variant: str, representative_images: np.ndarray | None = None, *, lean: bool = True,
            int8_recipe: Int8Recipe = Int8Recipe()) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with a batch-1 input.

    `representative_images` (N, H, W, 3) float32 in [0, 1], drawn from the training split, is
    required for "int8" and ignored otherwise. All N images are used for calibration.
    lean: apply lean_inference_model's stochastic-depth fold to the float variants (exact).
    int8_recipe: how "int8" is quantised and rewritten (Int8Recipe; the default is the
    fastest found that keeps accuracy).
    """
    return convert_variants(model, (variant,), representative_images, lean=lean, int8_recipe=int8_recipe)[variant]


class _DeprecationNotice(logging.Filter):
    """Drops TensorFlow's notice that from_concrete_functions without trackable_obj is deprecated
    (the module docstring says why this route is taken)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "trackable_obj" not in record.getMessage()


def _inference_function(model, image_shape: tuple[int, int, int]):
    """The model's inference call on one float32 image, traced once (a concrete function)."""
    import tensorflow as tf

    serve = tf.function(lambda images: model(images, training=False),
                        input_signature=[tf.TensorSpec((1, *image_shape), tf.float32, name="images")])
    return serve.get_concrete_function()


def _converter(function):
    """A TFLiteConverter of a concrete function, its weights frozen into constants."""
    import tensorflow as tf

    notice = _DeprecationNotice()
    loggers = (tf.get_logger(), logging.getLogger("absl"))  # TensorFlow logs through either
    for logger in loggers:
        logger.addFilter(notice)
    try:
        return tf.lite.TFLiteConverter.from_concrete_functions([function])
    finally:
        for logger in loggers:
            logger.removeFilter(notice)


def _with_serving_signature(tflite_bytes: bytes) -> bytes:
    """The flatbuffer with the SignatureDef a SavedModel conversion writes: "serving_default",
    input "images", output "output_0" (for LiteRT's signature runners, e.g. on Android)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(tflite_bytes)
    (graph,) = model.subgraphs
    (input_index,), (output_index,) = graph.inputs, graph.outputs

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = [tensor_map("images", input_index)], [tensor_map("output_0", output_index)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert_variants(model, variants: Sequence[str] = VARIANTS,
                     representative_images: np.ndarray | None = None, *, lean: bool = True,
                     int8_recipe: Int8Recipe = Int8Recipe()) -> dict[str, bytes]:
    """Convert a Keras model to several TFLite variants.

    Returns {variant: flatbuffer bytes}; see convert() for the arguments. The float variants
    are converted from lean_inference_model(model) when `lean`, int8 from the graph its recipe
    asks for.
    """
    import tensorflow as tf  # imported here: running .tflite files needs no TensorFlow

    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown TFLite variants {unknown or variants!r}; choose from {VARIANTS}")
    if not isinstance(int8_recipe, Int8Recipe):
        raise ValueError(f"int8_recipe must be an Int8Recipe, got {type(int8_recipe).__name__}")
    image_shape = _model_image_shape(model)
    if "int8" in variants:
        if representative_images is None:
            raise ValueError("int8 conversion needs representative_images: a (N, H, W, 3) float32 array "
                             "of training images in [0, 1] to calibrate the quantisation ranges")
        representative_images = _check_images(representative_images, image_shape, "representative_images")
        if len(representative_images) < MIN_REPRESENTATIVE_IMAGES:
            raise ValueError(f"int8 calibration needs at least {MIN_REPRESENTATIVE_IMAGES} representative "
                             f"images, got {len(representative_images)}")

    def representative_dataset():
        for image in representative_images:
            yield [image[np.newaxis]]

    converted = {}
    float_variants = [variant for variant in variants if variant != "int8"]
    if float_variants:
        # The function only refers to the model's variables weakly: the model must outlive its conversion.
        float_model = lean_inference_model(model) if lean else model
        float_function = _inference_function(float_model, image_shape)
        for variant in float_variants:
            converter = _converter(float_function)
            if variant == "float16":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            converted[variant] = converter.convert()
    if "int8" in variants:
        recipe = int8_recipe
        int8_model = lean_inference_model(model, recipe.hard_swish, recipe.fold_stochastic_depth)
        converter = _converter(_inference_function(int8_model, image_shape))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Integer-only kernels: conversion fails rather than silently keeping float ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if recipe.io_dtype == "int8" else tf.uint8
        converter.inference_input_type = converter.inference_output_type = io_type
        # A private switch of the converter (no public one exists); per-channel is its default.
        converter._experimental_disable_per_channel = not recipe.per_channel
        with warnings.catch_warnings():
            # The frozen-graph route asks for quantized_input_stats with an int8 input; the
            # calibration sets the input's scale and zero point instead (the same as the
            # SavedModel route's, measured).
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            converted["int8"] = converter.convert()
    return {variant: _with_serving_signature(converted[variant]) for variant in variants}


class TFLiteModel:
    """A TFLite model running in LiteRT, taking and returning float32 whatever its variant.

    LiteRT's default XNNPACK CPU delegate is left on (OpResolverType.AUTO); `xnnpack_applied`
    tells whether it took over part of the graph.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        if isinstance(model, (bytes, bytearray)):
            source = {"model_content": bytes(model)}
        else:
            if not Path(model).is_file():
                raise FileNotFoundError(f"TFLite model not found: {model}")
            source = {"model_path": str(model)}
        self.num_threads = num_threads
        self.interpreter = Interpreter(**source, num_threads=num_threads,
                                       experimental_op_resolver_type=OpResolverType.AUTO)
        self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected a model with one input and one output, got {len(inputs)} and "
                             f"{len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"expected a batch-1 image input (1, H, W, C), got shape {shape}; "
                             "convert the model with lightcnn.export.convert")
        self.image_shape: tuple[int, int, int] = shape[1:]  # type: ignore[assignment]
        self.num_classes = int(self._output["shape"][-1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.xnnpack_applied = any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())

    @staticmethod
    def _quantization(details: dict) -> tuple[float, int]:
        scale, zero_point = details["quantization"]
        if scale == 0:
            raise ValueError(f"tensor {details['name']} is {details['dtype'].__name__} but has no "
                             "quantisation scale")
        return float(scale), int(zero_point)

    def _to_input(self, image: np.ndarray) -> np.ndarray:
        """One float image in [0, 1] -> the model's input tensor (batch 1), quantised if needed."""
        batch = image[np.newaxis]
        if self.input_dtype == np.float32:
            return batch
        scale, zero_point = self._quantization(self._input)
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    def _from_output(self, raw: np.ndarray) -> np.ndarray:
        if self.output_dtype == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self._quantization(self._output)
        return (raw.astype(np.float32) - zero_point) * scale

    def set_input(self, image: np.ndarray) -> None:
        """Load one (H, W, C) float32 image in [0, 1] into the input tensor."""
        self.interpreter.set_tensor(self._input["index"], self._to_input(np.asarray(image, np.float32)))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output(self) -> np.ndarray:
        """The last invocation's output as float32 probabilities, shape (C,)."""
        return self._from_output(self.interpreter.get_tensor(self._output["index"]))[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) float32 for images (N, H, W, C) float32 in [0, 1]."""
        images = _check_images(images, self.image_shape, "images")
        probabilities = np.empty((len(images), self.num_classes), np.float32)
        for i, image in enumerate(images):
            self.set_input(image)
            self.invoke()
            probabilities[i] = self.output()
        return probabilities


def evaluate_tflite(tflite_model: TFLiteModel | str | os.PathLike | bytes, images: np.ndarray,
                    labels: np.ndarray, reference_probs: np.ndarray | None = None) -> dict:
    """Top-1 accuracy of a TFLite model, and how closely it follows the Keras model.

    `labels` are class indices (N,) or one-hot (N, C). With `reference_probs` (the Keras
    model's probabilities on the same images) also returns `agreement` (fraction of images
    with the same predicted class) and `max_abs_diff` (largest probability difference).
    """
    model = tflite_model if isinstance(tflite_model, TFLiteModel) else TFLiteModel(tflite_model)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("evaluate_tflite needs at least one image")
    probabilities = model.predict(images)
    predicted = probabilities.argmax(axis=1)
    result = {"num_images": int(len(images)), "top1": float(np.mean(predicted == labels))}
    if reference_probs is not None:
        reference_probs = np.asarray(reference_probs, np.float32)
        if reference_probs.shape != probabilities.shape:
            raise ValueError(f"reference_probs has shape {reference_probs.shape}, expected "
                             f"{probabilities.shape} (one row of class probabilities per image)")
        result["agreement"] = float(np.mean(predicted == reference_probs.argmax(axis=1)))
        result["max_abs_diff"] = float(np.abs(probabilities - reference_probs).max())
    return result
