"""Stage fetch: the dataset named by data.dataset, downloaded or copied from a local source.

    python -m pipeline.fetch
"""
from __future__ import annotations

from lightcnn.data import fetch_dataset
from pipeline.common import stage
from pipeline.common.params import StageParams
from pipeline.common.paths import HOME_ROOT, RAW_DIR


def main(params: StageParams) -> None:
    dataset = params["data.dataset"]
    # Downloads are kept in the user's project, so queued experiments reuse (and resume) them.
    fetch_dataset(dataset, RAW_DIR, source=params["data.source"], local_copy=params[f"data.local_copies.{dataset}"],
                  base_dir=HOME_ROOT, url=params["data.url"], kaggle_version=params["data.kaggle_version"],
                  download_dir=HOME_ROOT / "data" / "downloads")


if __name__ == "__main__":
    stage.run("fetch", main)
