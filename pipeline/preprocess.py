"""Stage preprocess: sharded train/val/test TFRecords and manifest.json.

    python -m pipeline.preprocess
"""
from __future__ import annotations

from pipeline import stage
from pipeline.params import load_params
from pipeline.paths import PROCESSED_DIR, RAW_DIR


def main() -> None:
    data = load_params()["data"]
    from lightcnn.data import preprocess_dataset

    preprocess_dataset(RAW_DIR, PROCESSED_DIR, image_size=data["image_size"], val_fraction=data["val_fraction"],
                       max_per_class=data["max_per_class"], num_classes=data["num_classes"], seed=data["seed"])


if __name__ == "__main__":
    stage.run(main)
