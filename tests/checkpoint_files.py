"""Reading a training checkpoint's arrays in tests, whichever file holds them."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np


def checkpoint_arrays(out_dir: Path) -> dict[str, np.ndarray]:
    """Every array of the last epoch's weights (model weights and optimizer state), from the
    file checkpoint/state.json names: epoch-NNNN.weights.h5, or the best model's .keras file
    when that epoch was the best (it holds the same arrays)."""
    checkpoint = out_dir / "checkpoint"
    weights_file = checkpoint / json.loads((checkpoint / "state.json").read_text())["weights_file"]
    arrays: dict[str, np.ndarray] = {}

    def keep(name, item):
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    if weights_file.suffix == ".keras":
        with zipfile.ZipFile(weights_file) as archive:
            source = io.BytesIO(archive.read("model.weights.h5"))
    else:
        source = weights_file
    with h5py.File(source, "r") as file:
        file.visititems(keep)
    return arrays
