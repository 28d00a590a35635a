"""Stage evaluate@<model>-<seed>: test-split metrics, confusion matrix and Grad-CAM of the kept model.

    python -m pipeline.evaluate our_small 42
"""
from __future__ import annotations

from pipeline.common import stage

if __name__ == "__main__":  # a mistake reported in a second, before Keras and TensorFlow load
    stage.check_params_first(per_model=True)

import numpy as np  # noqa: E402

from lightcnn import io  # noqa: E402
from lightcnn.data import load_manifest, make_dataset  # noqa: E402
from lightcnn.evaluation import (  # noqa: E402
    confusion_matrix_rows, evaluate_model, per_class_accuracy_rows, save_confusion_matrix_png,
)
from lightcnn.gradcam import save_gradcam_grid  # noqa: E402
from lightcnn.models import count_macs, load_model  # noqa: E402
from pipeline.common.params import StageParams  # noqa: E402
from pipeline.common.paths import PROCESSED_DIR, ModelPaths  # noqa: E402


def one_image_per_class(dataset, count: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed set of test images, the same for every model: classes in turn, in file order."""
    per_class = -(-count // num_classes)  # ceil
    picked: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    for batch_images, batch_labels in dataset.as_numpy_iterator():
        for image, label in zip(batch_images, batch_labels.argmax(axis=1)):
            if len(picked[int(label)]) < per_class:
                picked[int(label)].append(image)
        if all(len(v) >= per_class for v in picked.values()):
            break
    chosen = [(rank, c) for rank in range(per_class) for c in range(num_classes) if rank < len(picked[c])][:count]
    images = np.stack([picked[c][rank] for rank, c in chosen])
    return images, np.array([c for _, c in chosen])


def main(params: StageParams, model_name: str, seed: int) -> None:
    paths = ModelPaths(model_name, seed)
    manifest = load_manifest(PROCESSED_DIR)
    class_names = manifest["class_names"]
    model = load_model(paths.best)
    test_ds = make_dataset(PROCESSED_DIR, "test", 256, training=False)
    result = evaluate_model(model, test_ds, class_names)

    metrics = {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"],
               "num_examples": result["num_examples"], "params": model.count_params(), "macs": count_macs(model),
               "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights)}
    io.write_json(paths.eval_metrics, metrics)
    io.write_json(paths.extras / "per_class_accuracy.json", per_class_accuracy_rows(result["per_class_accuracy"]))
    io.write_json(paths.extras / "confusion.json", confusion_matrix_rows(result["confusion_matrix"], class_names))
    save_confusion_matrix_png(result["confusion_matrix"], class_names, paths.extras / "confusion.png")
    images, labels = one_image_per_class(test_ds, params["report.gradcam_images"], len(class_names))
    save_gradcam_grid(model, images, class_names, paths.extras / "gradcam.png", labels=labels,
                      layer_name=params["report.gradcam_layer"])


if __name__ == "__main__":
    stage.run("evaluate", main, per_model=True)
