"""Stage preprocess: sharded train/val/test TFRecords and manifest.json.

    python -m pipeline.preprocess
"""
from __future__ import annotations

from lightcnn.data import preprocess_dataset
from pipeline.common import stage
from pipeline.common.params import StageParams
from pipeline.common.paths import PROCESSED_DIR, RAW_DIR


def main(params: StageParams) -> None:
    preprocess_dataset(RAW_DIR, PROCESSED_DIR, image_size=params["data.image_size"],
                       val_fraction=params["data.val_fraction"], max_per_class=params["data.max_per_class"],
                       num_classes=params["data.num_classes"], seed=params["data.seed"])


if __name__ == "__main__":
    stage.run("preprocess", main)
