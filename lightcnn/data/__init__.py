"""Datasets: fetch (download or local copy) -> preprocess (TFRecords) -> tf.data input pipeline.

`fetch_dataset`, `preprocess_dataset` and `load_manifest` do not import TensorFlow (the
preprocess worker processes import this package); the input pipeline names are loaded
from `lightcnn.data.pipeline`, which does, on first use.
"""
from lightcnn import lazy_names
from lightcnn.data.download import DataError, download_file, extract_archive
from lightcnn.data.fetch import (
    DATASETS,
    ResolvedSource,
    describe_source,
    fetch_dataset,
    find_kaggle_credentials,
    read_fetch_info,
    resolve_source,
)
from lightcnn.data.preprocess import load_manifest, preprocess_dataset

_PIPELINE_NAMES = ("make_dataset", "read_examples", "verify_shards")

__all__ = [
    "DATASETS",
    "DataError",
    "ResolvedSource",
    "describe_source",
    "download_file",
    "extract_archive",
    "fetch_dataset",
    "find_kaggle_credentials",
    "load_manifest",
    "preprocess_dataset",
    "read_fetch_info",
    "resolve_source",
    *_PIPELINE_NAMES,
]


__getattr__ = lazy_names(__name__, dict.fromkeys(_PIPELINE_NAMES, "pipeline"), globals())
