"""Datasets that fit in memory (CIFAR), as uint8 arrays, and their batches on the accelerator.

No TensorFlow: this is the input path of a machine that has Keras on JAX alone (a GPU box),
and of any run whose data fit in memory. Two steps:

1. `load_image_arrays(source)` reads a CIFAR archive straight into uint8 arrays, split into
   train / val / test exactly as `preprocess` splits it (the same stratified, seeded
   hold-out of validation images, after the same listing and header check: preprocess's own
   functions do it). `source` is the class-folder
   archive (.tar.gz / .tar / .zip with train/<class>/*, test/<class>/*, optional
   valid/<class>/*, e.g. ../shared/data/cifar10-jpeg.tar.gz) or the official CIFAR-10 /
   CIFAR-100 python archive (cifar-10-python.tar.gz, cifar-100-python.tar.gz).

2. `training_batches(...)` / `evaluation_batches(...)` (keras.utils.PyDataset objects) serve
   batches of (float32 images in [0, 1], one-hot float32 labels). Only the uint8 pixels of
   a batch cross to the device; the conversion and the augmentation (the input pipeline's:
   a random shift of up to shift_fraction of the height and width, edge pixels repeated,
   and a left-right flip) run there, compiled, in keras.ops. The random numbers (the
   epoch's shuffle and each image's shift and flip) are drawn on the host from
   numpy's Generator seeded with (seed, epoch): batch i of epoch e is the same in every run
   and every process, so a resumed run needs no replay of earlier epochs, and a
   multi-process run can give each process its rows of the same global batch.

Keras is imported only by the batch functions (after the caller has chosen the backend).
"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from lightcnn.data.download import DataError, check_md5, check_member_path, scan_archive
from lightcnn.data.fetch import CIFAR_ARCHIVES, class_folder_listing, find_split_folders
from lightcnn.data.preprocess import (DEFAULT_IMAGE_SIZE, _CifarUnpickler, _check_no_empty_class, _Image,
                                      _split_train_val, cifar_batch_images, drop_unreadable,
                                      list_class_folder_images, to_rgb)

CIFAR_PYTHON_FOLDERS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}


@dataclass(frozen=True)
class ImageArrays:
    """One split in memory: uint8 images (N, H, W, 3), int32 labels (N,), and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DataError(f"images must be uint8 (N, H, W, 3); got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"labels must be ({len(self.images)},); got {self.labels.shape}")
        if len(self.images) == 0:
            raise DataError("a split has no images")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(f"labels must be in [0, {len(self.class_names)}); got {self.labels.min()}..{self.labels.max()}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, per_class: int) -> ImageArrays:
        """The first `per_class` images of each class, in their order."""
        keep = np.concatenate([np.flatnonzero(self.labels == label)[:per_class] for label in range(self.num_classes)])
        keep.sort()
        return ImageArrays(self.images[keep], self.labels[keep], self.class_names)


def load_image_arrays(
    source: str | os.PathLike,
    *,
    val_fraction: float = 0.2,
    max_per_class: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    workers: int | None = None,
) -> dict[str, ImageArrays]:
    """{"train", "val", "test"} of a CIFAR archive, split as preprocess_dataset splits it.

    val_fraction, max_per_class (first N per class in file order, before the split) and seed
    mean what they mean to preprocess_dataset: with the same values the three splits hold
    the same images (train in another order: it is shuffled per epoch anyway). Images whose
    size differs from image_size (default: the first image's) are resized bilinearly.
    Unreadable images are skipped, as preprocess skips them. `workers`: decoding threads.
    """
    source = Path(source)
    if not source.is_file():
        raise DataError(f"{source} not found: give the CIFAR class-folder archive (e.g. ../shared/data/"
                        "cifar10-jpeg.tar.gz) or the official CIFAR python archive")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise DataError(f"max_per_class must be a positive integer or None, got {max_per_class!r}")

    with _ArchiveFiles(source) as files:
        python_folder = next((folder for folder in CIFAR_PYTHON_FOLDERS
                              if f"{folder}/batches.meta" in files.names or f"{folder}/meta" in files.names), None)
        if python_folder is not None:
            # A CIFAR python archive is pickles: none is loaded before the archive's MD5 matched.
            dataset = CIFAR_PYTHON_FOLDERS[python_folder]
            check_md5(source, CIFAR_ARCHIVES[dataset].md5, f"{source} (read as the official {dataset} archive)")
            class_names, by_split = _cifar_python(files, python_folder)
            size, info = image_size or DEFAULT_IMAGE_SIZE["cifar10"], None
        else:
            class_names, by_split, info = _class_folders(source)
            size = image_size
        if max_per_class is not None:
            by_split = {split: [items[:max_per_class] for items in per_class] for split, per_class in by_split.items()}
        if info is not None:  # files without a readable header left out before the draw, as preprocess does
            by_split = drop_unreadable(source.parent, info, by_split, class_names, [])[0]
        rng = np.random.default_rng(seed)  # the same draws, in the same order, as preprocess_dataset
        if "val" not in by_split:
            by_split["train"], by_split["val"] = _split_train_val(by_split["train"], val_fraction, rng, class_names)
        root = info["root"] if info else ""  # item paths are relative to the dataset folder in the archive
        return {split: _decode(files, [item for items in by_split[split] for item in items], class_names, size,
                               workers, root)
                for split in ("train", "val", "test")}


class _ArchiveFiles:
    """The members of a .tar(.gz) or .zip, read in place."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
                self._members = {check_member_path(info.filename, path): info for info in self._zip.infolist()
                                 if not info.is_dir()}
                self._tar = None
            else:
                self._tar = tarfile.open(path)
                self._members = {check_member_path(member.name, path): member for member in self._tar.getmembers()
                                 if member.isfile()}
                self._zip = None
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
            raise DataError(f"cannot read {path} as a .tar.gz, .tar or .zip archive ({error})") from error
        self.names = sorted(self._members)

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._members[name])
            return self._tar.extractfile(self._members[name]).read()
        except (OSError, KeyError, tarfile.TarError, zipfile.BadZipFile) as error:
            raise DataError(f"cannot read {name} from {self.path} ({error}); the archive is damaged") from error

    def __enter__(self) -> _ArchiveFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        (self._zip or self._tar).close()


def _class_folders(source: Path) -> tuple[list[str], dict[str, list[list[_Image]]], dict]:
    """A class-folder archive read as fetch and preprocess read it (the same folder names, links,
    hidden files and class names): class names, each split's images per class sorted by path,
    and the archive's fetch-style info."""
    index = scan_archive(source)
    root, split_folders = find_split_folders(index.entries, str(source))
    info = {"format": "class-folder-archive", "archive": source.name, "root": root, "split_folders": split_folders}
    class_names, by_split, _, _ = list_class_folder_images(class_folder_listing(source.parent, info, index), info,
                                                          str(source))
    _check_no_empty_class({split: {name: len(images) for name, images in zip(class_names, per_class)}
                           for split, per_class in by_split.items()})
    return class_names, by_split, info


def _cifar_python(files: _ArchiveFiles, folder: str) -> tuple[list[str], dict[str, list[list[_Image]]]]:
    """The official CIFAR python archive, read as preprocess reads its extracted folder."""
    def load(name: str) -> dict:
        data = _CifarUnpickler(io.BytesIO(files.read(f"{folder}/{name}")), encoding="bytes").load()
        if not isinstance(data, dict):
            raise DataError(f"{folder}/{name} in {files.path} is not in the CIFAR python format")
        return data

    if CIFAR_PYTHON_FOLDERS[folder] == "cifar10":
        class_names = [n.decode() for n in load("batches.meta")[b"label_names"]]
        batches = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        label_key = b"labels"
    else:
        class_names = [n.decode() for n in load("meta")[b"fine_label_names"]]
        batches = {"train": ["train"], "test": ["test"]}
        label_key = b"fine_labels"
    by_split = {}
    for split, names in batches.items():
        per_class: list[list[_Image]] = [[] for _ in class_names]
        for name in names:
            images, labels = cifar_batch_images(load(name), label_key, len(class_names), f"{folder}/{name}")
            for i, (pixels, label) in enumerate(zip(images, labels.tolist())):
                per_class[label].append(_Image(f"{folder}/{name}/{i}", label, pixels))
        by_split[split] = per_class
    return class_names, by_split


def _decode(files: _ArchiveFiles, items: list[_Image], class_names: Sequence[str], size: int | None,
            workers: int | None, root: str = "") -> ImageArrays:
    """Decode (in threads: Pillow's decoders release the GIL) and stack into uint8 arrays."""
    if items and items[0].pixels is not None:  # CIFAR python rows: already pixels
        decoded = [np.ascontiguousarray(item.pixels) for item in items]
    else:
        contents = [files.read(root + item.file) for item in items]  # archive reads are sequential
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(_decode_bytes, contents))
    keep = [i for i, pixels in enumerate(decoded) if pixels is not None]
    if not keep:
        raise DataError("no image of a split could be decoded")
    height, width = (size, size) if size else decoded[keep[0]].shape[:2]
    images = np.empty((len(keep), height, width, 3), np.uint8)
    for row, i in enumerate(keep):
        pixels = decoded[i]
        if pixels.shape[:2] != (height, width):
            pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
        images[row] = pixels
    labels = np.asarray([items[i].label for i in keep], np.int32)
    return ImageArrays(images, labels, tuple(class_names))


def _decode_bytes(content: bytes) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(content)) as opened:
            opened.load()
            return np.asarray(to_rgb(opened))
    except (UnidentifiedImageError, OSError, ValueError):
        return None  # skipped, as preprocess skips it


# ----------------------------------------------------------------------------- batches


def epoch_draws(num_images: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's image order (a permutation) and uniform draws (num_images, 3) for each
    position's vertical shift, horizontal shift and flip: a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(num_images), rng.random((num_images, 3), dtype=np.float32)


def shifts_and_flips(uniform: np.ndarray, image_shape: Sequence[int], shift_fraction: float,
                     flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, flips) from uniform draws, as the input pipeline turns them into shifts:
    round((2u - 1) * fraction * size) pixels either way, a flip where the third draw < 0.5."""
    height, width = image_shape[0], image_shape[1]
    dy = np.round((2.0 * uniform[:, 0] - 1.0) * shift_fraction * height).astype(np.int32)
    dx = np.round((2.0 * uniform[:, 1] - 1.0) * shift_fraction * width).astype(np.int32)
    flips = uniform[:, 2] < 0.5 if flip else np.zeros(len(uniform), bool)
    return dy, dx, flips


def shift_and_flip(images: Any, dy: Any, dx: Any, flips: Any) -> Any:
    """keras.ops: move image b down by dy[b] and right by dx[b] pixels, repeating edge pixels
    into the uncovered border (fill_mode "nearest"), then mirror it where flips[b].

    Output pixel (i, j) is input pixel (clip(i - dy), clip(j - dx)): one batched gather.
    """
    from keras import ops

    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    rows = ops.clip(ops.arange(height)[None, :] - dy[:, None], 0, height - 1)  # (B, H)
    cols = ops.clip(ops.arange(width)[None, :] - dx[:, None], 0, width - 1)  # (B, W)
    cols = ops.where(flips[:, None], ops.flip(cols, axis=1), cols)
    flat = rows[:, :, None] * width + cols[:, None, :]  # (B, H, W) indices into the H*W pixels
    pixels = ops.reshape(images, (-1, height * width, channels))
    gathered = ops.take_along_axis(pixels, ops.reshape(flat, (-1, height * width, 1)), axis=1)
    return ops.reshape(gathered, (-1, height, width, channels))


def _to_model_inputs(images: Any, labels: Any, num_classes: int) -> tuple[Any, Any]:
    from keras import ops

    return ops.cast(images, "float32") / 255.0, ops.one_hot(labels, num_classes, dtype="float32")


@lru_cache(maxsize=None)
def _compiled_batch_functions(backend: str, num_classes: int) -> tuple[Callable, Callable]:
    """(augment_batch, plain_batch), compiled for the backend: uint8 pixels in, model inputs out."""
    def augment_batch(images, labels, dy, dx, flips):
        return _to_model_inputs(shift_and_flip(images, dy, dx, flips), labels, num_classes)

    def plain_batch(images, labels):
        return _to_model_inputs(images, labels, num_classes)

    if backend == "jax":
        import jax

        return jax.jit(augment_batch), jax.jit(plain_batch)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(augment_batch, reduce_retracing=True), tf.function(plain_batch, reduce_retracing=True)
    return augment_batch, plain_batch


def training_batches(
    data: ImageArrays,
    batch_size: int,
    *,
    seed: int,
    augment: bool = True,
    shift_fraction: float = 0.2,
    flip: bool = True,
    epoch: int = 0,
    drop_remainder: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> Any:
    """A keras.utils.PyDataset of one epoch of shuffled (and augmented) training batches.

    Set `.epoch` before each epoch (train_model does): batch i of epoch e depends only on
    (seed, e, i). With process_count > 1 each process serves its rows of every global batch
    (batch_size is the global batch; it must split evenly over the processes).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 <= shift_fraction < 1:
        raise DataError(f"shift_fraction must be in [0, 1), got {shift_fraction!r}")
    if batch_size % process_count:
        raise DataError(f"batch_size {batch_size} does not split evenly over {process_count} processes")
    return _make_training_batches(data, batch_size, seed, augment and (shift_fraction > 0 or flip), shift_fraction,
                                  flip, epoch, drop_remainder, process_index, process_count)


def evaluation_batches(data: ImageArrays, batch_size: int, *, pad_to_multiple_of: int = 1) -> Any:
    """A keras.utils.PyDataset of the split in order, unchanged (validation, test).

    pad_to_multiple_of: data-parallel evaluation needs every batch to split evenly over the
    devices; a short last batch is then padded with copies of its first image at sample
    weight 0, so accuracies count each real image once.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    return _make_evaluation_batches(data, batch_size, pad_to_multiple_of)


def _make_training_batches(data, batch_size, seed, augment, shift_fraction, flip, epoch, drop_remainder,
                           process_index, process_count):
    import keras

    class TrainingBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.batch_size, self.epoch = data, batch_size, epoch
            full, rest = divmod(len(data), batch_size)
            self.steps = full if drop_remainder or rest == 0 else full + 1
            if self.steps == 0:
                raise DataError(f"{len(data)} training images make no full batch of {batch_size}")
            self._augment, self._plain = _compiled_batch_functions(keras.backend.backend(), data.num_classes)
            self._draws_epoch, self._draws = None, None

        def __len__(self) -> int:
            return self.steps

        def _epoch_draws(self) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
            if self._draws_epoch != self.epoch:
                order, uniform = epoch_draws(len(self.data), seed, self.epoch)
                moves = shifts_and_flips(uniform, self.data.image_shape, shift_fraction, flip) if augment else None
                self._draws_epoch, self._draws = self.epoch, (order, moves)
            return self._draws

        def __getitem__(self, index: int):
            if not 0 <= index < self.steps:
                raise IndexError(f"batch {index} of {self.steps}")
            order, moves = self._epoch_draws()
            rows = slice(index * self.batch_size, min((index + 1) * self.batch_size, len(order)))
            if process_count > 1:  # this process's rows of the global batch
                share = (rows.stop - rows.start) // process_count
                rows = slice(rows.start + process_index * share, rows.start + (process_index + 1) * share)
            picked = order[rows]
            images, labels = self.data.images[picked], self.data.labels[picked]
            if moves is None:
                return self._plain(images, labels)
            dy, dx, flips = (move[rows] for move in moves)
            return self._augment(images, labels, dy, dx, flips)

    return TrainingBatches()


def _make_evaluation_batches(data, batch_size, pad_to_multiple_of):
    import keras

    class EvaluationBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.batch_size = data, batch_size
            self._augment, self._plain = _compiled_batch_functions(keras.backend.backend(), data.num_classes)

        def __len__(self) -> int:
            return -(-len(self.data) // self.batch_size)

        def __getitem__(self, index: int):
            if not 0 <= index < len(self):
                raise IndexError(f"batch {index} of {len(self)}")
            images = self.data.images[index * self.batch_size:(index + 1) * self.batch_size]
            labels = self.data.labels[index * self.batch_size:(index + 1) * self.batch_size]
            short = -len(images) % pad_to_multiple_of
            if pad_to_multiple_of == 1:
                return self._plain(images, labels)
            weights = np.concatenate([np.ones(len(images), np.float32), np.zeros(short, np.float32)])
            images = np.concatenate([images, np.repeat(images[:1], short, axis=0)])
            labels = np.concatenate([labels, np.repeat(labels[:1], short)])
            return (*self._plain(images, labels), weights)

    return EvaluationBatches()


def iterate_batches(batches: Any) -> Iterator[tuple[Any, ...]]:
    """Every batch of a PyDataset above, in order (for evaluation outside fit)."""
    for index in range(len(batches)):
        yield batches[index]
