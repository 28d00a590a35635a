"""Raw directory (from `fetch`) -> sharded TFRecords and manifest.json.

Each record holds `image` (PNG bytes, RGB, at the image size), `label` (int64 class index)
and `path` (bytes: where the image came from, e.g. "train/cat/0001.jpg" relative to the
dataset root, or "cifar-10-batches-py/data_batch_1/17" for a CIFAR pickle). Train records
are in a seeded random order, so that a small shuffle buffer already mixes the classes;
val and test records are in class order, then file order.

The same raw data and parameters always give byte-identical shards and manifest: the
order is fixed before any decoding, workers only turn images into PNG bytes (returned in
order), and nothing time- or machine-dependent is written.

Image size: `image_size` when given; else CIFAR's native 32x32, the bird study's 224x224,
and for a "folder" dataset the size its images already have (read from the image headers,
see `choose_native_size`). The manifest says which and why (`image_size_reason`).
"""
from __future__ import annotations

import errno
import io
import itertools
import json
import math
import multiprocessing
import os
import pickle
import sys
import types
import unicodedata
import warnings
import zipfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from lightcnn.data.download import (
    ArchiveReader,
    DataError,
    file_digest,
    iter_archive_files,
    staged_dir,
)
from lightcnn.data.fetch import ClassFolderListing, class_folder_listing, list_class_names, read_fetch_info

MANIFEST = "manifest.json"
MANIFEST_KEYS = ("class_names", "num_classes", "image_size", "counts", "splits", "sha256", "skipped")
SPLITS = ("train", "val", "test")
DEFAULT_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "birds": 224, "folder": 224}
DEFAULT_SIZE_REASON = {"cifar10": "CIFAR native 32x32", "cifar100": "CIFAR native 32x32",
                       "birds": "the bird study's 224x224"}
MAX_NATIVE_SIDE = 512  # a folder dataset of larger images (photos) is resized to the default instead
# Smaller than this on a side, a folder dataset is not trained at its own size unless data.image_size
# says so: the networks halve the image five times (32x32 ends as 1x1), so 3x3 would be noise.
MIN_NATIVE_SIDE = 16

PNG_COMPRESS_LEVEL = 1  # 2-3x faster than the default 6 on 224x224 photos, for 1-3% larger files
SHARD_PIXEL_BYTES = 64 << 20  # default shard size in decoded pixels: ~21,800 CIFAR images, ~445 at 224x224
PARALLEL_MIN_IMAGES = 2000  # below this, starting worker processes costs more than it saves
ENCODE_WINDOW = 8192  # images sent to the workers at a time (two windows in flight)


def load_manifest(processed_dir: str | os.PathLike) -> dict:
    """The manifest.json that preprocess wrote in `processed_dir`."""
    path = Path(processed_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found: run the preprocess stage first (dvc repro preprocess)")
    manifest = json.loads(path.read_text())
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: it was not written by this version of preprocess; "
                        "run the preprocess stage again")
    return manifest


@dataclass
class _Image:
    path: str  # in the dataset ("train/cat/1.jpg"), or a CIFAR pickle row; stored in the record
    label: int
    pixels: np.ndarray | None = None  # CIFAR arrays; files are read when encoded
    read_from: str | None = None  # for a link in an archive: the file it stands for

    @property
    def file(self) -> str:
        """The dataset file holding this image's bytes."""
        return self.read_from or self.path


def preprocess_dataset(
    raw_dir: str | os.PathLike,
    processed_dir: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    val_fraction: float = 0.2,
    max_per_class: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    examples_per_shard: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write train/val/test TFRecord shards and manifest.json to `processed_dir`; return the manifest.

    image_size: int or (height, width). Default: 32 for CIFAR, 224 for birds, and for a
        "folder" dataset the size of its images (the most common one if they differ; see
        `choose_native_size`). Images are resized (bilinear, aspect ratio not kept) and
        converted to RGB. The manifest's `image_size_reason` says where the size came from.
    val_fraction: share of each class's train images held out for validation (stratified,
        seeded). Ignored when the dataset has its own valid/ folder (the manifest says so).
    max_per_class: keep at most this many images per class in each source split (the first
        ones in sorted file order), before validation is split off. None keeps all.
    num_classes: keep only the first N classes in class order (e.g. Bird-100 from Bird-325).
    workers: processes that decode and encode images (default: all cores for large
        datasets, 1 for small ones). The output does not depend on it. They are spawned
        and do not run the caller's main module.
    """
    raw_dir, processed_dir = Path(raw_dir), Path(processed_dir)
    info = read_fetch_info(raw_dir)
    if image_size is not None:
        height, width = _image_size(image_size)
        size_reason = f"data.image_size={image_size if isinstance(image_size, int) else [height, width]}"
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")
    for name, value in (("max_per_class", max_per_class), ("num_classes", num_classes),
                        ("examples_per_shard", examples_per_shard), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{name} must be a positive integer or None, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an integer, got {seed!r}")

    extra: dict = {}
    if info["format"] == "cifar-python":
        class_names, by_split, extra = _read_cifar(raw_dir, info)
        ignored: list[dict] = []
    else:
        class_names, by_split, ignored, extra = _list_class_folders(raw_dir, info)
    if num_classes is not None and num_classes < 2 or len(class_names) < 2:
        found = f"{len(class_names)} class ({', '.join(class_names)})" if len(class_names) < 2 else \
            f"num_classes={num_classes}"
        raise DataError(f"a classifier needs at least 2 classes; {found}: it would score 100% by predicting "
                        "the one class. Add class folders (train/<class>/) or raise data.num_classes")

    if num_classes is not None:
        if num_classes > len(class_names):
            raise DataError(f"num_classes={num_classes} but the dataset has only {len(class_names)} classes")
        class_names = class_names[:num_classes]
        by_split = {split: per_class[:num_classes] for split, per_class in by_split.items()}
        if "coarse_label_of_class" in extra:
            extra["coarse_label_of_class"] = extra["coarse_label_of_class"][:num_classes]
    _check_no_empty_class({split: {name: len(images) for name, images in zip(class_names, per_class)}
                           for split, per_class in by_split.items()})
    if max_per_class is not None:
        by_split = {split: [images[:max_per_class] for images in per_class] for split, per_class in by_split.items()}
    if info["format"] != "cifar-python":
        by_split, sizes, unusable = drop_unreadable(raw_dir, info, by_split, class_names, ignored)
    if image_size is None:
        if info["dataset"] == "folder":
            (height, width), size_reason = choose_native_size(sizes, len(unusable))
        else:
            height, width = _image_size(DEFAULT_IMAGE_SIZE[info["dataset"]])
            size_reason = DEFAULT_SIZE_REASON[info["dataset"]]

    rng = np.random.default_rng(seed)
    if "val" in by_split:
        validation = {"source": f"the dataset's own {info['split_folders']['val']}/ folder",
                      "val_fraction": None, "note": "val_fraction is ignored: the dataset has a validation split"}
    else:
        by_split["train"], by_split["val"] = _split_train_val(by_split["train"], val_fraction, rng, class_names)
        validation = {"source": "split from train (stratified, seeded)", "val_fraction": val_fraction}
    train = [image for images in by_split["train"] for image in images]
    splits = {
        "train": [train[i] for i in rng.permutation(len(train))],
        "val": [image for images in by_split["val"] for image in images],
        "test": [image for images in by_split["test"] for image in images],
    }

    per_shard = examples_per_shard or max(1, SHARD_PIXEL_BYTES // (height * width * 3))
    with _disk_full_as_data_error(processed_dir), staged_dir(processed_dir) as tmp:
        written = _write_shards(raw_dir, info, splits, (height, width), class_names, per_shard, tmp, workers,
                                progress)
        counts = {split: dict(zip(class_names, written[split]["label_counts"])) for split in SPLITS}
        skipped = ignored + [entry for split in SPLITS for entry in written[split]["skipped"]]
        _check_no_empty_class(counts, skipped)
        shard_names = [name for split in SPLITS for name in written[split]["shards"]]
        manifest = {
            "format_version": 1,
            "dataset": info["dataset"],
            "class_names": class_names,
            "num_classes": len(class_names),
            **extra,
            "image_size": [height, width],
            "image_size_reason": size_reason,
            "record_features": {"image": "PNG bytes, RGB", "label": "int64 class index",
                                "path": "bytes, source path in the dataset"},
            "splits": {split: {"shards": written[split]["shards"], "num_examples": sum(counts[split].values())}
                       for split in SPLITS},
            "counts": counts,
            "sha256": {name: file_digest(tmp / name, "sha256") for name in shard_names},
            "skipped": skipped,
            "validation": validation,
            "params": {"image_size": [height, width], "val_fraction": val_fraction, "max_per_class": max_per_class,
                       "num_classes": num_classes, "seed": seed, "examples_per_shard": per_shard},
            "source": _source_of(info),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in size):
        raise DataError(f"image_size must be an integer or [height, width] between 1 and 4096, got {image_size!r}")
    return size[0], size[1]


def _source_of(info: dict) -> dict:
    """The manifest's `source`: the fetch info's source record (see fetch.source_record), or
    for a raw directory fetched before that record existed, its old fields."""
    if isinstance(info.get("source"), dict):
        return dict(info["source"])
    return {key: info[key] for key in ("source", "url", "md5", "kaggle") if key in info}


def choose_native_size(sizes: Counter, unreadable: int = 0) -> tuple[tuple[int, int], str]:
    """The (height, width) a folder dataset is trained at when image_size is not given, and why.

    sizes: {(height, width): number of images}, read from the image headers.
    - One size: that size, so a 28x28 dataset is not upscaled (and slowed down) to 224x224.
    - Mixed sizes: the most common size, so the fewest images are resized, and a few odd
      images (a stray photo, a thumbnail) cannot set the size for all of them; a tie goes
      to the larger area (less detail lost), then the taller, then the wider size.
    - Larger than MAX_NATIVE_SIDE (512) on a side, or no readable header: the default
      224x224, since full-size photos would not fit a training batch in memory.
    - Smaller than MIN_NATIVE_SIDE (16) on a side: DataError asking for data.image_size.
    """
    default = DEFAULT_IMAGE_SIZE["folder"]
    total = sum(sizes.values())
    if not total:
        return (default, default), f"no image header could be read: the default {default}x{default}"
    (height, width), n = max(sizes.items(), key=lambda item: (item[1], item[0][0] * item[0][1], item[0]))
    if len(sizes) == 1:
        reason = f"all {total:,} images are {height}x{width}"
    else:
        reason = (f"mixed sizes ({len(sizes)} different): the most common, {height}x{width}, has {n:,} of "
                  f"{total:,} images; the others are resized to it")
    if unreadable:
        reason += f" ({unreadable:,} file{'' if unreadable == 1 else 's'} without a readable image header not counted)"
    if max(height, width) > MAX_NATIVE_SIDE:
        return (default, default), (f"{reason}, larger than {MAX_NATIVE_SIDE} px on a side: resized to the "
                                    f"default {default}x{default} (set data.image_size to choose)")
    if min(height, width) < MIN_NATIVE_SIDE:
        raise DataError(f"the images are too small to train at their own size ({reason}): under "
                        f"{MIN_NATIVE_SIDE} px on a side, and the networks halve the image five times. Set "
                        "data.image_size (e.g. 32) to upscale them, or add larger images")
    return (height, width), reason


def drop_unreadable(raw_dir: Path, info: dict, by_split: dict, class_names: list[str],
                    skipped: list[dict]) -> tuple[dict, Counter, dict[str, str]]:
    """Leave out the image files of a class-folder dataset that have no readable image header
    (not images, empty, cut short in the header) before validation images are drawn, so that
    they never take a class's place there; each is appended to `skipped` with its reason.
    Returns the kept images (same shape as `by_split`), the header sizes of the kept ones and
    {path: reason} of those left out. DataError if a class is left with none in a split."""
    sizes, unusable = _read_image_headers(raw_dir, info, by_split)
    skipped += [{"split": split, "class": class_names[image.label], "path": image.path, "reason": unusable[image.path]}
                for split, per_class in by_split.items() for images in per_class for image in images
                if image.path in unusable]
    kept = {split: [[image for image in images if image.path not in unusable] for images in per_class]
            for split, per_class in by_split.items()}
    _check_no_empty_class({split: {name: len(images) for name, images in zip(class_names, per_class)}
                           for split, per_class in kept.items()}, skipped)
    return kept, sizes, unusable


def _read_image_headers(raw_dir: Path, info: dict, by_split: dict) -> tuple[Counter, dict[str, str]]:
    """Open every image file of `by_split` ({split: [[_Image] per class]}) by its header alone
    (no pixels decoded): {(height, width) as displayed (EXIF rotation applied): count} over the
    readable ones, and {path: why} for those that cannot be images (the reasons encode_image gives)."""
    by_file: dict[str, list[str]] = {}
    for per_class in by_split.values():
        for images in per_class:
            for image in images:
                by_file.setdefault(image.file, []).append(image.path)
    sizes: Counter = Counter()
    unusable: dict[str, str] = {}

    def measure(file: str, stream) -> None:
        try:
            with Image.open(stream) as image:  # reads the header only
                width, height = image.size
                # EXIF sits in the header of a JPEG, TIFF or WebP; a PNG's getexif() decodes the whole file
                if image.format != "PNG" and image.getexif().get(ORIENTATION_TAG) in ROTATED_ORIENTATIONS:
                    width, height = height, width
            for _ in by_file[file]:
                sizes[height, width] += 1
        except Exception as e:  # noqa: BLE001 - any failure means "not usable", with its reason
            for path in by_file[file]:
                unusable[path] = unreadable_reason(e)

    if info["format"] == "class-folder-archive":
        root = info["root"]
        wanted = {root + file: file for file in by_file}
        for name, stream in iter_archive_files(raw_dir / info["archive"], wanted):
            measure(wanted[name], stream)
    else:
        for file in sorted(by_file):
            measure(file, raw_dir / file)
    return sizes, unusable


ORIENTATION_TAG = 0x0112  # EXIF orientation; 5-8 turn the image a quarter: width and height swap
ROTATED_ORIENTATIONS = (5, 6, 7, 8)


def unreadable_reason(error: Exception) -> str:
    """Why an image file was skipped, from what opening or decoding it raised."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image (Pillow cannot identify the file format)"
    if isinstance(error, UnsupportedPixels):
        return str(error)
    if "truncated" in str(error).lower():
        return f"truncated image ({error})"
    return f"cannot decode the image ({type(error).__name__}: {error})"


class UnsupportedPixels(ValueError):
    """An image whose pixel values have no standard range (floating point)."""


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
DISK_FULL_TEXTS = ("no space left on device", "file too large", "disk quota exceeded")


def _is_disk_full(error: BaseException | None) -> bool:
    """Whether an error (or one it came from) is a full disk, quota or file size limit.
    TensorFlow's file writers raise their own errors, naming the errno only in the text."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(error).lower() for text in DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def _disk_full_as_data_error(processed_dir: Path) -> Iterator[None]:
    try:
        yield
    except DataError:
        raise
    except Exception as e:
        if not _is_disk_full(e):
            raise
        raise DataError(
            f"ran out of disk space while writing {processed_dir} ({type(e).__name__}: {str(e).strip()[:200]}). "
            "The disk is full, or a quota or file size limit was hit. Nothing half-written was kept (an earlier "
            "output is unchanged). Free space on that disk, or make the output smaller (data.max_per_class, "
            "data.image_size), and run the preprocess stage again.") from e


def _check_no_empty_class(counts: dict[str, dict[str, int]], skipped: list[dict] = ()) -> None:
    """DataError naming the first class with no images in some split; counts: {split: {class: n}}."""
    for split, per_class in counts.items():
        for name, n in per_class.items():
            if n == 0:
                reasons = [f"{entry['path']}: {entry['reason']}" for entry in skipped
                           if entry["class"] == name and entry["split"] == split]
                detail = f" once its unusable files were skipped ({'; '.join(reasons[:3])})" if reasons else ""
                raise DataError(f"class {name!r} has no images in the {split} split{detail}. Every class needs "
                                "images in train and test (and in valid, when the dataset has one).")


def _split_train_val(per_class: list[list[_Image]], val_fraction: float, rng: np.random.Generator,
                     class_names: list[str]) -> tuple[list[list[_Image]], list[list[_Image]]]:
    """Hold out round(n * val_fraction) images of each class (at least 1, at most n - 1)."""
    train, val = [], []
    for name, images in zip(class_names, per_class):
        if len(images) < 2:
            raise DataError(f"class {name!r} has {len(images)} training image: too few to split off validation "
                            "images; add images or give the dataset a valid/ folder")
        n_val = min(max(round(len(images) * val_fraction), 1), len(images) - 1)
        held_out = set(rng.permutation(len(images))[:n_val].tolist())
        val.append([image for i, image in enumerate(images) if i in held_out])
        train.append([image for i, image in enumerate(images) if i not in held_out])
    return train, val


# --------------------------------------------------------------------------- reading raw data


def _list_class_folders(raw_dir: Path, info: dict) -> tuple[list[str], dict, list[dict], dict]:
    return list_class_folder_images(class_folder_listing(raw_dir, info), info, str(raw_dir))


def list_class_folder_images(listing: ClassFolderListing, info: dict,
                             where: str) -> tuple[list[str], dict, list[dict], dict]:
    """Class names (train/ folder names, sorted, in Unicode NFC), the image files of each split
    and class (sorted by path), what is left out and why (files in no class folder, links that
    stand for no file, what fetch could not follow, folders that are no split), and manifest
    extras, of a class-folder dataset's `listing` (info: its fetch info; `where` names it)."""
    folders = info["split_folders"]
    folder_names = list_class_names(listing.entries, folders)
    if not folder_names:
        raise DataError(f"the {folders['train']}/ folder in {where} has no class folders: "
                        "expected train/<class>/<image files>")
    # Class names are compared in NFC: macOS writes "café" decomposed (NFD), most tools composed,
    # and a dataset put together on both would otherwise have two classes that print alike.
    composed = {name: unicodedata.normalize("NFC", name) for name in folder_names}
    names = sorted(set(composed.values()))
    if len(names) < len(folder_names):
        twins = sorted(name for name in folder_names if list(composed.values()).count(composed[name]) > 1)
        raise DataError(f"the {folders['train']}/ folder has class folders whose names differ only in their Unicode "
                        f"form ({', '.join(map(ascii, twins))}): they print alike; merge or rename them")
    label_of = {name: label for label, name in enumerate(names)}
    split_of = {folder: split for split, folder in folders.items()}
    by_split = {split: [[] for _ in names] for split in folders}
    ignored = [{"split": None, "class": None, "path": folder, "reason": "a folder beside the split folders (train/, "
                "test/, valid/, val/ or validation/): not read"} for folder in info.get("ignored_folders", [])]
    for entry in info.get("skipped", []):  # what fetch could not follow
        parts = entry["path"].rstrip("/").split("/")
        class_name = unicodedata.normalize("NFC", parts[1]) if len(parts) > 2 else None
        ignored.append({"split": split_of.get(parts[0]), "class": class_name if class_name in label_of else None,
                        **entry})
    for entry in listing.entries:
        folder, _, inside = entry.partition("/")
        if not inside:
            continue  # the split folder itself
        if "/" not in inside:
            ignored.append({"split": split_of[folder], "class": None, "path": entry,
                            "reason": "not inside a class folder"})
            continue
        folder_name, _, file_name = inside.partition("/")
        class_name = unicodedata.normalize("NFC", folder_name)
        if class_name not in label_of:
            raise DataError(f"class folder {folder}/{folder_name} has no counterpart in {folders['train']}/: "
                            "every class in test/ and valid/ must also be in train/ (check its spelling; class "
                            f"names are compared exactly, letter case included; {folders['train']}/ has "
                            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
        if not file_name or entry.endswith("/"):
            continue
        if entry in listing.broken_links:
            ignored.append({"split": split_of[folder], "class": class_name, "path": entry,
                            "reason": listing.broken_links[entry]})
            continue
        # a file in the class folder or in a folder below it: that class
        by_split[split_of[folder]][label_of[class_name]].append(
            _Image(entry, label_of[class_name], read_from=listing.links.get(entry)))
    # only when there are any: a dataset without them gives the same manifest as before
    return names, by_split, ignored, {"hidden_files_ignored": listing.hidden_files} if listing.hidden_files else {}


@contextmanager
def _image_file_reader(raw_dir: Path, info: dict, paths: list[str]) -> Iterator[Callable[[str], bytes]]:
    """A function that returns the bytes of an image file, given its path in the dataset; `paths`
    lists each file as many times as it will be read."""
    def failed(path: str, error: Exception) -> DataError:
        return DataError(f"cannot read {path} from {raw_dir} ({type(error).__name__}: {error}); the raw data is "
                         "damaged: run the fetch stage again")

    if info["format"] == "class-folder-archive":
        root = info["root"]
        archive = ArchiveReader(raw_dir / info["archive"], [root + path for path in paths])

        def read(path: str) -> bytes:
            try:
                return archive.read(root + path)
            except (OSError, KeyError, zipfile.BadZipFile) as e:
                raise failed(path, e) from e
        try:
            yield read
        finally:
            archive.close()
    else:
        def read(path: str) -> bytes:
            try:
                return (raw_dir / path).read_bytes()
            except OSError as e:
                raise failed(path, e) from e
        yield read


class _CifarUnpickler(pickle.Unpickler):
    """Loads only what CIFAR pickles hold (dicts, lists, bytes, numpy arrays): never code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"a CIFAR pickle asks for {module}.{name}, which CIFAR data never needs; "
                            "refusing to load it")
        return super().find_class(module, name)


def cifar_batch_images(batch: dict, label_key: bytes, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One unpickled CIFAR python batch as (uint8 images (N, 32, 32, 3), int64 labels), checked:
    a DataError naming `where` for anything not in the CIFAR format."""
    try:
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as e:
        raise DataError(f"{where} is not in the CIFAR python format (no {e.args[0]!r})") from None
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),)
            or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes):
        raise DataError(f"{where} is not in the CIFAR python format (data {data.dtype} "
                        f"{data.shape}, {labels.shape[0]} labels)")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels  # planes -> HWC


def _read_cifar(raw_dir: Path, info: dict) -> tuple[list[str], dict, dict]:
    """Class names, per-split per-class images and manifest extras of an official CIFAR folder."""
    folder = raw_dir / info["folder"]

    def load(name: str) -> dict:
        path = folder / name
        expected = info["pickle_sha256"].get(name)
        # fetch checked the archive's MD5; check again so a changed raw directory never runs code
        if expected is None or not path.is_file() or file_digest(path, "sha256") != expected:
            raise DataError(f"{path} is missing or differs from what fetch verified; run the fetch stage again")
        with open(path, "rb") as f:
            data = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(data, dict):
            raise DataError(f"{path} is not in the CIFAR python format (no dict inside)")
        return data

    if info["dataset"] == "cifar10":
        class_names = [n.decode() for n in load("batches.meta")[b"label_names"]]
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        label_key, coarse_names = b"labels", None
    else:
        meta = load("meta")
        class_names = [n.decode() for n in meta[b"fine_label_names"]]
        coarse_names = [n.decode() for n in meta[b"coarse_label_names"]]
        files = {"train": ["train"], "test": ["test"]}
        label_key = b"fine_labels"

    coarse_of_class = [-1] * len(class_names)
    by_split = {}
    for split, names in files.items():
        per_class: list[list[_Image]] = [[] for _ in class_names]
        for name in names:
            batch = load(name)
            images, labels = cifar_batch_images(batch, label_key, len(class_names), str(folder / name))
            if coarse_names is not None and b"coarse_labels" not in batch:
                raise DataError(f"{folder / name} is not in the CIFAR python format (no {b'coarse_labels'!r})")
            coarse_labels = batch[b"coarse_labels"] if coarse_names is not None else []
            for i, (pixels, label) in enumerate(zip(images, labels.tolist())):
                per_class[label].append(_Image(f"{info['folder']}/{name}/{i}", label, pixels))
            if coarse_names is not None:
                for fine, coarse in zip(labels.tolist(), coarse_labels):
                    coarse_of_class[fine] = coarse
        by_split[split] = per_class
    extra = {}
    if coarse_names is not None:
        extra = {"coarse_class_names": coarse_names, "coarse_label_of_class": coarse_of_class}
    return class_names, by_split, extra


# --------------------------------------------------------------------------- encoding and writing


def encode_image(task: tuple[bytes | np.ndarray, tuple[int, int]]) -> tuple[bytes | None, str | None]:
    """(image file bytes or HxWx3 uint8 array, (height, width)) -> (PNG bytes, None) or (None, why skipped).

    Runs in worker processes; never raises for a bad image.
    """
    source, (height, width) = task
    try:
        if isinstance(source, np.ndarray):
            image = Image.fromarray(source)  # HxWx3 uint8 -> RGB
        else:
            with Image.open(io.BytesIO(source)) as opened:
                opened.load()  # decode fully now, so truncated files fail here
                # as a viewer shows it: a phone photo stored sideways carries its rotation in EXIF
                image = to_rgb(ImageOps.exif_transpose(opened))
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue(), None
    except Exception as e:  # a bad file must never stop the run
        return None, unreadable_reason(e)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB (grayscale, alpha, palette, CMYK, 16-bit).

    16-bit images ("I;16*", and "I", which older Pillow gives 16-bit PNGs) are scaled from
    0..65535 to 0..255 by one rule for every image, so the same value is the same gray in
    every file. Floating-point images ("F") have no standard range: UnsupportedPixels."""
    if image.mode == "F":
        raise UnsupportedPixels("floating-point pixels (a 32-bit float image) have no standard value range; "
                                "convert the file to 8 or 16 bits per channel")
    if image.mode == "I" or image.mode.startswith("I;16"):
        # convert("L") would clip every value above 255 to white
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # 2-D uint8 -> "L"
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # what Pillow recommends (and warns about otherwise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return image.convert("RGB")


def _write_shards(raw_dir: Path, info: dict, splits: dict[str, list[_Image]], size: tuple[int, int],
                  class_names: list[str], per_shard: int, out: Path, workers: int | None, progress: bool) -> dict:
    """Encode every image (in parallel, results in order) and write each split's shards to `out`."""
    total = sum(len(images) for images in splits.values())
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if total >= PARALLEL_MIN_IMAGES else 1
    files = [image.file for images in splits.values() for image in images if image.pixels is None]
    with _image_file_reader(raw_dir, info, files) as read:
        tasks = ((image.pixels if image.pixels is not None else read(image.file), size)
                 for split in SPLITS for image in splits[split])
        with closing(_encode_in_order(tasks, workers)) as results:
            # Start the workers before loading TensorFlow (seconds), which they do not need.
            results = itertools.chain([next(results)], results)
            return _write_records(results, splits, class_names, per_shard, out, total, progress)


def _write_records(results: Iterator[tuple[bytes | None, str | None]], splits: dict[str, list[_Image]],
                   class_names: list[str], per_shard: int, out: Path, total: int, progress: bool) -> dict:
    import tensorflow as tf  # here, not at the top: worker processes import this module and need no TensorFlow

    def serialize(png: bytes, label: int, path: str) -> bytes:
        feature = {
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        return example.SerializeToString(deterministic=True)

    written = {}
    with tqdm(total=total, desc="preprocess", unit="img", disable=not progress, mininterval=1.0) as bar:
        for split in SPLITS:
            images = splits[split]
            n_shards = max(1, math.ceil(len(images) / per_shard))
            shards = [f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
            label_counts = [0] * len(class_names)
            skipped = []
            for shard_index, shard in enumerate(shards):
                with tf.io.TFRecordWriter(str(out / shard)) as writer:
                    for image in images[shard_index * per_shard:(shard_index + 1) * per_shard]:
                        png, reason = next(results)
                        bar.update()
                        if png is None:
                            skipped.append({"split": split, "class": class_names[image.label],
                                            "path": image.path, "reason": reason})
                            continue
                        writer.write(serialize(png, image.label, image.path))
                        label_counts[image.label] += 1
            written[split] = {"shards": shards, "label_counts": label_counts, "skipped": skipped}
    return written


def _encode_in_order(tasks: Iterator[tuple], workers: int) -> Iterator[tuple[bytes | None, str | None]]:
    """encode_image over `tasks`, results in task order, with `workers` processes.

    Tasks are sent in windows, two in flight, so memory never holds the whole dataset.
    """
    if workers == 1:
        yield from map(encode_image, tasks)
        return
    # spawn, not fork: the parent may already run TensorFlow threads
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        in_flight = None
        while window := list(itertools.islice(tasks, ENCODE_WINDOW)):
            with _main_module_hidden():  # the workers start during the first submissions
                submitted = pool.map(encode_image, window, chunksize=64)
            if in_flight is not None:
                yield from in_flight
            in_flight = submitted
        if in_flight is not None:
            yield from in_flight
    except BrokenProcessPool:
        raise DataError("a preprocess worker process died (out of memory?); try fewer workers") from None
    finally:
        pool.shutdown(cancel_futures=True)


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawned processes start by running the parent's main module again (so that functions
    defined there can be unpickled). The workers only need encode_image, from this module,
    while a stage script's imports (Keras, MLflow) would cost each worker seconds and memory,
    and a script without an `if __name__ == "__main__":` guard would run again in each one.
    With __main__ hidden while they start, they skip it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
