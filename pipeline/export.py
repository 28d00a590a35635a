"""Stage export@<model>-<seed>: float32, float16 and int8 TFLite files, each measured in LiteRT.

    python -m pipeline.export our_small 42
"""
from __future__ import annotations

from pipeline.common import stage

if __name__ == "__main__":  # a mistake reported in a second, before Keras and TensorFlow load
    stage.check_params_first(per_model=True)

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from lightcnn import io  # noqa: E402
from lightcnn.data import make_dataset  # noqa: E402
from lightcnn.export import VARIANTS, Int8Recipe, TFLiteModel, convert_variants, evaluate_tflite  # noqa: E402
from lightcnn.models import load_model  # noqa: E402
from pipeline.common.params import StageParams  # noqa: E402
from pipeline.common.paths import PROCESSED_DIR, ModelPaths  # noqa: E402


def take(dataset, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` images (and integer labels) of a non-shuffled split."""
    if limit is not None:
        dataset = dataset.unbatch().take(limit).batch(256)
    images, labels = zip(*((x, y.argmax(axis=1)) for x, y in dataset.as_numpy_iterator()))
    return np.concatenate(images), np.concatenate(labels)


def main(params: StageParams, model_name: str, seed: int) -> None:
    paths = ModelPaths(model_name, seed)
    model = load_model(paths.best)
    calibration, _ = take(make_dataset(PROCESSED_DIR, "train", 256, training=False),
                          params["export.representative_images"])
    test_images, test_labels = take(make_dataset(PROCESSED_DIR, "test", 256, training=False),
                                    params["export.eval_images"])
    keras_probs = model.predict(test_images, batch_size=256, verbose=0)

    recipe = Int8Recipe()  # the default: what the int8 figures below are of
    results = {"keras_top1": float(np.mean(keras_probs.argmax(axis=1) == test_labels)),
               "eval_images": int(len(test_labels)), "representative_images": int(len(calibration)),
               "int8_recipe": dataclasses.asdict(recipe)}
    stage.say(params, f"converting to TFLite: {', '.join(VARIANTS)} (int8 calibrated on {len(calibration)} "
                      "training images)")
    for variant, tflite_bytes in convert_variants(model, VARIANTS, calibration, int8_recipe=recipe).items():
        io.write_bytes(paths.tflite(variant), tflite_bytes)
        measured = evaluate_tflite(TFLiteModel(tflite_bytes), test_images, test_labels, reference_probs=keras_probs)
        results[variant] = {"size_bytes": len(tflite_bytes), **measured}
        stage.say(params, f"{variant}: {len(tflite_bytes):,} bytes, top-1 {measured['top1']:.4f} on "
                          f"{measured['num_images']} test images")
    io.write_json(paths.tflite_metrics, results)


if __name__ == "__main__":
    stage.run("export", main, per_model=True)
