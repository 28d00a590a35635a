"""preprocess_dataset: image conversion, bad files, splits, determinism and atomic output."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lightcnn.data import DataError, fetch_dataset, preprocess_dataset
from lightcnn.data.pipeline import read_examples
from lightcnn.data.preprocess import choose_native_size
from tests.conftest import PROJECT_ROOT
from tests.data_helpers import build_class_tree, extract_real_cifar_subset, write_image

QUIET = dict(progress=False)
RNG = np.random.default_rng(1)
SIZE = 16


def _records(processed):
    return {path: (image, label) for split in ("train", "val", "test")
            for image, label, path in read_examples(processed, split)}


def _fetched_tree(tmp_path, classes, **tree_args):
    build_class_tree(tmp_path / "tree", classes, size=SIZE, **tree_args)
    fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "tree", **QUIET)
    return tmp_path / "raw"


def _png_with_broken_data() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 10
    data[start:start + 40] = bytes(40)  # the header is fine, the compressed pixels are not
    return bytes(data)


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10]


@pytest.mark.parametrize("source_kind", ["directory", "tar.gz"])
def test_unusual_image_modes_are_converted_and_bad_files_skipped_with_reasons(tmp_path, source_kind):
    tree = tmp_path / "tree"
    build_class_tree(tree, {"alpha": 10, "beta": 10}, size=SIZE)
    alpha = tree / "train" / "alpha"
    gray = RNG.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    palette_indices = RNG.integers(0, 4, (SIZE, SIZE), dtype=np.uint8)
    palette_colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    write_image(alpha / "gray.png", gray)
    write_image(alpha / "rgba.png", rgba)
    write_image(alpha / "gray16.png", gray.astype(np.uint16) * 257)  # 16-bit: 0..65535
    cmyk = np.zeros((SIZE, SIZE, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    Image.fromarray(cmyk, "CMYK").save(alpha / "cmyk.tif")
    Image.fromarray(cmyk, "CMYK").save(alpha / "cmyk.jpg", quality=95)
    paletted = Image.fromarray(palette_indices, "L").convert("P")
    paletted.putpalette(palette_colors.flatten().tolist())
    paletted.save(alpha / "palette.png", transparency=3)
    paletted.save(alpha / "palette.gif")
    (alpha / "truncated.jpg").write_bytes(_truncated_jpeg())
    (alpha / "undecodable.png").write_bytes(_png_with_broken_data())
    (alpha / "notes.jpg").write_text("this is not an image")
    (alpha / "empty.jpg").write_bytes(b"")
    (tree / "train" / "README.txt").write_text("a file beside the class folders")
    (alpha / ".DS_Store").write_bytes(b"hidden files are no part of the dataset")
    source = tree
    if source_kind == "tar.gz":  # read in place from the archive, wrapped in a top folder
        source = tmp_path / "dataset.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tree, arcname="dataset")
    fetch_dataset("folder", tmp_path / "raw", source=source, **QUIET)

    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", image_size=SIZE, **QUIET)
    records = _records(tmp_path / "processed")
    converted = {
        "gray.png": np.stack([gray] * 3, axis=-1),
        "rgba.png": rgba[..., :3],
        "gray16.png": np.stack([gray] * 3, axis=-1),  # scaled down, not clipped to white
        "cmyk.tif": np.broadcast_to(np.array([0, 255, 255], np.uint8), (SIZE, SIZE, 3)),
        "palette.png": palette_colors[palette_indices],
        "palette.gif": palette_colors[palette_indices],
    }
    for name, expected in converted.items():
        image, label = records[f"train/alpha/{name}"]
        assert label == 0
        np.testing.assert_array_equal(image, expected, err_msg=name)
    image, _ = records["train/alpha/cmyk.jpg"]  # lossy, but cyan
    assert image.shape == (SIZE, SIZE, 3) and np.abs(image.astype(int) - [0, 255, 255]).max() < 16

    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(reasons) == {"train/alpha/truncated.jpg", "train/alpha/undecodable.png", "train/alpha/notes.jpg",
                            "train/alpha/empty.jpg", "train/README.txt"}
    assert "truncated" in reasons["train/alpha/truncated.jpg"]
    assert "cannot decode" in reasons["train/alpha/undecodable.png"]
    assert "not an image" in reasons["train/alpha/notes.jpg"] and "not an image" in reasons["train/alpha/empty.jpg"]
    assert reasons["train/README.txt"] == "not inside a class folder"
    assert str(tmp_path) not in json.dumps(manifest["skipped"])  # reasons name no machine-specific path
    # 10 good + 7 converted alpha images remain, split 80/20 before decoding (so the split counts vary)
    alpha_total = sum(manifest["counts"][split]["alpha"] for split in ("train", "val"))
    assert alpha_total == 17 and len(records) == sum(s["num_examples"] for s in manifest["splits"].values())


def test_a_class_with_only_unusable_files_is_an_error_naming_it(tmp_path):
    raw = _fetched_tree(tmp_path, {"alpha": 3, "beta": 3})
    for path in (raw / "test" / "beta").iterdir():
        path.write_text("not an image any more")
    with pytest.raises(DataError, match="class 'beta' has no images in the test split once its unusable files "
                                        r"were skipped \(test/beta/000.png: not an image"):
        preprocess_dataset(raw, tmp_path / "processed", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "tree"]  # no half-written output


def test_an_empty_class_folder_is_an_error_before_any_decoding(tmp_path):
    build_class_tree(tmp_path / "tree", {"alpha": 3, "beta": 3}, size=SIZE)
    (tmp_path / "tree" / "valid" / "alpha").mkdir(parents=True)
    write_image(tmp_path / "tree" / "valid" / "beta" / "x.png", np.zeros((4, 4, 3), np.uint8))
    fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "tree", **QUIET)
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match="class 'alpha' has no images in the val split"):
        preprocess_dataset(raw, tmp_path / "processed", **QUIET)


def test_a_test_class_missing_from_train_is_an_error(tmp_path):
    raw = _fetched_tree(tmp_path, {"alpha": 3, "beta": 3})
    (raw / "test" / "beta").rename(raw / "test" / "betta")
    with pytest.raises(DataError, match="class folder test/betta has no counterpart in train/"):
        preprocess_dataset(raw, tmp_path / "processed", **QUIET)


def test_validation_split_is_stratified_seeded_and_disjoint_from_train(tmp_path):
    raw = _fetched_tree(tmp_path, {"a": 10, "b": 25, "c": 7})
    splits = {}
    for seed in (0, 1):
        manifest = preprocess_dataset(raw, tmp_path / f"p{seed}", seed=seed, val_fraction=0.2, **QUIET)
        assert manifest["counts"]["val"] == {"a": 2, "b": 5, "c": 1}
        assert manifest["counts"]["train"] == {"a": 8, "b": 20, "c": 6}
        assert manifest["validation"]["val_fraction"] == 0.2
        splits[seed] = {split: {path for _, _, path in read_examples(tmp_path / f"p{seed}", split)}
                        for split in ("train", "val")}
        assert not splits[seed]["train"] & splits[seed]["val"]
        assert len(splits[seed]["train"] | splits[seed]["val"]) == 42
    assert splits[0]["val"] != splits[1]["val"]


def test_max_per_class_keeps_the_first_files_and_num_classes_the_first_classes(tmp_path):
    raw = _fetched_tree(tmp_path, {"a": 6, "b": 6, "c": 6}, test_per_class=5)
    manifest = preprocess_dataset(raw, tmp_path / "processed", max_per_class=4, num_classes=2, **QUIET)
    assert manifest["class_names"] == ["a", "b"]
    assert manifest["counts"]["test"] == {"a": 4, "b": 4}
    assert manifest["params"]["max_per_class"] == 4 and manifest["params"]["num_classes"] == 2
    paths = {path for split in ("train", "val") for _, _, path in read_examples(tmp_path / "processed", split)}
    assert paths == {f"train/{c}/{i:03d}.png" for c in "ab" for i in range(4)}


def test_two_runs_give_byte_identical_shards_whatever_the_worker_count(cifar10_subset, tmp_path):
    extract_real_cifar_subset(cifar10_subset, tmp_path / "tree", per_class=25)
    fetch_dataset("cifar10", tmp_path / "raw", source=tmp_path / "tree", **QUIET)
    first = preprocess_dataset(tmp_path / "raw", tmp_path / "one", workers=1, examples_per_shard=150, **QUIET)
    second = preprocess_dataset(tmp_path / "raw", tmp_path / "two", workers=2, examples_per_shard=150, **QUIET)
    assert first == second
    assert len(first["splits"]["train"]["shards"]) == 2  # 200 train images in shards of 150
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and "manifest.json" in names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # and the recorded checksums are those of the files
    for name, digest in first["sha256"].items():
        assert hashlib.sha256((tmp_path / "one" / name).read_bytes()).hexdigest() == digest


def test_workers_do_not_run_the_callers_main_script(tmp_path):
    # A script that preprocesses at top level, without an `if __name__ == "__main__":` guard,
    # and notes each time it runs. Spawned workers must not run it again.
    raw = _fetched_tree(tmp_path, {"alpha": 6, "beta": 6})
    script = tmp_path / "unguarded_stage.py"
    script.write_text(
        "import os\n"
        f"with open({str(tmp_path / 'runs.txt')!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "from lightcnn.data import preprocess_dataset\n"
        f"preprocess_dataset({str(raw)!r}, {str(tmp_path / 'processed')!r}, workers=2, progress=False)\n"
    )
    result = subprocess.run([sys.executable, str(script)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert len((tmp_path / "runs.txt").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "processed/manifest.json").read_text())["splits"]["test"]["num_examples"] == 4


def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path):
    raw = _fetched_tree(tmp_path, {"alpha": 3, "beta": 3})
    manifest = preprocess_dataset(raw, tmp_path / "processed", **QUIET)
    before = {p.name: p.read_bytes() for p in (tmp_path / "processed").iterdir()}
    for path in (raw / "train" / "alpha").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(DataError, match="class 'alpha'"):
        preprocess_dataset(raw, tmp_path / "processed", **QUIET)
    assert {p.name: p.read_bytes() for p in (tmp_path / "processed").iterdir()} == before
    assert manifest["num_classes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed", "raw", "tree"]


# --------------------------------------------------------------------------- image size of folder datasets


def test_a_folder_dataset_of_small_grayscale_images_keeps_their_size(tmp_path):
    for split, per_class in (("train", 6), ("test", 2)):
        for name in ("zero", "one"):
            for i in range(per_class):
                write_image(tmp_path / "tree" / split / name / f"{i}.png",
                            RNG.integers(0, 256, (28, 28), dtype=np.uint8))  # mode L, like MNIST
    fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "tree", **QUIET)
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", **QUIET)
    assert manifest["image_size"] == [28, 28] and manifest["image_size_reason"] == "all 16 images are 28x28"
    image, _, path = next(read_examples(tmp_path / "processed", "test"))
    with Image.open(tmp_path / "tree" / path) as source_image:  # not resized: the gray pixels, as RGB
        np.testing.assert_array_equal(image, np.stack([np.asarray(source_image)] * 3, axis=-1))
    # image_size still decides when it is given
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "at20", image_size=20, **QUIET)
    assert manifest["image_size"] == [20, 20] and manifest["image_size_reason"] == "data.image_size=20"
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "at20x24", image_size=[20, 24], **QUIET)
    assert manifest["image_size_reason"] == "data.image_size=[20, 24]"


@pytest.mark.parametrize("archive_kind", ["zip", "tar.gz"])
def test_mixed_sizes_in_an_archive_take_the_most_common_one(tmp_path, archive_kind):
    tree = tmp_path / "tree"
    build_class_tree(tree, {"alpha": 4, "beta": 4}, test_per_class=2, size=SIZE)  # 12 images of 16x16
    write_image(tree / "train/alpha/wide.png", RNG.integers(0, 256, (10, 40, 3), dtype=np.uint8))
    write_image(tree / "train/beta/big.jpg", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tree / "train/beta/notes.jpg").write_text("not an image")
    write_image(tree / "train/beta/zz_cut.png", RNG.integers(0, 256, (99, 99, 3), dtype=np.uint8))
    archive = tmp_path / f"dataset.{archive_kind}"
    if archive_kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(tree.rglob("*")):
                zf.write(path, "dataset/" + path.relative_to(tree).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tree, arcname="dataset")
    fetch_dataset("folder", tmp_path / "raw", source=archive, **QUIET)
    # max_per_class=6 keeps the first 6 train files per class in sorted order: beta's 99x99 zz_cut.png is not used
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", max_per_class=6, **QUIET)
    assert manifest["image_size"] == [SIZE, SIZE]
    assert manifest["image_size_reason"] == (
        "mixed sizes (3 different): the most common, 16x16, has 12 of 14 images; the others are resized to it "
        "(1 file without a readable image header not counted)")
    assert {entry["path"] for entry in manifest["skipped"]} == {"train/beta/notes.jpg"}


def test_the_native_size_rule():
    size, reason = choose_native_size(Counter({(28, 28): 1200}))
    assert size == (28, 28) and reason == "all 1,200 images are 28x28"
    size, reason = choose_native_size(Counter({(30, 40): 5, (40, 30): 5, (20, 20): 7}))
    assert size == (20, 20) and "has 7 of 17 images" in reason
    assert choose_native_size(Counter({(30, 40): 5, (40, 30): 5, (20, 20): 2}))[0] == (40, 30)  # tie: taller
    assert choose_native_size(Counter({(20, 40): 5, (32, 32): 5}))[0] == (32, 32)  # tie: larger area
    size, reason = choose_native_size(Counter({(3000, 4000): 50}))
    assert size == (224, 224) and reason == ("all 50 images are 3000x4000, larger than 512 px on a side: resized "
                                             "to the default 224x224 (set data.image_size to choose)")
    size, reason = choose_native_size(Counter(), unreadable=3)
    assert size == (224, 224) and reason.startswith("no image header could be read")


def test_real_cifar_jpegs_as_a_folder_dataset_stay_32x32(cifar10_subset, tmp_path):
    extract_real_cifar_subset(cifar10_subset, tmp_path / "tree", per_class=2)
    fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "tree", **QUIET)
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", **QUIET)
    assert manifest["image_size"] == [32, 32] and manifest["image_size_reason"] == "all 40 images are 32x32"


@pytest.mark.parametrize("params, message", [
    (dict(val_fraction=0.0), "val_fraction must be a number between 0 and 1"),
    (dict(val_fraction=1.5), "val_fraction must be a number between 0 and 1"),
    (dict(image_size=[32]), "image_size must be an integer or"),
    (dict(image_size=0), "image_size must be an integer or"),
    (dict(max_per_class=0), "max_per_class must be a positive integer"),
    (dict(num_classes=3), "num_classes=3 but the dataset has only 2 classes"),
    (dict(workers="two"), "workers must be a positive integer"),
])
def test_bad_parameters_are_named(tmp_path, params, message):
    raw = _fetched_tree(tmp_path, {"alpha": 2, "beta": 2})
    with pytest.raises(DataError, match=message):
        preprocess_dataset(raw, tmp_path / "processed", **params, **QUIET)


def test_a_directory_that_was_not_fetched_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a fetched dataset.*run the fetch stage"):
        preprocess_dataset(tmp_path, tmp_path / "processed", **QUIET)
