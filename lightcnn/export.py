"""Export Keras models to TFLite (float32, float16, int8) and run them in LiteRT.

`convert_variants` makes several variants from one export (as the pipeline's export stage
needs); `convert` makes one.

Conversion route (Keras 3 + TF 2.21): the model is exported as a TF SavedModel with a fixed
batch-1 input signature (`model.export(..., format="tf_saved_model")`) and converted with
`tf.lite.TFLiteConverter.from_saved_model`. A fixed batch of 1 is what single-image latency
and phone benchmarks measure, and it gives LiteRT static shapes throughout.
`from_concrete_functions` on a Keras 3 model is not used: it leaves the weights as resource
variables that the LiteRT calibrator cannot read.

Variants:
- "float32": plain conversion; BatchNorm is folded into the preceding convolutions.
- "float16": weights stored as float16, float32 inputs and outputs.
- "int8": full-integer quantisation calibrated on representative training images;
  uint8 input (the image pixels) and uint8 output (the probabilities).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

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


def convert(model, variant: str, representative_images: np.ndarray | None = None) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with a batch-1 input.

    `representative_images` (N, H, W, 3) float32 in [0, 1], drawn from the training split, is
    required for "int8" and ignored otherwise. All N images are used for calibration.
    """
    return convert_variants(model, (variant,), representative_images)[variant]


def convert_variants(model, variants: Sequence[str] = VARIANTS,
                     representative_images: np.ndarray | None = None) -> dict[str, bytes]:
    """Convert a Keras model to several TFLite variants, exporting the SavedModel only once.

    Returns {variant: flatbuffer bytes}; see convert() for the arguments.
    """
    import tensorflow as tf  # imported here: running .tflite files needs no TensorFlow

    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown TFLite variants {unknown or variants!r}; choose from {VARIANTS}")
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
    with tempfile.TemporaryDirectory(prefix="lightcnn-export-") as tmp_dir:
        saved_model_dir = os.path.join(tmp_dir, "saved_model")
        signature = [tf.TensorSpec((1, *image_shape), tf.float32, name="images")]
        model.export(saved_model_dir, format="tf_saved_model", input_signature=signature, verbose=False)
        for variant in variants:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
            if variant == "float16":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            elif variant == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = representative_dataset
                # Integer-only kernels: conversion fails rather than silently keeping float ops.
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.uint8
                converter.inference_output_type = tf.uint8
            converted[variant] = converter.convert()
    return converted


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
