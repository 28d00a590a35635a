"""Class-folder datasets as users have them: links, damaged archives, odd folder names, Unicode
forms, odd pixel formats. Each case comes from a sweep of unusual inputs through fetch and
preprocess (2026-11-27) where the old code raised a traceback or silently did something else.
"""
from __future__ import annotations

import os
import tarfile
import unicodedata
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lightcnn.data import DataError, fetch_dataset, preprocess_dataset
from lightcnn.data.pipeline import read_examples
from lightcnn.data.preprocess import choose_native_size
from tests.data_helpers import build_class_tree, write_image

QUIET = dict(progress=False)
SIZE = 16


def _records(processed) -> dict:
    return {path: (image, label) for split in ("train", "val", "test")
            for image, label, path in read_examples(processed, split)}


def _tar_gz(tree, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="dataset")
    return archive


def _zip(tree, archive):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, "dataset/" + path.relative_to(tree).as_posix())
    return archive


def _run(tmp_path, source, **preprocess_args) -> dict:
    fetch_dataset("folder", tmp_path / "raw", source=source, **QUIET)
    return preprocess_dataset(tmp_path / "raw", tmp_path / "processed", **preprocess_args, **QUIET)


# --------------------------------------------------------------------------- damaged archives


@pytest.mark.parametrize("make, message", [
    (_tar_gz, r"archive .*dataset\.tar\.gz is damaged: reading it failed with EOFError.* truncated"),
    (_zip, r"starts like a zip archive but its directory .* is missing or damaged"),
])
def test_a_truncated_archive_is_a_clear_error(tmp_path, make, message):
    build_class_tree(tmp_path / "tree", {"cat": 30, "dog": 30}, size=32)
    archive = make(tmp_path / "tree", tmp_path / f"dataset.{'tar.gz' if make is _tar_gz else 'zip'}")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # an interrupted download
    with pytest.raises(DataError, match=message):
        fetch_dataset("folder", tmp_path / "raw", source=archive, **QUIET)
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- links


def test_a_source_folder_of_links_is_followed_and_links_that_lead_nowhere_are_listed(tmp_path):
    """A dataset assembled from symbolic links (to files, to a class folder elsewhere) is read
    through them; a dangling link and a link back to a folder above it are skipped and listed."""
    build_class_tree(tmp_path / "elsewhere", {"bird": 4}, size=SIZE)
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 4, "dog": 4}, size=SIZE)
    (tree / "train" / "bird").symlink_to(tmp_path / "elsewhere" / "train" / "bird")  # a linked class folder
    (tree / "test" / "bird").symlink_to(tmp_path / "elsewhere" / "test" / "bird")
    (tree / "train" / "cat" / "linked.png").symlink_to(tree / "train" / "dog" / "000.png")  # a linked file
    (tree / "train" / "cat" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tree / "train" / "dog" / "loop").symlink_to("..")
    manifest = _run(tmp_path, tree, seed=0)
    assert manifest["class_names"] == ["bird", "cat", "dog"]
    assert manifest["counts"]["train"]["cat"] + manifest["counts"]["val"]["cat"] == 5  # 4 + the linked file
    assert manifest["counts"]["train"]["bird"] + manifest["counts"]["val"]["bird"] == 4
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(reasons) == {"train/cat/dangling.png", "train/dog/loop/"}, reasons
    assert "does not exist" in reasons["train/cat/dangling.png"] and "loop" in reasons["train/dog/loop/"]
    assert str(tmp_path) not in str(manifest["skipped"])  # no machine-specific path (link targets are)
    assert {entry["class"] for entry in manifest["skipped"]} == {"cat", "dog"}
    records = _records(tmp_path / "processed")
    np.testing.assert_array_equal(records["train/cat/linked.png"][0], records["train/dog/000.png"][0])
    assert records["train/cat/linked.png"][1] != records["train/dog/000.png"][1]  # labelled by where it is


def test_links_in_a_tar_archive_are_read_as_the_files_they_stand_for(tmp_path):
    """tar stores a second hard link to a file as a link member; the archive must give the same
    dataset as the folder it was made from. A link to nothing is listed, not dropped silently."""
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 4, "dog": 4}, size=SIZE)
    os.link(tree / "train" / "cat" / "000.png", tree / "train" / "dog" / "hard.png")
    os.link(tree / "train" / "cat" / "001.png", tree / "train" / "dog" / "hard2.png")
    (tree / "train" / "dog" / "soft.png").symlink_to("../cat/002.png")
    folder_manifest = _run(tmp_path / "as-folder", tree, seed=3)
    archive = _tar_gz(tree, tmp_path / "dataset.tar.gz")
    with tarfile.open(tmp_path / "broken.tar", "w") as tar:
        tar.add(tree, arcname="dataset")
        broken = tarfile.TarInfo("dataset/train/dog/broken.png")
        broken.type, broken.linkname = tarfile.SYMTYPE, "../cat/missing.png"
        tar.addfile(broken)
    manifest = _run(tmp_path / "as-archive", archive, seed=3)
    assert manifest["counts"] == folder_manifest["counts"]
    assert manifest["counts"]["train"]["dog"] + manifest["counts"]["val"]["dog"] == 7
    folder_records = _records(tmp_path / "as-folder" / "processed")
    archive_records = _records(tmp_path / "as-archive" / "processed")
    assert folder_records.keys() == archive_records.keys()
    for path in ("train/dog/hard.png", "train/dog/hard2.png", "train/dog/soft.png"):
        np.testing.assert_array_equal(archive_records[path][0], folder_records[path][0])
    manifest = _run(tmp_path / "with-broken", tmp_path / "broken.tar", seed=3)
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert "not a file in it" in reasons["train/dog/broken.png"], reasons


# --------------------------------------------------------------------------- files that are no images


def test_a_file_that_is_no_image_never_takes_a_validation_place(tmp_path):
    """Validation images are drawn per class; a junk file drawn there used to leave a small class
    with no validation image (an error for some seeds, not others). Now it is left out first."""
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 2, "dog": 2}, size=SIZE)
    (tree / "train" / "cat" / "Thumbs.db").write_bytes(b"\x00" * 64)
    fetch_dataset("folder", tmp_path / "raw", source=tree, **QUIET)
    for seed in range(6):  # with the junk among cat's 3 files, about every third seed drew it
        manifest = preprocess_dataset(tmp_path / "raw", tmp_path / f"processed-{seed}", seed=seed, **QUIET)
        assert manifest["counts"]["val"] == {"cat": 1, "dog": 1}, (seed, manifest["counts"])
        assert [entry["path"] for entry in manifest["skipped"]] == ["train/cat/Thumbs.db"]


# --------------------------------------------------------------------------- folder names


def test_validation_folder_names_and_letter_case_and_folders_beside_the_splits(tmp_path):
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 3, "dog": 3}, size=SIZE)
    (tree / "train").rename(tree / "Train")
    (tree / "test").rename(tree / "TEST")
    for name in ("cat", "dog"):
        write_image(tree / "validation" / name / "v.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    write_image(tree / "extras" / "cat" / "x.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    manifest = _run(tmp_path, tree)
    assert manifest["validation"]["source"] == "the dataset's own validation/ folder"
    assert manifest["counts"] == {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1, "dog": 1},
                                  "test": {"cat": 2, "dog": 2}}
    (extra,) = manifest["skipped"]
    assert extra["path"] == "extras/" and "not read" in extra["reason"]


def test_class_names_are_compared_in_one_unicode_form(tmp_path):
    """macOS writes names decomposed (NFD); a dataset put together on two systems has both forms."""
    tree = tmp_path / "tree"
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    build_class_tree(tree, {composed: 3, "tea": 3}, size=SIZE)
    (tree / "test" / composed).rename(tree / "test" / decomposed)
    manifest = _run(tmp_path, tree)
    assert manifest["class_names"] == [composed, "tea"]
    assert manifest["counts"]["test"] == {composed: 2, "tea": 2}
    # both forms as two train folders: they would print alike as two classes
    build_class_tree(tree, {decomposed: 3}, size=SIZE)
    with pytest.raises(DataError, match=r"class folders whose names differ only in their Unicode form"):
        _run(tmp_path / "twins", tree)


def test_one_class_is_refused(tmp_path):
    build_class_tree(tmp_path / "tree", {"cat": 4}, size=SIZE)
    with pytest.raises(DataError, match=r"a classifier needs at least 2 classes; 1 class \(cat\)"):
        _run(tmp_path, tmp_path / "tree")
    assert not (tmp_path / "processed").exists()


def test_hidden_files_are_counted_not_used(tmp_path):
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 3, "dog": 3}, size=SIZE)
    (tree / "train" / "cat" / ".DS_Store").write_bytes(b"finder")
    (tree / "train" / "cat" / "._000.png").write_bytes(b"apple double")
    manifest = _run(tmp_path, tree)
    assert manifest["hidden_files_ignored"] == 2 and manifest["skipped"] == []


# --------------------------------------------------------------------------- sizes and pixels


def test_images_too_small_to_train_at_their_size_ask_for_image_size():
    with pytest.raises(DataError, match=r"too small to train at their own size \(all 30 images are 3x3\).*"
                                        r"Set data.image_size"):
        choose_native_size(Counter({(3, 3): 30}))
    with pytest.raises(DataError, match="the most common, 6x8"):  # mostly thumbnails
        choose_native_size(Counter({(6, 8): 12, (256, 256): 6}))
    assert choose_native_size(Counter({(16, 16): 3}))[0] == (16, 16)


def test_sixteen_bit_images_are_scaled_by_one_rule_and_float_images_skipped(tmp_path):
    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 4, "dog": 4}, size=SIZE)
    cat = tree / "train" / "cat"
    for name, value in (("dark.png", 250), ("darker.png", 300), ("white.png", 65535)):
        write_image(cat / name, np.full((SIZE, SIZE), value, np.uint16))  # 16-bit gray
    Image.fromarray(np.full((SIZE, SIZE), 0.8, np.float32), "F").save(cat / "float.tif")
    manifest = _run(tmp_path, tree, image_size=SIZE)
    records = _records(tmp_path / "processed")
    grays = {name: int(records[f"train/cat/{name}"][0].mean()) for name in ("dark.png", "darker.png", "white.png")
             if f"train/cat/{name}" in records}
    assert grays == {"dark.png": 1, "darker.png": 1, "white.png": 255}  # value / 257: same rule for each
    (skipped,) = manifest["skipped"]
    assert skipped["path"] == "train/cat/float.tif" and "floating-point pixels" in skipped["reason"]


def test_exif_rotation_is_applied_to_pixels_and_to_the_size(tmp_path):
    """A phone photo stored sideways: 64 wide and 32 high in the file, EXIF orientation 6 (turn a
    quarter clockwise to view). Red on the stored left, blue on the stored right."""
    tree = tmp_path / "tree"
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    for split, per_class in (("train", 3), ("test", 1)):
        for name in ("a", "b"):
            for i in range(per_class):
                path = tree / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, quality=95, exif=exif)
    manifest = _run(tmp_path, tree)
    assert manifest["image_size"] == [64, 32]  # height, width as displayed
    image, _ = _records(tmp_path / "processed")["test/a/0.jpg"]
    assert image.shape == (64, 32, 3)
    top, bottom = image[:24].reshape(-1, 3).mean(axis=0), image[40:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50  # the stored left is now on top



def test_the_in_memory_loader_reads_an_odd_archive_as_preprocess_does(tmp_path):
    """lightcnn.data.arrays (the input path without TensorFlow) shares preprocess's listing and
    header check: on an archive with a junk file, links, capitalised split folders and a
    validation/ folder, both give the same images in the same splits with the same labels."""
    from lightcnn.data.arrays import load_image_arrays

    tree = tmp_path / "tree"
    build_class_tree(tree, {"cat": 5, "dog": 5}, size=SIZE)
    (tree / "train" / "cat" / "empty.jpg").write_bytes(b"")
    os.link(tree / "train" / "cat" / "000.png", tree / "train" / "dog" / "hard.png")
    (tree / "train").rename(tree / "Train")
    for name in ("cat", "dog"):
        write_image(tree / "validation" / name / "v.png", np.full((SIZE, SIZE, 3), 7, np.uint8))
    archive = _tar_gz(tree, tmp_path / "dataset.tar.gz")
    _run(tmp_path, archive, image_size=SIZE, seed=4)
    arrays = load_image_arrays(archive, image_size=SIZE, seed=4)
    for split in ("train", "val", "test"):
        from_shards = sorted((image.tobytes(), int(label)) for image, label, _ in
                             read_examples(tmp_path / "processed", split))
        in_memory = sorted((image.tobytes(), int(label)) for image, label in
                           zip(arrays[split].images, arrays[split].labels))
        assert from_shards == in_memory, split
    assert len(arrays["train"]) == 11 and len(arrays["val"]) == 2  # 5 + 5 + the link; the junk left out
