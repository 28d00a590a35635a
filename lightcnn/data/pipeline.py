"""tf.data input pipeline over the TFRecords that `preprocess` wrote.

Training streams are reproducible: the shuffle and the augmentation are seeded from
`seed`, and each new pass over the dataset (each epoch) draws a new, equally reproducible
shuffle and augmentation. Augmentation runs once per batch, vectorised, with stateless
random ops, so the pipeline stays far ahead of a small model on two cores.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from lightcnn.data.download import DataError
from lightcnn.data.preprocess import MANIFEST, SPLITS, load_manifest


CACHE_LIMIT_BYTES = 1 << 30  # splits whose decoded images fit in this stay in memory after the first pass
SHUFFLE_LIMIT_BYTES = 256 << 20  # shuffle buffer size for splits that do not (their records are pre-shuffled)


def shard_paths(processed_dir: str | os.PathLike, split: str, manifest: dict | None = None) -> list[str]:
    """The split's shard files, checked to exist."""
    manifest = manifest or load_manifest(processed_dir)
    if split not in manifest["splits"]:
        raise DataError(f"unknown split {split!r}; the manifest has {', '.join(manifest['splits'])}")
    paths = [Path(processed_dir) / name for name in manifest["splits"][split]["shards"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"shard files missing: {', '.join(missing)}; run the preprocess stage again")
    return [str(p) for p in paths]


# (resolved path, size, mtime_ns) -> sha256 of shards already hashed in this process: a
# training run builds its datasets more than once, and a shard that did not change since
# (same size and modification time) is not read through again. A file modified in the last
# few seconds is not cached: a change within the file system's timestamp resolution would
# keep its mtime (git's "racy clean" problem).
_VERIFIED_DIGESTS: dict[tuple[str, int, int], str] = {}
RECENT_CHANGE_NS = 3_000_000_000


def verify_shards(processed_dir: str | os.PathLike, splits: Sequence[str] = SPLITS,
                  manifest: dict | None = None) -> None:
    """Check the shards of `splits` against the sha256 checksums in the manifest.

    Raises DataError naming the first shard that is missing or differs (damaged on disk,
    truncated, or replaced after preprocess wrote it). Digests are cached per process by
    (path, size, modification time), so asking again is free unless a shard changed.
    """
    manifest = manifest or load_manifest(processed_dir)
    for split in splits:
        for path in shard_paths(processed_dir, split, manifest):
            name = Path(path).name
            expected = manifest["sha256"].get(name)
            if expected is None:
                raise DataError(f"{Path(processed_dir) / MANIFEST} has no checksum for the shard {name}: the "
                                "manifest does not belong to these shards. Rerun `dvc repro preprocess` (or restore "
                                "the tracked copy with `dvc checkout data/processed`)")
            actual = shard_digest(path)
            if actual != expected:
                raise DataError(
                    f"shard {path} is damaged: its sha256 is {actual[:16]}..., the manifest says {expected[:16]}... "
                    f"({os.path.getsize(path):,} bytes now). It changed after preprocess wrote it (disk error, "
                    "truncated copy, edited by hand). Rerun `dvc repro preprocess` (or restore the tracked copy "
                    "with `dvc checkout data/processed`) before training.")


def shard_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, size, mtime) for the life of the process."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _VERIFIED_DIGESTS.get(key)
    if digest is None:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if time.time_ns() - stat.st_mtime_ns > RECENT_CHANGE_NS:
            _VERIFIED_DIGESTS[key] = digest
    return digest


def parse_example(serialized: tf.Tensor, image_shape: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """One serialized record -> (uint8 image (H, W, 3), int32 label)."""
    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    image = tf.io.decode_png(features["image"], channels=3)
    image = tf.ensure_shape(image, (*image_shape, 3))
    return image, tf.cast(features["label"], tf.int32)


def make_dataset(
    processed_dir: str | os.PathLike,
    split: str,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: bool = True,
    shift_fraction: float = 0.2,
    flip: bool = True,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of (float32 images (B, H, W, 3) in [0, 1], one-hot float32 labels (B, C)).

    training=True: shuffled (seeded, a new order each pass) and, with `augment`, randomly
    shifted by up to `shift_fraction` of the height and width (whole pixels, edge pixels
    repeated as Keras ImageDataGenerator's fill_mode="nearest") and flipped left-right
    (`flip`). training=False: records in file order, unchanged. drop_remainder: full batches
    only (a split smaller than one batch is refused).

    The split's shards are first checked against the manifest's sha256 checksums
    (`verify_shards`; once per process unless a shard changes), so damaged data never
    trains or evaluates a model.

    The training stream depends on `seed` and on TensorFlow's global seed (which training
    sets): each pass over the dataset gets a new shuffle and augmentation, and a new process
    with the same seeds goes through the same sequence of passes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 <= shift_fraction < 1:
        raise DataError(f"shift_fraction must be in [0, 1), got {shift_fraction!r}")
    manifest = load_manifest(processed_dir)
    files = shard_paths(processed_dir, split, manifest)
    verify_shards(processed_dir, (split,), manifest)
    height, width = manifest["image_size"]
    num_classes = manifest["num_classes"]
    num_examples = manifest["splits"][split]["num_examples"]
    if drop_remainder and num_examples < batch_size:
        raise DataError(f"the {split} split has {num_examples} images, fewer than one batch of {batch_size}: "
                        "lower the batch size (train.batch_size) or use more images (data.max_per_class)")

    dataset = tf.data.TFRecordDataset(files)
    dataset = dataset.map(lambda record: parse_example(record, (height, width)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    image_bytes = height * width * 3
    cached = num_examples * image_bytes <= CACHE_LIMIT_BYTES
    if cached:
        dataset = dataset.cache()
    if training:
        buffer = num_examples if cached else min(num_examples, max(1024, SHUFFLE_LIMIT_BYTES // image_bytes))
        dataset = dataset.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def to_model_inputs(images, labels):
        return tf.cast(images, tf.float32) / 255.0, tf.one_hot(labels, num_classes, dtype=tf.float32)

    if training and augment and (shift_fraction > 0 or flip):
        # One random int64 per batch, a new sequence on each pass, keys the stateless augmentation.
        batch_keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        key_base = tf.constant(seed, tf.int64)

        def augment_batch(batch, key):
            images, labels = batch
            images = random_shift_and_flip(images, tf.stack([key_base, key]), shift_fraction, flip)
            return to_model_inputs(images, labels)

        dataset = tf.data.Dataset.zip(dataset, batch_keys).map(
            augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # The length, known from the manifest (a TFRecord dataset's is "unknown"): without it Keras
    # ran the validation set until it raised OutOfRange and then warned "Your input ran out of
    # data; interrupting training" after every validation, and counting the training batches
    # took a pass over the data. TensorFlow checks it as the batches are drawn.
    batches = num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def seconds_per_pass(dataset: tf.data.Dataset) -> float:
    """Seconds to draw every batch of `dataset` once, with no model consuming them: what the
    input stream alone costs per epoch (prefetch overlaps it with the training steps)."""
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def random_shift_and_flip(images: tf.Tensor, key: tf.Tensor, shift_fraction: float, flip: bool) -> tf.Tensor:
    """Shift each image by a random whole number of pixels, up to `shift_fraction` of its
    height and width either way, and flip half of them left-right (if `flip`)."""
    height, width = images.shape[1], images.shape[2]
    uniform = tf.random.stateless_uniform([tf.shape(images)[0], 3], seed=key)
    # ImageDataGenerator draws the shift uniformly in [-fraction, fraction) of the size
    dy = tf.cast(tf.round((2.0 * uniform[:, 0] - 1.0) * shift_fraction * height), tf.int32)
    dx = tf.cast(tf.round((2.0 * uniform[:, 1] - 1.0) * shift_fraction * width), tf.int32)
    flips = uniform[:, 2] < 0.5 if flip else tf.zeros_like(uniform[:, 2], tf.bool)
    return shift_and_flip(images, dy, dx, flips)


def shift_and_flip(images: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Move image b down by dy[b] and right by dx[b] pixels, repeating the edge pixels into
    the uncovered border, then mirror it left-right where flips[b] is True.

    Output pixel (i, j) is input pixel (clip(i - dy), clip(j - dx)): two batched gathers.
    """
    height, width = images.shape[1], images.shape[2]
    rows = tf.clip_by_value(tf.range(height)[None, :] - dy[:, None], 0, height - 1)
    cols = tf.clip_by_value(tf.range(width)[None, :] - dx[:, None], 0, width - 1)
    cols = tf.where(flips[:, None], tf.reverse(cols, axis=[1]), cols)
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def read_examples(processed_dir: str | os.PathLike, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
    """(uint8 image (H, W, 3), label, source path) of each record of a split, in file order."""
    def parse(serialized):
        features = tf.io.parse_single_example(serialized, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "path": tf.io.FixedLenFeature([], tf.string),
        })
        return tf.io.decode_png(features["image"], channels=3), features["label"], features["path"]

    manifest = load_manifest(processed_dir)
    files = shard_paths(processed_dir, split, manifest)
    verify_shards(processed_dir, (split,), manifest)
    records = tf.data.TFRecordDataset(files).map(parse)
    for image, label, path in records.as_numpy_iterator():
        yield image, int(label), path.decode()
