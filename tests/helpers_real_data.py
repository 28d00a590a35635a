"""Read small, class-balanced samples of the real CIFAR-10 JPEGs straight from the shared tar.gz."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_cifar10_sample(archive: Path, split: str, per_class: int,
                        start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start + per_class - 1`` of each class of a split, in file-name order.

    Returns (images float32 (N, 32, 32, 3) in [0, 1], labels int64 (N,)) with the official
    class ids, ordered by file name within each class, classes interleaved.
    """
    wanted = {f"{split}/{name}/{index:04d}.jpg": label
              for label, name in enumerate(CIFAR10_CLASSES) for index in range(start, start + per_class)}
    found: dict[str, np.ndarray] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted:
                data = tar.extractfile(member).read()
                found[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255.0
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise FileNotFoundError(f"{len(missing)} images missing from {archive}, e.g. {missing[:3]}")
    # Interleave classes so any prefix of the sample stays roughly balanced.
    names = sorted(wanted, key=lambda name: (int(name[-8:-4]), wanted[name]))
    return np.stack([found[name] for name in names]), np.array([wanted[name] for name in names])
