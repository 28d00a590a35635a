"""Stage fetch: the dataset named by data.dataset, downloaded or copied from data.source.

    python -m pipeline.fetch
"""
from __future__ import annotations

from pipeline import stage
from pipeline.params import load_params
from pipeline.paths import HOME_ROOT, RAW_DIR


def main() -> None:
    data = load_params()["data"]
    from lightcnn.data import fetch_dataset

    # Downloads are kept in the user's project, so queued experiments reuse (and resume) them.
    fetch_dataset(data["dataset"], RAW_DIR, source=data["source"], base_dir=HOME_ROOT, url=data["url"],
                  kaggle_version=data["kaggle_version"], download_dir=HOME_ROOT / "data" / "downloads")


if __name__ == "__main__":
    stage.run(main)
