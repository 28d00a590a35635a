"""make_dataset: shapes, values, labels, order, seeded determinism and the augmentation."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lightcnn.data import DataError, fetch_dataset, load_manifest, make_dataset, preprocess_dataset
from lightcnn.data.pipeline import random_shift_and_flip, read_examples, shift_and_flip
from tests.conftest import PROJECT_ROOT, STAGE_START
from tests.data_helpers import build_class_tree

SIZE = 16
CLASSES = {"ant": 20, "bee": 15, "cow": 10}  # train images per class; val is 20% of them


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    build_class_tree(root / "tree", CLASSES, test_per_class=4, size=SIZE)
    fetch_dataset("folder", root / "raw", source=root / "tree", progress=False)
    preprocess_dataset(root / "raw", root / "processed", image_size=SIZE, examples_per_shard=10, progress=False)
    return root / "processed"


def _collect(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _digest(dataset, epochs):
    digest = hashlib.sha256()
    for _ in range(epochs):
        for images, labels in dataset.as_numpy_iterator():
            digest.update(images.tobytes())
            digest.update(labels.tobytes())
    return digest.hexdigest()


def test_eval_batches_are_the_records_in_file_order(processed):
    manifest = load_manifest(processed)
    assert manifest["splits"]["train"]["num_examples"] == 36 and len(manifest["splits"]["train"]["shards"]) == 4
    records = list(read_examples(processed, "test"))
    dataset = make_dataset(processed, "test", 5, training=False)
    assert dataset.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    images, labels = _collect(dataset)
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.shape == (12, SIZE, SIZE, 3) and labels.shape == (12, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(labels, np.eye(3)[[label for _, label, _ in records]])
    np.testing.assert_array_equal(images, np.stack([image for image, _, _ in records]) / np.float32(255))
    assert [b[0].shape[0] for b in dataset.as_numpy_iterator()] == [5, 5, 2]
    assert [b[0].shape[0] for b in make_dataset(processed, "test", 5, training=False, drop_remainder=True)
            .as_numpy_iterator()] == [5, 5]
    # The length is known before any batch is drawn (the manifest's count): Keras needs no pass to count them.
    assert int(dataset.cardinality()) == 3
    assert int(make_dataset(processed, "test", 5, training=False, drop_remainder=True).cardinality()) == 2
    assert int(make_dataset(processed, "train", 8, training=True, seed=1).cardinality()) == 5  # 36 images
    with pytest.raises(DataError, match="the test split has 12 images, fewer than one batch of 13: lower the batch "
                                        r"size \(train.batch_size\)"):
        make_dataset(processed, "test", 13, training=False, drop_remainder=True)


def test_training_without_augmentation_reshuffles_the_same_images_each_epoch(processed):
    originals, original_labels = _collect(make_dataset(processed, "train", 8, training=False))
    dataset = make_dataset(processed, "train", 8, training=True, seed=3, augment=False)
    first, first_labels = _collect(dataset)
    second, _ = _collect(dataset)
    for epoch in (first, second):  # same images, another order
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, originals))
    assert not np.array_equal(first, originals) and not np.array_equal(first, second)
    assert sorted(map(bytes, first_labels)) == sorted(map(bytes, original_labels))  # labels travel with images


def test_same_seed_gives_the_same_stream_and_another_seed_another(processed):
    def stream(seed):
        return _digest(make_dataset(processed, "train", 8, training=True, seed=seed), epochs=2)

    assert stream(7) == stream(7)
    assert stream(7) != stream(8)


def test_augmentation_changes_training_images_only(processed):
    originals = {bytes(image) for image in _collect(make_dataset(processed, "train", 8, training=False))[0]}
    augmented = _collect(make_dataset(processed, "train", 8, training=True, seed=1))[0]
    unchanged = sum(bytes(image) in originals for image in augmented)
    assert unchanged < 0.3 * len(augmented)  # only a zero shift without a flip leaves an image as it was
    # eval mode: the stored pixels, every time (augment=True is ignored without training)
    stored = np.stack([image for image, _, _ in read_examples(processed, "val")]) / np.float32(255)
    for _ in range(2):
        np.testing.assert_array_equal(_collect(make_dataset(processed, "val", 8, training=False, augment=True))[0],
                                      stored)


def test_shift_and_flip_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    dy, dx = np.array([0, 2, -1, 4, -3, 1]), np.array([0, -2, 3, 1, -6, 0])
    flips = np.array([False, False, True, True, False, True])
    expected = np.empty_like(images)
    for b in range(6):
        for i in range(5):
            for j in range(7):
                # output (i, j) shows input (i - dy, j - dx), clamped to the edge, then mirrored
                source_j = (6 - j) if flips[b] else j
                expected[b, i, j] = images[b, np.clip(i - dy[b], 0, 4), np.clip(source_j - dx[b], 0, 6)]
    actual = shift_and_flip(tf.constant(images), tf.constant(dy, tf.int32), tf.constant(dx, tf.int32),
                            tf.constant(flips)).numpy()
    np.testing.assert_array_equal(actual, expected)


def test_random_shifts_stay_within_the_fraction_and_half_are_flipped():
    # a bright pixel at (10, 10) with a dimmer one to its right shows each image's shift and flip
    marker = np.zeros((256, 20, 20, 3), np.uint8)
    marker[:, 10, 10], marker[:, 10, 11] = 255, 128
    out = random_shift_and_flip(tf.constant(marker), tf.constant([0, 42], tf.int64), 0.2, True).numpy()
    shifts, flipped = [], []
    for image in out[..., 0]:
        (row,), (col,) = np.nonzero(image == 255)
        is_flipped = image[row, col - 1] == 128  # the dim pixel is now on the left
        shifts.append((row - 10, (9 - col) if is_flipped else (col - 10)))
        flipped.append(is_flipped)
    dys, dxs = np.array(shifts).T
    assert np.abs(dys).max() <= 4 and np.abs(dxs).max() <= 4  # 20% of 20 pixels
    assert len(set(dys.tolist())) >= 7 and len(set(dxs.tolist())) >= 7  # the range is used, not one value
    assert 0.3 < np.mean(flipped) < 0.7
    same_key = random_shift_and_flip(tf.constant(marker), tf.constant([0, 42], tf.int64), 0.2, True).numpy()
    np.testing.assert_array_equal(out, same_key)


def test_stream_is_the_same_with_op_determinism_enabled(processed):
    # Training enables op determinism (a process-wide switch, hence the subprocess); the
    # pipeline must run under it and give the stream it gives without it.
    script = STAGE_START + (
        "import tensorflow as tf\n"
        "from tests.test_input_pipeline import _digest\n"
        "from lightcnn.data import make_dataset\n"
        f"def stream(): return _digest(make_dataset({str(processed)!r}, 'train', 8, training=True, seed=11), 2)\n"
        "before = stream()\n"
        "tf.config.experimental.enable_op_determinism()\n"
        "print(before, stream())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = result.stdout.split()[-2:]
    assert len(before) == 64 and before == after


def test_keras_trains_and_validates_on_it_without_running_out_of_data(processed):
    """Keras warned "Your input ran out of data" after every validation on a dataset of unknown
    length (it runs one until TensorFlow raises OutOfRange): the train stage printed it each epoch."""
    import warnings

    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    train = make_dataset(processed, "train", 8, training=True, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(train.repeat(), steps_per_epoch=5, epochs=2, verbose=0,  # 36 images, 8 a batch
                            validation_data=make_dataset(processed, "val", 4, training=False))
    assert not [str(w.message) for w in caught if "ran out of data" in str(w.message)]
    assert len(history.history["val_accuracy"]) == 2


def test_bad_requests_are_named(processed, tmp_path):
    with pytest.raises(DataError, match="manifest.json not found: run the preprocess stage"):
        make_dataset(tmp_path, "train", 8, training=True)
    with pytest.raises(DataError, match="unknown split 'validation'"):
        make_dataset(processed, "validation", 8, training=False)
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        make_dataset(processed, "train", 0, training=False)
